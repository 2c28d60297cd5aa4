"""Watch many documents on one stream (`GET /v1/events`): each followed document's client events,
as `services.handlers.watch` makes them (progress, page, card, chunk_failed, waiting, done), with
the document's id in every event's data, resumed for all of them by one Last-Event-ID.

What is followed: the documents named, ending once each has sent its `done`; or, with none named,
every document of the caller's tenant, each new one too from its upload or first event on (that
stream does not end by itself). A named document that is missing or another tenant's refuses the
whole request with the 404 of a missing one: skipping it would hide a typo, and answering
differently for another tenant's would tell that it exists.

The id is one mark per partition. A document's events share one partition of jobs.progress, and
the API applies each partition's records in offset order. The stream sends each partition's
events in (offset, k) order across all its documents (first the kept ones, merged by position,
then live ones in the order they are applied), so what a client has of a partition is exactly
"every followed event up to (offset, k)". An event's id is the marks after it:

    <scope>.<partition>-<offset>-<k>.<partition>-<offset>-<k>…      e.g. 5d41402a.0-812-3.2-97-0

with a mark for each partition the stream has sent something of (none: all of it is to come).
Its size is bounded by the partition count (4 by default, ~20 bytes a mark), whatever the number
of documents, and it needs no state on the server: it holds across an API restart and between
API processes behind one address (offsets are Kafka's). Rejected: a position per document (grows
with a tenant's documents), a cursor kept by the server (lost on restart, not shared).

The scope is 8 hex digits of a hash of what is followed ("*", or the sorted ids). Marks say
nothing of documents the stream did not follow, so another stream's id would skip their events:
it is refused (400) instead. Like the one-document stream, a done document whose events are no
longer kept is told again from its blobs at the position of its `done`.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.documents.views import DocumentViews, Position, Subscription
from services.errors import Refused
from services.events.models import DocumentProgress
from services.handlers.documents import find
from services.handlers.watch import client_events, told_again
from services.storage.blobs import BlobStore

MAX_DOCUMENTS = 100  # named on one stream; more: follow them all (no `documents`)
MAX_ID_CHARS = 4096
SCOPE = re.compile(r"[0-9a-f]{8}")
MARK = re.compile(r"(\d+)-(\d+)-(\d+)")
# (position, k, document, name, data): one client event, ordered by (partition, offset, k)
Item = tuple[Position, int, str, str, dict[str, Any]]


def scope_of(document_ids: Sequence[str] | None) -> str:
    """What a stream follows, as its ids' first part: all of the tenant's, or these (any order)."""
    key = "*" if document_ids is None else ",".join(sorted(document_ids))
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(slots=True)
class Cursor:
    """Where a stream is: per partition, the (offset, k) of the last event it sent."""

    scope: str
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)

    def sent(self, pos: Position, k: int) -> bool:
        return (pos.offset, k) <= self.marks.get(pos.partition, (-1, -1))

    def advance(self, pos: Position, k: int) -> None:
        self.marks[pos.partition] = (pos.offset, k)

    def __str__(self) -> str:
        return ".".join([self.scope, *(f"{p}-{o}-{k}" for p, (o, k) in sorted(self.marks.items()))])


def parse_cursor(last_event_id: str | None, scope: str) -> Cursor:
    """The cursor of a Last-Event-ID (none: from the start); 400 for one that is not an id of
    this stream (malformed, or of a stream following other documents)."""
    if not last_event_id:
        return Cursor(scope)
    head, *marks = last_event_id.split(".")
    parsed: dict[int, tuple[int, int]] = {}
    for mark in marks:
        found = MARK.fullmatch(mark)
        if found is None or int(found[1]) in parsed:
            break
        parsed[int(found[1])] = (int(found[2]), int(found[3]))
    else:
        if len(last_event_id) <= MAX_ID_CHARS and SCOPE.fullmatch(head):
            if head != scope:
                raise Refused(
                    "this Last-Event-ID is of a stream that follows other documents: "
                    "open this one without it, or with the same `documents`",
                    "bad-last-event-id",
                )
            return Cursor(scope, parsed)
    shown = last_event_id if len(last_event_id) <= 80 else last_event_id[:80] + "…"
    raise Refused(
        f"Last-Event-ID {shown!r} is not an id of this stream (scope.partition-offset-k…)",
        "bad-last-event-id",
    )


def followed(views: DocumentViews, tenant_id: str, documents: str | None) -> list[str] | None:
    """The documents a stream follows, from ``?documents=a,b,c`` (None: every one of the
    tenant's); 404 as for a missing one if any is not the tenant's, 400 for an empty or too long
    list. Repeated ids count once."""
    if documents is None:
        return None
    ids = list(dict.fromkeys(d.strip() for d in documents.split(",") if d.strip()))
    if not ids:
        raise Refused(
            "`documents` names no document: list ids separated by commas, "
            "or leave it out to follow all yours",
            "no-documents",
        )
    if len(ids) > MAX_DOCUMENTS:
        raise Refused(
            f"`documents` names {len(ids)} documents, at most {MAX_DOCUMENTS}: "
            "leave it out to follow all yours",
            "too-many-documents",
        )
    for document_id in ids:
        find(views, tenant_id, document_id)
    return ids


def all_sent(views: DocumentViews, document_ids: Sequence[str], cursor: Cursor) -> bool:
    """Whether the client has every named document's `done` already (so the stream would end at
    once). Said only when sure: a done document told again from its blobs may have more."""
    for document_id in document_ids:
        view = views.docs[document_id]
        if view.done is None or view.done_at is None:
            return False
        at, last_k = view.done_at, len(client_events(view.done_at, view.done)) - 1
        offset, k = cursor.marks.get(at.partition, (-1, -1))
        if offset < at.offset or (offset == at.offset and (view.history_dropped or k < last_k)):
            return False
    return True


def history(document_id: str, events: Iterable[tuple[Position, DocumentProgress]]) -> Iterator[Item]:
    """A document's kept events as client events, in order."""
    for pos, ev in events:
        for k, name, data in client_events(pos, ev):
            yield pos, k, document_id, name, data


