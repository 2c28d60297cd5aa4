"""Study with FSRS: your due counts per deck, the next cards of a deck, a card's review
(services.handlers.study). Each person (a user, or an API key) has a schedule of their own;
times are milliseconds since the epoch, UTC."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CallerDep, DocumentDep, PartsDep
from services.handlers import study

router = APIRouter(tags=["study"])


class Review(BaseModel):
    rating: int = Field(ge=1, le=4, description="how well you recalled it: 1 again, 2 hard, 3 good, 4 easy")


@router.get("/v1/study")
async def due_counts(parts: PartsDep, caller: CallerDep) -> dict[str, Any]:
    """Your decks with `new` (never studied), `learning` (in learning steps, minutes apart),
    `review_due` (learnt, due now), `due_now` and `next_due_at`, and the same in `total`."""
    return await study.due_counts(parts.blobs, parts.reviews, parts.views, caller.tenant_id, caller.subject)


@router.get("/v1/decks/{document_id}/study", responses={404: {}})
async def study_queue(
    view: DocumentDep,
    parts: PartsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200, description="how many cards")] = 20,
) -> dict[str, Any]:
    """The deck's counts for you and `next`: the cards to study now, due ones first (the longest
    overdue first), then new ones in deck order; each with its `study` state."""
    return await study.study_queue(parts.blobs, parts.reviews, parts.views, view, caller.subject, limit)


@router.post("/v1/decks/{document_id}/cards/{card_id}/reviews", status_code=201, responses={404: {}, 422: {}})
async def review_card(
    card_id: str, body: Review, view: DocumentDep, parts: PartsDep, caller: CallerDep
) -> dict[str, Any]:
    """Record a review of a card of the deck served; its state after it, `due_at` the next time."""
    return await study.review_card(
        parts.blobs, parts.publisher, parts.reviews, parts.views, view, caller.subject, card_id, body.rating
    )
