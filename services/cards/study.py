"""Study with FSRS: each person's schedule of each card, rebuilt from their reviews.

Reviews are events on cards.reviews (kept forever). A card's state for a person is never stored:
it is their reviews of it replayed through one FSRS scheduler, oldest first (`schedule`). The
scheduler has no fuzzing and every time is UTC, so a replay gives the due dates the live
reviews gave, on any API process and after any restart.

Who studies is `Caller.subject` (user:<id> or key:<id>): each person has their own schedule of
a deck they share with their tenant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from fsrs import Card as FsrsCard
from fsrs import Rating, Scheduler, State

from services.domain import Card
from services.events.models import CardReviewed

SCHEDULER = Scheduler(enable_fuzzing=False)  # fuzzing draws random intervals: no replay could match
RATINGS = {1: "again", 2: "hard", 3: "good", 4: "easy"}
StateName = Literal["new", "learning", "review", "relearning"]
_STATES: dict[State, StateName] = {
    State.Learning: "learning",
    State.Review: "review",
    State.Relearning: "relearning",
}


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _order(review: CardReviewed) -> tuple[int, str]:
    return review.occurred_at, review.event_id


@dataclass(frozen=True, slots=True)
class StudyState:
    """Where a card stands for one person."""

    state: StateName
    due_at: int | None  # ms since the epoch; None: new, due whenever they start it
    last_review_at: int | None = None
    reviews: int = 0
    stability: float | None = None
    difficulty: float | None = None

    def due(self, now_ms: int) -> bool:
        return self.due_at is not None and self.due_at <= now_ms


NEW = StudyState("new", None)


def schedule(reviews: Iterable[CardReviewed]) -> StudyState:
    """A card's state after its reviews, replayed oldest first (then by event id, for reviews of
    the same millisecond): the same whatever order they arrived in."""
    ordered = sorted(reviews, key=_order)
    if not ordered:
        return NEW
    card = FsrsCard(card_id=0, due=at(ordered[0].occurred_at))  # an id and due of our own: no clock
    for review in ordered:
        card, _ = SCHEDULER.review_card(card, Rating(review.rating), review_datetime=at(review.occurred_at))
    return StudyState(
        state=_STATES[card.state],
        due_at=ms(card.due),
        last_review_at=ms(card.last_review) if card.last_review else None,
        reviews=len(ordered),
        stability=card.stability,
        difficulty=card.difficulty,
    )


class ReviewStore:
    """Every person's reviews, by tenant, person and document, rebuilt from cards.reviews.
    Applying a review twice changes nothing (delivery is at-least-once)."""

    def __init__(self) -> None:
        self._reviews: dict[tuple[str, str, str], list[CardReviewed]] = defaultdict(list)
        self._seen: set[str] = set()

    def apply(self, event: CardReviewed) -> bool:
        """Keep a review; False for one seen before (a redelivery, or the API's own read back)."""
        if event.event_id in self._seen:
            return False
        self._seen.add(event.event_id)
        self._reviews[event.tenant_id, event.reviewed_by, event.document_id].append(event)
        return True

    def of(self, tenant_id: str, subject: str, document_id: str) -> list[CardReviewed]:
        """One person's reviews of one document's cards, of every generation."""
        return list(self._reviews.get((tenant_id, subject, document_id), ()))


def states(cards: Sequence[Card], reviews: Mapping[str, Sequence[CardReviewed]]) -> dict[str, StudyState]:
    """Each card's state, from its reviews by card id (a card without any is new)."""
    return {c.card_id: schedule(reviews.get(c.card_id, ())) for c in cards}


def counts(cards: Sequence[Card], of: Mapping[str, StudyState], now_ms: int) -> dict[str, int | None]:
    """A deck's cards for one person: `new` (never studied), `learning` (in learning or
    relearning steps, minutes apart), `review_due` (learnt, due now), `due_now` (learning and
    learnt cards due now), and when the next studied card falls due (ms; None: none studied)."""
    found = [of.get(c.card_id, NEW) for c in cards]
    studied = [s for s in found if s.state != "new"]
    return {
        "cards": len(found),
        "new": len(found) - len(studied),
        "learning": sum(s.state in ("learning", "relearning") for s in studied),
        "review_due": sum(s.state == "review" and s.due(now_ms) for s in studied),
        "due_now": sum(s.due(now_ms) for s in studied),
        "next_due_at": min((s.due_at for s in studied if s.due_at is not None), default=None),
    }


def unstudied(cards: int) -> dict[str, int | None]:
    """`counts` of a deck of `cards` cards the person never studied (no deck to load for it)."""
    return {"cards": cards, "new": cards, "learning": 0, "review_due": 0, "due_now": 0, "next_due_at": None}


def next_cards(
    cards: Sequence[Card], of: Mapping[str, StudyState], now_ms: int, limit: int
) -> list[tuple[Card, StudyState]]:
    """What to study next: the cards due now, the longest overdue first, then new cards in deck
    order. Cards studied and not yet due wait."""
    found = [(c, of.get(c.card_id, NEW)) for c in cards]
    due = sorted((p for p in found if p[1].due(now_ms)), key=lambda p: p[1].due_at or 0)
    fresh = [p for p in found if p[1].state == "new"]
    return (due + fresh)[:limit]