def merged(histories: Iterable[Iterable[Item]]) -> Iterator[Item]:
    """Documents' histories (each in order) as one, each partition's events in (offset, k) order:
    the order the marks need. Partitions follow one another (their offsets do not compare)."""
    return heapq.merge(*histories, key=lambda item: (item[0].partition, item[0].offset, item[1]))


async def watch_many(
    views: DocumentViews,
    blobs: BlobStore,
    tenant_id: str,
    document_ids: Sequence[str] | None,
    cursor: Cursor,
    queue: Subscription | None = None,
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(id, name, data) for each client event of the followed documents after ``cursor``; ends
    once every named document is done (never when following a tenant), or when the reader lags
    or the server stops (the client then resumes from its last id). ``queue``: a subscription
    from `DocumentViews.subscribe_many` already made (the API makes it within its caps before it
    answers); it is let go of here. Events both in it and kept are told once."""
    if queue is None:
        queue = views.subscribe_many(tenant_id, document_ids)  # before the kept events are read
    pending = None if document_ids is None else set(document_ids)

    def tell(item: Item) -> tuple[str, str, dict[str, Any]] | None:
        pos, k, document_id, name, data = item
        if name == "done" and pending is not None:
            pending.discard(document_id)
        if cursor.sent(pos, k):
            return None
        cursor.advance(pos, k)
        return str(cursor), name, {"document_id": document_id, **data}

    try:
        # Read in one step (no await): with the queue, which has everything applied since it was
        # made, each event is then here or there (or both: told once), never in neither.
        ids = (
            [d for d, v in views.docs.items() if v.snapshot.tenant_id == tenant_id]
            if document_ids is None
            else document_ids
        )
        histories: list[Iterable[Item]] = []
        dropped = []
        for document_id in ids:
            view = views.docs[document_id]
            if view.history_dropped and view.done is not None and view.done_at is not None:
                dropped.append((document_id, view, view.done, view.done_at))
            else:
                histories.append(history(document_id, list(view.events)))
        for document_id, view, done, at in dropped:
            if cursor.marks.get(at.partition, (-1, -1))[0] > at.offset:  # sent whole: not read again
                if pending is not None:
                    pending.discard(document_id)
                continue
            told = await told_again(blobs, view, done)
            histories.append([(at, k, document_id, name, data) for k, name, data in told])
        for item in merged(histories):
            if (event := tell(item)) is not None:
                yield event
            if pending is not None and not pending:
                return
        while pending is None or pending:
            got = await queue.get()
            if got is None:
                return
            pos, ev = got
            for k, name, data in client_events(pos, ev):
                if (event := tell((pos, k, ev.document_id, name, data))) is not None:
                    yield event
    finally:
        views.unsubscribe_many(tenant_id, queue)
