"""The API's read model of documents: the latest snapshot, a bounded log of client events and
the deck of each, and the SSE subscribers waiting for more.

Fed by `services.events.progress_feed` from jobs.progress and decks. A document's events share
one partition, so "partition-offset-k" is a total order for that document and a valid SSE
Last-Event-ID.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from services.events.models import DeckAssembled, DocumentProgress, Event

LOG_LIMIT = 20_000  # client events kept per document for replay
QUEUE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Position:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}-{self.offset}"


Subscription = asyncio.Queue[tuple[Position, DocumentProgress] | None]


@dataclass(slots=True)
class DocumentView:
    snapshot: DocumentProgress
    events: deque[tuple[Position, DocumentProgress]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    deck: DeckAssembled | None = None
    card_ids: set[str] = field(default_factory=set)  # cards already streamed
    subscribers: set[Subscription] = field(default_factory=set)


class DocumentViews:
    def __init__(self) -> None:
        self.docs: dict[str, DocumentView] = {}

    def apply(self, pos: Position, event: Event) -> None:
        if isinstance(event, DeckAssembled):
            view = self.docs.get(event.document_id)
            if view is not None and event.generation >= view.snapshot.generation:
                view.deck = event
            return
        if not isinstance(event, DocumentProgress):
            return
        view = self.docs.get(event.document_id)
        if view is None:
            view = self.docs[event.document_id] = DocumentView(snapshot=event)
        elif event.generation < view.snapshot.generation:
            return
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
        for q in list(view.subscribers):
            if q.full():  # a reader that cannot keep up is closed; it resumes with Last-Event-ID
                view.subscribers.discard(q)
                q.get_nowait()
                q.put_nowait(None)
                continue
            q.put_nowait((pos, event))

    def register_upload(self, snapshot: DocumentProgress) -> None:
        """Show a just-accepted upload before the pipeline reports on it."""
        self.docs.setdefault(snapshot.document_id, DocumentView(snapshot=snapshot))

    def subscribers(self) -> int:
        return sum(len(v.subscribers) for v in self.docs.values())

    def subscribe(self, document_id: str) -> Subscription:
        q: Subscription = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.docs[document_id].subscribers.add(q)
        return q

    def unsubscribe(self, document_id: str, q: Subscription) -> None:
        view = self.docs.get(document_id)
        if view is not None:
            view.subscribers.discard(q)

    def close(self) -> None:
        """End every stream (shutdown): subscribers see None."""
        for view in self.docs.values():
            for q in view.subscribers:
                q.put_nowait(None)
