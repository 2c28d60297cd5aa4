"""Export a deck of any kept generation as JSON, CSV or an Anki package (services.cards.anki):
the assembled deck once it is complete, else the cards so far.

CSV cells hold text from the model and the file's name, so a spreadsheet must never read one as a
formula: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
leading ``'`` (OWASP, CSV injection). "-5 °C" is exported as "'-5 °C"."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any, Literal

from services.cards.anki import deck_apkg
from services.cards.rules import review_kinds
from services.documents.decks import Deck, collect_cards, load_deck, load_generation
from services.documents.views import DocumentView
from services.domain import Card, count_reasons
from services.errors import DocumentNotFound
from services.events.models import DocumentProgress
from services.handlers.edits import with_edits
from services.storage.blobs import BlobStore

CSV_COLUMNS = ["front", "back", "type", "file", "page", "section", "card_id", "needs_review"]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text, never evaluates (see the module docstring)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


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


def deck_csv(cards: list[Card]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for c in cards:
        section = " > ".join(c.section)
        review = (c.review or "yes") if c.needs_review else ""  # why, when known
        row = [c.front, c.back, c.type, c.file, c.page_label, section, c.card_id, review]
        w.writerow([csv_cell(cell) for cell in row])
    return buf.getvalue()


def deck_json(
    snap: DocumentProgress,
    generation: int,
    status: str,
    cards: list[Card],
    deck: Deck | None,
    failures: list[Any],
) -> dict[str, Any]:
    return {
        "document_id": snap.document_id,
        "filename": snap.filename,
        "generation": generation,
        "status": status,
        "complete": deck is not None,
        "failures": failures,
        # Known once the deck is assembled: what the checks dropped, and the chunks without a card.
        "quality": {
            "cards": len(cards),
            "needs_review": sum(c.needs_review for c in cards),
            "needs_review_by_reason": count_reasons(k for c in cards for k in review_kinds(c)),
            "dropped": deck.dropped if deck else None,
            "dropped_by_reason": deck.dropped_by_reason if deck else None,
            "duplicates_removed": deck.duplicates_removed if deck else None,
            # Page coverage, language, retried chunks (services/cards/quality.py); decks before: none.
            **(deck.summary.get("quality", {}) if deck else {}),
        },
        "empty_chunks": deck.empty_chunks if deck else [],
        "cards": [card_json(c) for c in cards],
    }


async def export_deck(
    blobs: BlobStore, view: DocumentView, fmt: Literal["json", "csv", "apkg"], generation: int
) -> str | bytes | dict[str, Any]:
    """A generation's deck in `fmt`: CSV text, an Anki package's bytes, or the JSON body. The
    newest generation's while it runs is the cards made so far; an older one's is its assembled
    deck (404 if it has none)."""
    snap = view.snapshot
    deck: Deck | None = None
    if generation == snap.generation:
        status = snap.status
        failures = [f.model_dump() for f in view.deck.failures] if view.deck is not None else []
        if view.deck is not None:
            deck = await asyncio.to_thread(load_deck, blobs, view.deck.deck_uri)
            cards = deck.cards
        else:
            cards = await asyncio.to_thread(collect_cards, blobs, snap.document_id, snap.generation)
    else:
        deck = await asyncio.to_thread(load_generation, blobs, snap.document_id, generation)
        if deck is None:
            raise DocumentNotFound(f"document {snap.document_id} has no deck of generation {generation}")
        status, cards, failures = deck.status, deck.cards, deck.summary.get("failures", [])
    cards = await with_edits(blobs, view, generation, cards)  # what people changed, added, removed
    if fmt == "apkg":  # genanki writes SQLite and a zip: off the event loop
        return await asyncio.to_thread(deck_apkg, snap.tenant_id, snap.document_id, snap.filename, cards)
    return deck_csv(cards) if fmt == "csv" else deck_json(snap, generation, status, cards, deck, failures)
