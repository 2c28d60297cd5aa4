"""Fold document facts: every fact about a document ──► jobs.progress (what clients see), decks,
and retried chunks. Also: send again what a stalled document is missing, and tell clients when
the LLM is unavailable.

The state machine itself is pure (services.documents.state); this handler keeps the states in a
port (the tracker's changelogged table in the worker) and assembles a finished document's deck.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from services.documents.state import DocumentState, coalesce_cards, llm_notices, stalled, track
from services.events import topics
from services.events.models import Event
from services.handlers import Send
from services.handlers.assemble import assemble_deck
from services.llm.breaker import CircuitBreaker
from services.storage.blobs import BlobStore

log = structlog.get_logger(__name__)


class DocumentStates(Protocol):
    """Where the tracker keeps each document's state."""

    def get(self, document_id: str) -> DocumentState | None: ...

    def put(self, state: DocumentState) -> None:
        """The state from now on (read back by `get`); stored for good by `save`."""

    def save(self, states: Sequence[DocumentState]) -> None: ...

    def cached(self) -> list[DocumentState]:
        """The states read since the last rebalance."""
        ...

    def every(self) -> list[DocumentState]:
        """Every state this worker holds (read in full once after a rebalance)."""
        ...


@dataclass(slots=True)
class Folded:
    sends: list[Send] = field(default_factory=list)  # in order: retries and decks, then progress
    changed: list[DocumentState] = field(default_factory=list)  # to save once they are sent


class DocumentTracker:
    def __init__(self, *, blobs: BlobStore, breaker: CircuitBreaker, reconcile_after_s: float) -> None:
        self.blobs, self.breaker = blobs, breaker
        self.after_ms = int(reconcile_after_s * 1000)
        self.told_to_wait: set[str] = set()  # documents whose clients were told they wait for the LLM
        self.resent: dict[str, int] = {}  # document id -> when its missing chunks were last sent again (ms)

    def forget(self) -> None:
        """Partitions moved: the documents told to wait may be another worker's now."""
        self.told_to_wait.clear()

    async def fold(self, batch: Sequence[object], states: DocumentStates) -> Folded:
        """A batch of facts: each document's state once per batch, its cards in one progress
        event per batch."""
        folded = Folded()
        changed: dict[str, DocumentState] = {}
        progress = []
        for event in batch:
            if not isinstance(event, Event):
                continue
            state = states.get(event.document_id)
            out = track(state, event)
            if out.state is not None and out.state is not state:
                states.put(out.state)
                changed[event.document_id] = out.state
            folded.sends += [Send(topics.CHUNKS_INTERACTIVE, retry) for retry in out.retries]
            if out.deck is not None and out.state is not None:
                deck = await assemble_deck(self.blobs, out.state, out.deck)
                folded.sends.append(Send(topics.DECKS, deck))
            progress += out.progress
        folded.sends += [Send(topics.PROGRESS, p) for p in coalesce_cards(progress)]
        folded.changed = list(changed.values())
        return folded

    def reconcile(self, states: DocumentStates, now_ms: int) -> list[Send]:
        """Send again what a stalled document is missing (see services.documents.state.stalled)."""
        if self.breaker.state != "closed":
            return []  # the LLM is down: documents wait for it, by design
        out = []
        for state in states.every():
            again = stalled(state, now_ms, self.after_ms)
            if again is None or now_ms - self.resent.get(state.document_id, 0) < self.after_ms:
                continue
            self.resent[state.document_id] = now_ms
            log.warning(
                "document stalled: sending it again",
                document_id=state.document_id,
                status=state.status,
                chunks=again.replay_chunks or "all",
            )
            out.append(Send(topics.UPLOADED, again))
        return out

    def may_notify(self) -> bool:
        """Whether clients may have something to hear about the LLM."""
        return self.breaker.unavailable is not None or bool(self.told_to_wait)

    def llm_notices(self, states: DocumentStates) -> list[Send]:
        """While the breaker is open a document makes no progress: its clients hear why (SSE
        `waiting`, `waiting` in its status), and hear again once the LLM is back."""
        if not self.may_notify():
            return []
        notices = llm_notices(states.cached(), self.told_to_wait, self.breaker.unavailable)
        return [Send(topics.PROGRESS, notice) for notice in notices]
