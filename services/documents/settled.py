"""Which documents need no more work: cancelled ones, and finished ones (deck assembled)."""

from __future__ import annotations

from services.events.models import CancelDocument, DeckAssembled, Event


class SettledDocuments:
    def __init__(self) -> None:
        self.cancelled: set[tuple[str, int]] = set()
        self.finished: set[tuple[str, int]] = set()  # documents whose deck is assembled

    def apply(self, event: Event) -> None:
        """Take in a control command or a deck (what the worker's control watcher reads)."""
        if isinstance(event, CancelDocument):
            self.cancelled.add((event.document_id, event.generation))
        elif isinstance(event, DeckAssembled):
            self.finished.add((event.document_id, event.generation))

    def is_cancelled(self, document_id: str, generation: int) -> bool:
        return (document_id, generation) in self.cancelled

    def is_settled(self, document_id: str, generation: int, attempt: int) -> bool:
        """No work needed: the document is cancelled, or finished and this is no retry.

        A first-attempt chunk of a finished document is a redelivery (a worker stopped before
        committing its offsets): every chunk of that round was already accounted for.
        """
        key = (document_id, generation)
        return key in self.cancelled or (attempt == 0 and key in self.finished)
