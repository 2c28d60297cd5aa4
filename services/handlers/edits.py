"""Edit a deck: change, delete, add and check cards (events on cards.edits), list where each
edit went, and the deck as edited, which every deck the API serves goes through (export, study).

Each edit names the generation whose deck the person saw (default: the one served) and is
checked against that deck as edited so far: a card that is not in it (never was, or deleted)
is 404. The event is published (acknowledged by the broker) before it counts here; the feed
reads it back later and leaves it out as seen. Rules: services/cards/edits.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

from services.cards.edits import (
    VERDICTS,
    Overlaid,
    added_card,
    check_card,
    clean_tags,
    edited,
    invalid,
    new_card_id,
    overlay,
)
from services.documents.decks import collect_cards, load_generation
from services.documents.ledger import load_ledger
from services.documents.views import DocumentView, DocumentViews
from services.domain import Card
from services.errors import Conflict, DocumentNotFound
from services.events import topics
from services.events.models import (
    CardAdded,
    CardChecked,
    CardDeleted,
    CardEdit,
    CardEdited,
)
from services.events.publisher import EventPublisher
from services.storage.blobs import BlobStore

MAX_SECTION_LEVELS = 12
MAX_HEADING_CHARS = 200
KINDS = {CardEdited: "edit", CardDeleted: "delete", CardAdded: "add", CardChecked: "check"}


def generation_cards(blobs: BlobStore, document_id: str, generation: int) -> list[Card]:
    """A generation's cards as the model wrote them: its assembled deck, else the cards so far
    (file I/O: call in a thread)."""
    deck = load_generation(blobs, document_id, generation)
    return deck.cards if deck is not None else collect_cards(blobs, document_id, generation)


def edited_deck(
    blobs: BlobStore,
    view: DocumentView,
    generation: int,
    edits: Sequence[CardEdit],
    base: list[Card] | None = None,
) -> Overlaid:
    """A generation's deck with `edits` laid over it (file I/O: call in a thread)."""
    doc = view.snapshot.document_id
    cards = base if base is not None else generation_cards(blobs, doc, generation)
    return overlay(cards, generation, edits, partial(generation_cards, blobs, doc), view.snapshot.filename)


async def served_deck(blobs: BlobStore, view: DocumentView, generation: int) -> Overlaid:
    # The edits are read here, on the event loop, where the feed adds to them.
    edits = view.edits.up_to(generation)
    return await asyncio.to_thread(edited_deck, blobs, view, generation, edits)


async def with_edits(blobs: BlobStore, view: DocumentView, generation: int, cards: list[Card]) -> list[Card]:
    """A generation's cards, as loaded for an export, with the people's edits applied."""
    edits = view.edits.up_to(generation)
    if not edits:
        return cards
    deck = await asyncio.to_thread(edited_deck, blobs, view, generation, edits, cards)
    return deck.cards


def chosen_generation(views: DocumentViews, view: DocumentView, generation: int | None) -> int:
    """The generation asked for (404 if the document has none such), else the one served."""
    if generation is None:
        return views.current(view)
    if generation not in views.generations(view):
        raise DocumentNotFound(f"document {view.snapshot.document_id} has no generation {generation}")
    return generation


def card_in(deck: Overlaid, card_id: str, view: DocumentView) -> Card:
    found = next((c for c in deck.cards if c.card_id == card_id), None)
    if found is None:
        raise DocumentNotFound(
            f"no card {card_id} in the deck of {view.snapshot.document_id}", "no-such-card"
        )
    return found


async def _record(publisher: EventPublisher, view: DocumentView, event: CardEdit) -> None:
    await publisher.publish(topics.EDITS.name, event)
    view.edits.apply(event)  # at once: the person's next read shows it


async def edit_card(
    blobs: BlobStore,
    publisher: EventPublisher,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    card_id: str,
    *,
    generation: int | None = None,
    front: str | None = None,
    back: str | None = None,
    kind: str | None = None,
    tags: Sequence[str] | None = None,
) -> Card:
    """Change a card's front, back, type or tags (those given); the card as it reads now."""
    g = chosen_generation(views, view, generation)
    if front is None and back is None and kind is None and tags is None:
        raise invalid("nothing to change: give front, back, type or tags")
    card = card_in(await served_deck(blobs, view, g), card_id, view)
    front = front.strip() if front is not None else None
    back = back.strip() if back is not None else None
    kept_tags = clean_tags(tags) if tags is not None else None
    check_card(
        kind or card.type, front if front is not None else card.front, back if back is not None else card.back
    )
    event = CardEdited(
        **_ids(view, g), card_id=card_id, front=front, back=back, type=kind, tags=kept_tags, edited_by=by
    )
    await _record(publisher, view, event)
    return edited(card, event)


async def delete_card(
    blobs: BlobStore,
    publisher: EventPublisher,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    card_id: str,
    *,
    generation: int | None = None,
) -> None:
    """Take a card out of the deck (404 if it is not in it)."""
    g = chosen_generation(views, view, generation)
    card_in(await served_deck(blobs, view, g), card_id, view)
    await _record(publisher, view, CardDeleted(**_ids(view, g), card_id=card_id, edited_by=by))


