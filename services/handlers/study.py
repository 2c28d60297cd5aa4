"""Study a deck with FSRS: review a card, the next cards to study, the due counts of every deck.

A person studies the deck served (the current generation, as edited): deleted cards are not
studied, edited cards keep their reviews (same id), and reviews made on an older generation's
cards count for the cards they carry over to (services/cards/edits.py, `match_cards`). A review
is published to cards.reviews (acknowledged by the broker) before it counts here; the feed reads
it back later and leaves it out as seen. Rules: services/cards/study.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from services.cards.edits import Overlaid
from services.cards.study import (
    RATINGS,
    ReviewStore,
    StudyState,
    counts,
    next_cards,
    schedule,
    states,
    unstudied,
)
from services.documents.views import DocumentView, DocumentViews
from services.domain import Card
from services.errors import InputRejected
from services.events import topics
from services.events.models import CardEdit, CardReviewed, now_ms
from services.events.publisher import EventPublisher
from services.handlers.documents import list_documents
from services.handlers.edits import card_in, edited_deck
from services.handlers.export import card_json
from services.storage.blobs import BlobStore


def by_card(deck: Overlaid, reviews: Sequence[CardReviewed]) -> dict[str, list[CardReviewed]]:
    """Reviews by the served card they count for (file I/O for older generations: in a thread);
    a review of a card with no match in this generation counts for none."""
    out: dict[str, list[CardReviewed]] = defaultdict(list)
    for review in reviews:
        target, _ = deck.carry.resolve(review.generation, review.card_id)
        if target is not None:
            out[target].append(review)
    return out


def _studied(
    blobs: BlobStore,
    view: DocumentView,
    generation: int,
    edits: Sequence[CardEdit],
    reviews: Sequence[CardReviewed],
) -> tuple[list[Card], dict[str, StudyState]]:
    """The served deck's cards and each one's state for the person (file I/O: in a thread)."""
    deck = edited_deck(blobs, view, generation, edits)
    return deck.cards, states(deck.cards, by_card(deck, reviews))


async def _study_view(
    blobs: BlobStore, reviews: ReviewStore, views: DocumentViews, view: DocumentView, by: str
) -> tuple[int, list[Card], dict[str, StudyState]]:
    s = view.snapshot
    generation = views.current(view)
    # Read on the event loop, where the feed adds to them.
    edits, mine = view.edits.up_to(generation), reviews.of(s.tenant_id, by, s.document_id)
    cards, of = await asyncio.to_thread(_studied, blobs, view, generation, edits, mine)
    return generation, cards, of


def state_json(state: StudyState) -> dict[str, Any]:
    return {
        "state": state.state,
        "due_at": state.due_at,
        "last_review_at": state.last_review_at,
        "reviews": state.reviews,
        "stability": state.stability,
        "difficulty": state.difficulty,
    }


async def review_card(
    blobs: BlobStore,
    publisher: EventPublisher,
    reviews: ReviewStore,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    card_id: str,
    rating: int,
) -> dict[str, Any]:
    """Record how well the person recalled a card of the served deck (1 again … 4 easy); the
    card's state after it, with when it is due next."""
    if rating not in RATINGS:
        raise InputRejected("a rating is 1 (again), 2 (hard), 3 (good) or 4 (easy)", "invalid-rating")
    s = view.snapshot
    generation = views.current(view)
    edits = view.edits.up_to(generation)
    deck = await asyncio.to_thread(edited_deck, blobs, view, generation, edits)
    card_in(deck, card_id, view)
    event = CardReviewed(
        tenant_id=s.tenant_id,
        document_id=s.document_id,
        generation=generation,
        card_id=card_id,
        rating=rating,
        reviewed_by=by,
    )
    await publisher.publish(topics.REVIEWS.name, event)
    reviews.apply(event)
    mine = reviews.of(s.tenant_id, by, s.document_id)
    counted = await asyncio.to_thread(by_card, deck, mine)
    state = schedule(counted.get(card_id, ()))
    return {"card_id": card_id, "rating": rating, "reviewed_at": event.occurred_at} | state_json(state)


async def study_queue(
    blobs: BlobStore,
    reviews: ReviewStore,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    limit: int,
    now: int | None = None,
) -> dict[str, Any]:
    """The next `limit` cards for the person to study (due first, then new) and the deck's counts."""
    now = now if now is not None else now_ms()
    generation, cards, of = await _study_view(blobs, reviews, views, view, by)
    return {
        "document_id": view.snapshot.document_id,
        "generation": generation,
        "now": now,
        **counts(cards, of, now),
        "next": [
            card_json(card) | {"study": state_json(state)}
            for card, state in next_cards(cards, of, now, limit)
        ],
    }


async def due_counts(
    blobs: BlobStore,
    reviews: ReviewStore,
    views: DocumentViews,
    tenant_id: str,
    by: str,
    now: int | None = None,
) -> dict[str, Any]:
    """The person's counts for every deck of their tenant, newest document first, and in all."""
    now = now if now is not None else now_ms()
    decks: list[dict[str, Any]] = []
    for view in list_documents(views, tenant_id):
        s = view.snapshot
        generation = views.current(view)
        announced = view.decks.get(generation)
        if (
            announced is not None
            and not view.edits.up_to(generation)
            and not reviews.of(s.tenant_id, by, s.document_id)
        ):
            found = unstudied(announced.cards)  # as assembled, never studied: nothing to load
        else:
            generation, cards, of = await _study_view(blobs, reviews, views, view, by)
            found = counts(cards, of, now)
        decks.append(
            {
                "document_id": s.document_id,
                "filename": s.filename,
                "status": s.status,
                "generation": generation,
            }
            | found
        )
    summed = ("cards", "new", "learning", "review_due", "due_now")
    total: dict[str, Any] = {k: sum(d[k] for d in decks) for k in summed}
    due_at = [d["next_due_at"] for d in decks if d["next_due_at"] is not None]
    total["next_due_at"] = min(due_at, default=None)
    return {"now": now, "decks": decks, "total": total}
