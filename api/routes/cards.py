"""Edit a deck's cards: change, delete, add, accept or dismiss a mark to check, and list where
each edit went after a reprocessing (services.handlers.edits).

Every route takes `?generation=N` (default: the generation served) and answers 404
``no-such-card`` for a card that is not in that deck as edited (never was, or deleted), 422
``invalid-card`` for a card nobody could study.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import CallerDep, DocumentDep, PartsDep
from services.handlers import edits
from services.handlers.export import card_json

router = APIRouter(prefix="/v1/decks", tags=["cards"])
Generation = Annotated[
    int | None, Query(ge=1, description="the deck of this generation (default: the one served)")
]


class CardChange(BaseModel):
    """The fields to change; those left out stay as they are (at least one)."""

    front: str | None = None
    back: str | None = None
    type: Literal["basic", "cloze"] | None = None
    tags: list[str] | None = Field(None, description="the card's tags from now on (one word each)")


class NewCard(BaseModel):
    """A card of your own. Say where it comes from: `after` (the card it goes next to, whose
    source it cites) or `page` (1-based, in the file; `section` defaults to the page's)."""

    type: Literal["basic", "cloze"] = "basic"
    front: str
    back: str = ""
    tags: list[str] = []
    after: str | None = Field(None, description="the id of the card it is added next to")
    page: int | None = Field(None, description="the page it cites, 1-based")
    section: list[str] | None = Field(None, description="heading path, outermost first")


class Verdict(BaseModel):
    verdict: Literal["accept", "dismiss"] = Field(
        description="accept: the card stays, without the mark; dismiss: it leaves the deck"
    )


@router.patch("/{document_id}/cards/{card_id}", responses={404: {}, 422: {}})
async def edit_card(
    card_id: str,
    body: CardChange,
    view: DocumentDep,
    parts: PartsDep,
    caller: CallerDep,
    generation: Generation = None,
) -> dict[str, Any]:
    """Change a card's front, back, type or tags; the card as it reads now."""
    card = await edits.edit_card(
        parts.blobs,
        parts.publisher,
        parts.views,
        view,
        caller.subject,
        card_id,
        generation=generation,
        front=body.front,
        back=body.back,
        kind=body.type,
        tags=body.tags,
    )
    return card_json(card)


@router.delete("/{document_id}/cards/{card_id}", status_code=204, responses={404: {}})
async def delete_card(
    card_id: str,
    view: DocumentDep,
    parts: PartsDep,
    caller: CallerDep,
    generation: Generation = None,
) -> Response:
    """Take a card out of the deck: exports leave it out, study skips it."""
    await edits.delete_card(
        parts.blobs, parts.publisher, parts.views, view, caller.subject, card_id, generation=generation
    )
    return Response(status_code=204)


@router.post("/{document_id}/cards", status_code=201, responses={404: {}, 422: {}})
async def add_card(
    body: NewCard,
    view: DocumentDep,
    parts: PartsDep,
    caller: CallerDep,
    generation: Generation = None,
) -> dict[str, Any]:
    """Add a card of your own; it gets an id of its own and keeps it in every generation."""
    card = await edits.add_card(
        parts.blobs,
        parts.publisher,
        parts.views,
        view,
        caller.subject,
        kind=body.type,
        front=body.front,
        back=body.back,
        tags=body.tags,
        after=body.after,
        page=body.page,
        section=body.section,
        generation=generation,
    )
    return card_json(card)


@router.post("/{document_id}/cards/{card_id}/check", responses={404: {}, 409: {}, 422: {}})
async def check_card(
    card_id: str,
    body: Verdict,
    view: DocumentDep,
    parts: PartsDep,
    caller: CallerDep,
    generation: Generation = None,
) -> dict[str, Any]:
    """Settle a card marked to check (`needs_review`): 409 ``not-marked`` for one that is not."""
    card = await edits.check_mark(
        parts.blobs,
        parts.publisher,
        parts.views,
        view,
        caller.subject,
        card_id,
        body.verdict,
        generation=generation,
    )
    return {
        "card_id": card_id,
        "verdict": body.verdict,
        "in_deck": card is not None,
        "card": card_json(card) if card is not None else None,
    }


@router.get("/{document_id}/edits", responses={404: {}})
async def list_edits(view: DocumentDep, parts: PartsDep, generation: Generation = None) -> dict[str, Any]:
    """The edits that apply to a generation's deck, oldest first: `placed` (`applied_to`: the
    card of this generation) and `unplaced` (`reason`: an edit made on an older generation whose
    card has no match here)."""
    return await edits.list_edits(parts.blobs, parts.views, view, generation)