async def add_card(
    blobs: BlobStore,
    publisher: EventPublisher,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    *,
    kind: str,
    front: str,
    back: str,
    tags: Sequence[str] = (),
    after: str | None = None,
    page: int | None = None,
    section: Sequence[str] | None = None,
    generation: int | None = None,
) -> Card:
    """A card of the person's own, with an id of its own. It cites `page` (and `section`, else
    the page's), or the card it is added next to (`after`), and follows that card in the deck."""
    g = chosen_generation(views, view, generation)
    front, back = front.strip(), back.strip()
    check_card(kind, front, back)
    kept_tags = clean_tags(tags)
    if after is None and page is None:
        raise invalid("say where the card comes from: `after` (the card it goes next to) or `page`")
    deck = await served_deck(blobs, view, g)
    anchor = card_in(deck, after, view) if after is not None else None
    if page is not None:
        label, headings, chunk = await _page_source(blobs, view, g, deck, page)
    else:
        assert anchor is not None
        label, headings, chunk = anchor.page_label, list(anchor.section), anchor.chunk_index
        page = anchor.page
    if section is not None:
        headings = _clean_section(section)
    event = CardAdded(
        **_ids(view, g),
        card_id=new_card_id(),
        type=kind,
        front=front,
        back=back,
        tags=kept_tags,
        page=page,
        page_label=label,
        section=headings,
        chunk_index=anchor.chunk_index if anchor is not None else chunk,
        after_card_id=after,
        edited_by=by,
    )
    await _record(publisher, view, event)
    return added_card(event, view.snapshot.filename)


async def check_mark(
    blobs: BlobStore,
    publisher: EventPublisher,
    views: DocumentViews,
    view: DocumentView,
    by: str,
    card_id: str,
    verdict: str,
    *,
    generation: int | None = None,
) -> Card | None:
    """Settle a card marked to check: `accept` keeps it without the mark (the card is returned),
    `dismiss` takes it out of the deck (None). 409 for a card that is not marked."""
    g = chosen_generation(views, view, generation)
    if verdict not in VERDICTS:
        raise invalid(f"a verdict is accept or dismiss, not {verdict!r}")
    card = card_in(await served_deck(blobs, view, g), card_id, view)
    if not card.needs_review:
        raise Conflict(f"card {card_id} is not marked to check", "not-marked")
    await _record(
        publisher, view, CardChecked(**_ids(view, g), card_id=card_id, verdict=verdict, edited_by=by)
    )
    return dataclasses.replace(card, needs_review=False, review=None) if verdict == "accept" else None


async def list_edits(
    blobs: BlobStore, views: DocumentViews, view: DocumentView, generation: int | None = None
) -> dict[str, Any]:
    """Every edit that applies to a generation's deck, oldest first: placed (on which card) and
    unplaced (why: the carry-over found no card for it)."""
    g = chosen_generation(views, view, generation)
    deck = await served_deck(blobs, view, g)
    return {
        "document_id": view.snapshot.document_id,
        "generation": g,
        "placed": [edit_json(p.event) | {"applied_to": p.card_id} for p in deck.placed],
        "unplaced": [edit_json(u.event) | {"reason": u.reason} for u in deck.unplaced],
    }


def edit_json(event: CardEdit) -> dict[str, Any]:
    """An edit as the API shows it: what, on which card of which generation, by whom, when."""
    if isinstance(event, CardEdited):
        changes: dict[str, Any] = {
            k: v
            for k, v in event.model_dump(include={"front", "back", "type", "tags"}).items()
            if v is not None
        }
    elif isinstance(event, CardAdded):
        changes = event.model_dump(
            include={"type", "front", "back", "tags", "page", "section", "after_card_id"}
        )
    elif isinstance(event, CardChecked):
        changes = {"verdict": event.verdict}
    else:
        changes = {}
    return {
        "event_id": event.event_id,
        "kind": KINDS.get(type(event), event.name),
        "card_id": event.card_id,
        "generation": event.generation,
        "by": getattr(event, "edited_by", None),
        "at": event.occurred_at,
        "changes": changes,
    }


def _ids(view: DocumentView, generation: int) -> dict[str, Any]:
    s = view.snapshot
    return {"tenant_id": s.tenant_id, "document_id": s.document_id, "generation": generation}


def _clean_section(section: Sequence[str]) -> list[str]:
    headings = [h.strip() for h in section if h.strip()]
    if len(headings) > MAX_SECTION_LEVELS:
        raise invalid(f"a section has at most {MAX_SECTION_LEVELS} headings, not {len(headings)}")
    if any(len(h) > MAX_HEADING_CHARS for h in headings):
        raise invalid(f"a heading has at most {MAX_HEADING_CHARS} characters")
    return headings


async def _page_source(
    blobs: BlobStore, view: DocumentView, generation: int, deck: Overlaid, page: int
) -> tuple[str, list[str], int]:
    """A page's label and section (from the page ledger, else a card citing it) and the chunk of
    a card on it (-1: none); 422 for a page the document does not have."""
    s = view.snapshot
    ledger = await asyncio.to_thread(load_ledger, blobs, s.document_id, generation)
    pages_total = len(ledger) if ledger else (s.pages_total if generation == s.generation else 0)
    if page < 1 or (pages_total and page > pages_total):
        raise invalid(f"page {page} is not in the document: it has {pages_total} pages")
    info = next((p for p in ledger or () if p.number == page), None)
    on_page = [c for c in deck.cards if c.page == page]
    if info is not None:
        label, headings = info.label, list(info.section)
    elif on_page:
        label, headings = on_page[0].page_label, list(on_page[0].section)
    else:
        label, headings = str(page), []
    return label, headings, on_page[0].chunk_index if on_page else -1
