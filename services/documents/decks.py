"""Decks: the cards of every chunk, kept per chunk in the blob store, assembled on demand.

Each chunk's cards are written to `cards/<doc>/g<generation>/<chunk>.json` (overwritten on
redelivery, so at-least-once delivery cannot duplicate a card). A deck is the union of its
chunks' cards, in chunk order, with near-identical cards across chunks removed (overlapping
chunks often yield the same question twice).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from services.domain import UNRECORDED, Card
from services.storage.blobs import SCHEME, BlobStore


def _prefix(document_id: str, generation: int) -> str:
    return f"cards/{document_id}/g{generation}"


_CARD_FIELDS = tuple(f.name for f in dataclasses.fields(Card))


def card_to_json(card: Card) -> dict[str, Any]:
    out = {name: getattr(card, name) for name in _CARD_FIELDS}  # asdict() deep-copies: slow
    out["section"] = list(card.section)
    out["tags"] = list(card.tags)
    return out


def card_from_json(data: dict[str, Any]) -> Card:
    return Card(**{**data, "section": tuple(data["section"]), "tags": tuple(data.get("tags", ()))})


def store_chunk_cards(
    blobs: BlobStore,
    document_id: str,
    generation: int,
    chunk_index: int,
    cards: list[Card],
    cache_key: str | None = None,
) -> str:
    """A chunk's cards, with the key of the result-cache entry they were read from (what keeps
    that entry from `deckstream gc`)."""
    key = f"{_prefix(document_id, generation)}/{chunk_index:06d}.json"
    return blobs.put_json(key, {"cards": [card_to_json(c) for c in cards], "cache_key": cache_key})


def chunk_cards(raw: Any) -> tuple[list[dict[str, Any]], str | None]:
    """A stored chunk's cards and cache key; files written before the key was kept are a list."""
    if isinstance(raw, list):
        return raw, None
    return raw["cards"], raw.get("cache_key")


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def stored_cards(blobs: BlobStore, document_id: str, generation: int) -> list[Card]:
    """Every stored card of a document, in chunk order."""
    return [
        card_from_json(raw)
        for uri in blobs.list(_prefix(document_id, generation))
        for raw in chunk_cards(blobs.get_json(uri))[0]
    ]


def without_repeats(cards: list[Card]) -> list[Card]:
    """The cards whose question was not asked before (overlapping chunks repeat some)."""
    seen: set[str] = set()
    out: list[Card] = []
    for card in cards:
        key = _norm(card.front)
        if key not in seen:
            seen.add(key)
            out.append(card)
    return out


def collect_cards(blobs: BlobStore, document_id: str, generation: int) -> list[Card]:
    """Every stored card of a document, in chunk order, without cross-chunk duplicates."""
    return without_repeats(stored_cards(blobs, document_id, generation))


@dataclasses.dataclass(frozen=True, slots=True)
class Deck:
    status: str
    cards: list[Card]
    empty_chunks: list[dict[str, Any]]  # the ledger: chunk_index, pages, reason
    dropped: int  # cards that validation or grounding dropped
    duplicates_removed: int  # cards streamed but left out of the deck as near-duplicates
    dropped_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)  # most frequent first
    # How it was made: generation, model, prompt version, pages and chunks (decks written before
    # reprocessing existed have none).
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def store_deck(
    blobs: BlobStore,
    document_id: str,
    generation: int,
    status: str,
    cards: list[Card],
    *,
    empty_chunks: Sequence[dict[str, Any]] = (),
    dropped: int = 0,
    dropped_by_reason: Mapping[str, int] | None = None,
    duplicates_removed: int = 0,
    summary: Mapping[str, Any] | None = None,
) -> str:
    key = deck_key(document_id, generation)
    deck = {
        "status": status,
        "cards": [card_to_json(c) for c in cards],
        "empty_chunks": list(empty_chunks),
        "dropped": dropped,
        "dropped_by_reason": dict(dropped_by_reason or {}),
        "duplicates_removed": duplicates_removed,
        "summary": {"generation": generation, **(summary or {})},
    }
    return blobs.put_json(key, deck)


def deck_key(document_id: str, generation: int) -> str:
    return f"decks/{document_id}/g{generation}.json"


def kept_generations(blobs: BlobStore, document_id: str) -> list[int]:
    """The generations of a document whose deck was assembled, oldest first."""
    found = []
    for uri in blobs.list(f"decks/{document_id}"):
        name = uri.rsplit("/", 1)[-1]
        if name.startswith("g") and name.endswith(".json") and name[1:-5].isdigit():
            found.append(int(name[1:-5]))
    return sorted(found)


def load_generation(blobs: BlobStore, document_id: str, generation: int) -> Deck | None:
    """A generation's assembled deck; None when it has none (yet)."""
    uri = SCHEME + deck_key(document_id, generation)
    if not blobs.path(uri).exists():
        return None
    return load_deck(blobs, uri)


def load_deck(blobs: BlobStore, uri: str) -> Deck:
    raw = blobs.get_json(uri)
    dropped = raw.get("dropped", 0)
    return Deck(
        status=raw["status"],
        cards=[card_from_json(c) for c in raw["cards"]],
        empty_chunks=raw.get("empty_chunks", []),  # decks written before the ledger have none
        dropped=dropped,
        duplicates_removed=raw.get("duplicates_removed", 0),
        # Decks written before the reasons were kept: their drops count as UNRECORDED.
        dropped_by_reason=raw.get("dropped_by_reason", {UNRECORDED: dropped} if dropped else {}),
        summary=raw.get("summary", {}),
    )
