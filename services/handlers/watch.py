"""Watch a document: its client events (progress, page, card, chunk_failed, waiting, done) after a
cursor, then live ones until `done`.

Every event has an id "partition-offset-k" (k numbers the events made from one Kafka record). On
connect the stream replays the document's events after the cursor (all of them without one),
then follows live ones; after `done` it ends. A done document whose events are no longer kept
has its history told again from its snapshot, page ledger and deck, all at the position of its
`done` record: a client that resumes from before it gets the document's pages and cards again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from services.documents.decks import card_to_json, collect_cards, load_deck
from services.documents.ledger import load_ledger
from services.documents.views import DocumentView, DocumentViews, Position, Subscription
from services.errors import Refused
from services.events.models import DocumentProgress
from services.storage.blobs import BlobStore

SNAPSHOT_FIELDS = (
    "document_id",
    "generation",
    "status",
    "filename",
    "pages_total",
    "pages_done",
    "chunks_total",
    "chunks_done",
    "chunks_failed",
    "cards",
    "progress",
    "error",
    "waiting",
)
Cursor = tuple[int, int]  # (offset, k) of the last event the client has


def parse_cursor(last_event_id: str | None) -> Cursor:
    if not last_event_id:
        return (-1, -1)
    try:
        _, offset, k = (int(x) for x in last_event_id.split("-"))
    except ValueError as exc:
        raise Refused(f"Last-Event-ID {last_event_id!r} is not one of ours", "bad-last-event-id") from exc
    return offset, k


def client_events(pos: Position, ev: DocumentProgress) -> list[tuple[int, str, dict[str, Any]]]:
    """The client events (k, name, data) one Kafka record becomes."""
    snapshot = {f: getattr(ev, f) for f in SNAPSHOT_FIELDS}
    out: list[tuple[int, str, dict[str, Any]]] = [(0, "progress", snapshot)]
    if ev.kind == "page" and ev.page is not None:
        out.append((1, "page", ev.page.model_dump()))
    elif ev.kind == "card":
        out += [(i + 1, "card", card_to_json(c)) for i, c in enumerate(ev.new_cards)]
    elif ev.kind == "chunk_failed" and ev.failure is not None:
        out.append((1, "chunk_failed", ev.failure.model_dump()))
    elif ev.kind == "waiting" and ev.waiting is not None:
        out.append((1, "waiting", {"reason": ev.waiting}))
    elif ev.kind == "done":
        out.append((1, "done", snapshot))
    return out


async def told_again(
    blobs: BlobStore, view: DocumentView, done: DocumentProgress | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    """A done document's history from its snapshot, page ledger and deck (or stored cards).
    ``done``: its `done` as seen earlier (a reprocessing may have started since); else its latest."""
    done = done or view.done
    assert done is not None
    snapshot = {f: getattr(done, f) for f in SNAPSHOT_FIELDS}
    ledger = await asyncio.to_thread(load_ledger, blobs, done.document_id, done.generation) or []
    assembled = view.decks.get(done.generation)
    if assembled is not None:
        cards = (await asyncio.to_thread(load_deck, blobs, assembled.deck_uri)).cards
    else:  # the deck is assembled just after `done`
        cards = await asyncio.to_thread(collect_cards, blobs, done.document_id, done.generation)
    told: list[tuple[str, dict[str, Any]]] = [("progress", snapshot)]
    told += [("page", page.model_dump()) for page in ledger]
    told += [("card", card_to_json(card)) for card in cards]
    told.append(("done", snapshot))
    return [(k, name, data) for k, (name, data) in enumerate(told)]


async def watch(
    views: DocumentViews,
    blobs: BlobStore,
    document_id: str,
    cursor: Cursor,
    queue: Subscription | None = None,
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(id, name, data) for each client event after `cursor`; ends after `done`, or when the
    reader lags or the server stops (the client then resumes from its last id). ``queue``: a
    subscription already made (the API makes it within its caps before it answers); it is
    ended here. Events both in it and in the replay are told once."""
    if queue is None:
        queue = views.subscribe(document_id)  # before the replay, so nothing falls in between
    last = cursor
    try:
        view = views.docs[document_id]
        backlog = list(view.events)
        if view.history_dropped and view.done is not None and view.done_at is not None:
            at = view.done_at
            for k, name, data in await told_again(blobs, view):
                if (at.offset, k) > last:
                    yield f"{at}-{k}", name, data
                if name == "done":
                    return
        while True:
            if backlog:
                pos, ev = backlog.pop(0)
            else:
                item = await queue.get()
                if item is None:
                    return
                pos, ev = item
            for k, name, data in client_events(pos, ev):
                if (pos.offset, k) <= last:
                    continue
                last = (pos.offset, k)
                yield f"{pos}-{k}", name, data
                if name == "done":
                    return
    finally:
        views.unsubscribe(document_id, queue)
