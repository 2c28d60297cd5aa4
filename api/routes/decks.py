"""The deck of a document, as JSON or CSV (the cards made so far while it is running)."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any, Literal

from fastapi import APIRouter, Response

from api.deps import CallerDep, StateDep
from api.routes.documents import find
from services.cards.rules import review_kinds
from services.documents.decks import Deck, collect_cards, load_deck
from services.domain import Card, count_reasons

router = APIRouter(prefix="/v1/decks", tags=["decks"])


def card_json(card: Card) -> dict[str, Any]:
    return {
        "card_id": card.card_id,
        "type": card.type,
        "front": card.front,
        "back": card.back,
        "source": {
            "file": card.file,
            "page": card.page,
            "page_label": card.page_label,
            "section": list(card.section),
        },
        "tags": list(card.tags),
        "needs_review": card.needs_review,
        "review": card.review,  # why it needs review
        "prompt_version": card.prompt_version,
    }


@router.get("/{document_id}", responses={404: {}})
async def get_deck(
    document_id: str, state: StateDep, caller: CallerDep, format: Literal["json", "csv"] = "json"
) -> Any:
    """Cards with front, back, type and source {file, page, section}."""
    view = find(state, caller.tenant_id, document_id)
    snap = view.snapshot
    deck: Deck | None = None
    if view.deck is not None:
        deck = await asyncio.to_thread(load_deck, state.blobs, view.deck.deck_uri)
        cards = deck.cards
    else:
        cards = await asyncio.to_thread(collect_cards, state.blobs, document_id, snap.generation)
    if format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["front", "back", "type", "file", "page", "section", "card_id", "needs_review"])
        for c in cards:
            section = " > ".join(c.section)
            review = (c.review or "yes") if c.needs_review else ""  # why, when known
            w.writerow([c.front, c.back, c.type, c.file, c.page_label, section, c.card_id, review])
        return Response(
            buf.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{document_id}.csv"'},
        )
    failures = [f.model_dump() for f in view.deck.failures] if view.deck is not None else []
    return {
        "document_id": document_id,
        "filename": snap.filename,
        "generation": snap.generation,
        "status": snap.status,
        "complete": view.deck is not None,
        "failures": failures,
        # Known once the deck is assembled: what the checks dropped, and the chunks without a card.
        "quality": {
            "cards": len(cards),
            "needs_review": sum(c.needs_review for c in cards),
            "needs_review_by_reason": count_reasons(k for c in cards for k in review_kinds(c)),
            "dropped": deck.dropped if deck else None,
            "dropped_by_reason": deck.dropped_by_reason if deck else None,
            "duplicates_removed": deck.duplicates_removed if deck else None,
        },
        "empty_chunks": deck.empty_chunks if deck else [],
        "cards": [card_json(c) for c in cards],
    }
