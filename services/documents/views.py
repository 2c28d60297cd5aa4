"""The API's read model of documents: the latest snapshot and the deck of each, the client
events of documents still running, and the SSE subscribers waiting for more.

Fed by `services.events.progress_feed` from jobs.progress and decks. A document's events share
one partition, so "partition-offset-k" is a total order for that document and a valid SSE
Last-Event-ID. Memory grows with the number of documents, not with their history: the events
of the `KEEP_DONE` documents done last are kept (a client that just missed the end resumes
exactly); older done documents keep only their snapshot, and their history is told again from
it, their page ledger and their deck (`services.handlers.watch`).

Generations: a view follows a document's newest generation (a reprocessing starts a new one, and
its events replace the older one's). What the API serves by default is the *current* generation:
the one last promoted (documents.generations), else the document's first. The views also keep
each document's uploads and reprocessings (documents.uploaded, kept forever), one per generation.
People's edits of a document's cards (cards.edits) are kept on its view, of every generation,
and laid over the cards whenever a deck is served (services/cards/edits.py).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.cards.edits import DocumentEdits
from services.errors import AtCapacity, RateLimited
from services.events.models import (
    CardEdit,
    DeckAssembled,
    DocumentProgress,
    DocumentUploaded,
    Event,
    GenerationPromoted,
)

LOG_LIMIT = 20_000  # client events kept per running document for replay
QUEUE_LIMIT = 1024
KEEP_DONE = 256  # done documents whose events stay in memory
STREAM_RETRY_S = 5.0  # how soon a stream refused for a cap may be asked for again


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}-{self.offset}"


Subscription = asyncio.Queue[tuple[Position, DocumentProgress] | None]


@dataclass(slots=True)
class DocumentView:
    snapshot: DocumentProgress  # of the newest generation
    events: deque[tuple[Position, DocumentProgress]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    decks: dict[int, DeckAssembled] = field(default_factory=dict)  # by generation, as announced
    card_ids: set[str] = field(default_factory=set)  # cards already streamed (while it runs)
    done: DocumentProgress | None = None  # its latest `done`
    done_at: Position | None = None
    history_dropped: bool = False  # the events up to `done` are gone: told again from blobs
    subscribers: set[Subscription] = field(default_factory=set)
    edits: DocumentEdits = field(default_factory=DocumentEdits)  # people's, of every generation

    @property
    def deck(self) -> DeckAssembled | None:
        """The assembled deck of the newest generation, once there is one."""
        return self.decks.get(self.snapshot.generation)


class DocumentViews:
    def __init__(self, keep_done: int = KEEP_DONE) -> None:
        self.docs: dict[str, DocumentView] = {}
        self.keep_done = keep_done
        self._done: OrderedDict[str, None] = OrderedDict()  # done documents, the last done last
        # Decks read before any progress of their document: the feed reads several topics, in
        # no set order across them (seen when an API rebuilt its views at start).
        self._early_decks: dict[str, dict[int, DeckAssembled]] = {}
        self.uploads: dict[str, dict[int, DocumentUploaded]] = {}  # doc -> generation -> upload
        self.promoted: dict[str, int] = {}  # doc -> the generation last promoted
        self._early_edits: dict[str, DocumentEdits] = {}  # edits read before their document
        # Streams that follow every document of a tenant: added to each new one as it appears.
        self._followers: dict[str, set[Subscription]] = {}

    def apply(self, pos: Position, event: Event) -> None:
        if isinstance(event, DocumentUploaded):
            self.note_upload(event)
            return
        if isinstance(event, CardEdit):
            self.edits_of(event.document_id).apply(event)
            return
        if isinstance(event, GenerationPromoted):
            self.promoted[event.document_id] = event.generation
            return
        if isinstance(event, DeckAssembled):
            view = self.docs.get(event.document_id)
            if view is None:
                self._early_decks.setdefault(event.document_id, {})[event.generation] = event
            else:
                view.decks[event.generation] = event
            return
        if not isinstance(event, DocumentProgress):
            return
        view = self.docs.get(event.document_id)
        if view is None:
            view = self._new_view(event)
            view.decks.update(self._early_decks.pop(event.document_id, {}))
        elif event.generation < view.snapshot.generation:
            return
        elif event.generation > view.snapshot.generation:
            self._new_generation(view)
        if event.kind == "card" and event.new_cards:
            # Cards re-sent after a worker crash are left out: the client has them already. (An
            # event can carry several chunks' cards, some new and some re-sent.)
            fresh = [c for c in event.new_cards if c.card_id not in view.card_ids]
            if not fresh:
                return
            if len(fresh) < len(event.new_cards):
                event = event.model_copy(update={"new_cards": fresh})
            view.card_ids.update(c.card_id for c in fresh)
        view.snapshot = event
        view.events.append((pos, event))
        if event.kind == "done":
            view.done, view.done_at = event, pos
            self._done[event.document_id] = None
            self._done.move_to_end(event.document_id)
            while len(self._done) > self.keep_done:
                oldest, _ = self._done.popitem(last=False)
                self._drop_history(self.docs[oldest])
        for q in list(view.subscribers):
            if q.full():  # a reader that cannot keep up is closed; it resumes with Last-Event-ID
                view.subscribers.discard(q)
                _end(q)
                continue
            q.put_nowait((pos, event))

    def _new_generation(self, view: DocumentView) -> None:
        """A reprocessing started: the older generation's events give way to the new one's (a
        client resuming from before them gets the new generation's events after its cursor)."""
        view.events.clear()
        view.card_ids.clear()
        view.done = view.done_at = None
        view.history_dropped = False
        self._done.pop(view.snapshot.document_id, None)

    def register_reprocessing(self, event: DocumentUploaded) -> None:
        """Show a just-accepted reprocessing as queued before the pipeline reports on it, so a
        client that follows the document at once gets the new generation's events."""
        self.note_upload(event)
        view = self.docs.get(event.document_id)
        if view is None or event.generation <= view.snapshot.generation:
            return
        self._new_generation(view)
        zero = {
            f: 0
            for f in ("pages_total", "pages_done", "chunks_total", "chunks_done", "chunks_failed", "cards")
        }
        view.snapshot = view.snapshot.model_copy(
            update={
                **zero,
                "event_id": event.event_id,
                "generation": event.generation,
                "occurred_at": event.occurred_at,
                "kind": "progress",
                "status": "queued",
                "progress": 0.0,
                "error": None,
                "waiting": None,
                "page": None,
                "new_cards": [],
                "failure": None,
            }
        )

    def note_upload(self, event: DocumentUploaded) -> None:
        """An upload or a reprocessing (reconciliations and hand-backs repeat one: left out)."""
        if event.is_original:
            self.uploads.setdefault(event.document_id, {})[event.generation] = event

    def current(self, view: DocumentView) -> int:
        """The generation served by default: the last promoted, else the document's first."""
        doc = view.snapshot.document_id
        if doc in self.promoted:
            return self.promoted[doc]
        return min(self.uploads.get(doc, {}), default=view.snapshot.generation)

    def generations(self, view: DocumentView) -> list[int]:
        """Every generation the log knows of, oldest first."""
        doc = view.snapshot.document_id
        return sorted({*self.uploads.get(doc, {}), view.snapshot.generation})

    @staticmethod
    def _drop_history(view: DocumentView) -> None:
        view.events.clear()
        view.card_ids.clear()
        view.history_dropped = True

    def register_upload(self, snapshot: DocumentProgress) -> None:
        """Show a just-accepted upload before the pipeline reports on it."""
        if snapshot.document_id not in self.docs:
            self._new_view(snapshot)

    def edits_of(self, document_id: str) -> DocumentEdits:
        """A document's edits (cards.edits), kept aside until its first progress is read."""
        view = self.docs.get(document_id)
        return view.edits if view is not None else self._early_edits.setdefault(document_id, DocumentEdits())

    def _new_view(self, snapshot: DocumentProgress) -> DocumentView:
        """A document seen for the first time; the streams following its tenant follow it too."""
        view = self.docs[snapshot.document_id] = DocumentView(snapshot=snapshot)
        view.edits = self._early_edits.pop(snapshot.document_id, view.edits)
        view.subscribers.update(self._followers.get(snapshot.tenant_id, ()))
        return view

    def _streams(self, tenant_id: str | None = None) -> set[Subscription]:
        """The open streams (of one tenant), each once: a stream of several documents is in the
        subscribers of each, and one that follows a whole tenant may be in none yet."""
        found: set[Subscription] = set()
        for view in self.docs.values():
            if tenant_id is None or view.snapshot.tenant_id == tenant_id:
                found |= view.subscribers
        for tenant, followers in self._followers.items():
            if tenant_id is None or tenant == tenant_id:
                found |= followers
        return found

    def subscribers(self) -> int:
        return len(self._streams())

    def subscribers_of(self, tenant_id: str) -> int:
        return len(self._streams(tenant_id))

    def subscribe(
        self, document_id: str, *, tenant_cap: int = 0, total_cap: int | None = None
    ) -> Subscription:
        """A queue of the document's events from now on. The caps are checked and the new
        subscriber counted in this one synchronous step on the event loop, so concurrent requests
        cannot slip past them: ``total_cap`` streams in all (None: no cap) else `AtCapacity`,
        ``tenant_cap`` streams of the document's tenant (0: no cap) else `RateLimited`."""
        view = self.docs[document_id]
        q = self._admit(view.snapshot.tenant_id, tenant_cap, total_cap)
        view.subscribers.add(q)
        return q

    def subscribe_many(
        self,
        tenant_id: str,
        document_ids: Sequence[str] | None,
        *,
        tenant_cap: int = 0,
        total_cap: int | None = None,
    ) -> Subscription:
        """One queue of several documents' events from now on, in the order they are applied,
        counted as one stream against the same caps as `subscribe` (in the same one step).
        ``document_ids`` None: every document of the tenant, and each new one from its first
        event or its upload on. The caller has checked that the documents are the tenant's."""
        q = self._admit(tenant_id, tenant_cap, total_cap)
        if document_ids is None:
            self._followers.setdefault(tenant_id, set()).add(q)
            for view in self.docs.values():
                if view.snapshot.tenant_id == tenant_id:
                    view.subscribers.add(q)
        else:
            for document_id in document_ids:
                self.docs[document_id].subscribers.add(q)
        return q

    def unsubscribe_many(self, tenant_id: str, q: Subscription) -> None:
        """Let go of a `subscribe_many` queue everywhere it was added."""
        followers = self._followers.get(tenant_id)
        if followers is not None:
            followers.discard(q)
            if not followers:
                del self._followers[tenant_id]
        for view in self.docs.values():
            if view.snapshot.tenant_id == tenant_id:
                view.subscribers.discard(q)

    def _admit(self, tenant_id: str, tenant_cap: int, total_cap: int | None) -> Subscription:
        """A new stream's queue, if it is within the caps (see `subscribe`)."""
        if total_cap is not None and self.subscribers() >= total_cap:
            raise AtCapacity(
                "max_subscribers",
                STREAM_RETRY_S,
                "too many open event streams; try again shortly",
                "too-many-streams",
            )
        if tenant_cap and self.subscribers_of(tenant_id) >= tenant_cap:
            raise RateLimited(
                "sse_streams",
                STREAM_RETRY_S,
                f"your tenant has {tenant_cap} event streams open, its limit: close one first",
            )
        return asyncio.Queue(maxsize=QUEUE_LIMIT)

    def unsubscribe(self, document_id: str, q: Subscription) -> None:
        view = self.docs.get(document_id)
        if view is not None:
            view.subscribers.discard(q)

    def close(self) -> None:
        """End every stream (shutdown): subscribers see None."""
        for q in self._streams():
            _end(q)


def _end(q: Subscription) -> None:
    """End a reader's stream at once. What it has not read yet is dropped with it: what it sent
    is then a prefix of its events with no hole, so its Last-Event-ID resumes exactly (dropping
    just the oldest unread event, to make room for the end, would lose that one)."""
    while not q.empty():
        q.get_nowait()
    q.put_nowait(None)
