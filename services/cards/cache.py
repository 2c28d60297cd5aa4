"""A result cache for generated cards: a re-upload or a retry never pays twice for a chunk.

Keyed by what determines the answer: the chunk's text and page layout, the model, the prompt
version and profile, and the card options. Entries live in the blob store and hold the model's
answer, not the cards: a hit is read again by ``rules.cards_from_answer``, so cards follow
today's validation and grounding rules and carry this document's file, ids and chunk index.
Entries written before answers were kept hold cards, re-stamped for the document on a hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

from services.documents.decks import card_from_json
from services.domain import Card, Chunk, card_id
from services.llm.client import Completion
from services.storage.blobs import BlobStore


def cache_key(
    chunk: Chunk, *, model: str, prompt_version: str, profile: str, card_types: Sequence[str], per_chunk: int
) -> str:
    layout = [(s.page, s.label, list(s.section)) for s in chunk.segments]
    raw = json.dumps(
        [chunk.content_hash, layout, model, prompt_version, profile, sorted(card_types), per_chunk]
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def _uri_key(key: str) -> str:
    return f"cache/cards/{key[:2]}/{key}.json"


@dataclasses.dataclass(frozen=True, slots=True)
class Cached:
    answer: Completion | None = None  # the model's answer (entries written since answers are kept)
    cards: list[Card] | None = None  # older entries: the cards, re-stamped for this document
    empty_reason: str | None = None  # older entries: why there are no cards, when there are none


def store_cached(blobs: BlobStore, key: str, answer: Completion) -> None:
    blobs.put_json(_uri_key(key), {"answer": answer.text, "finish_reason": answer.finish_reason})


def load_cached(
    blobs: BlobStore, key: str, *, document_id: str, generation: int, chunk_index: int, filename: str
) -> Cached | None:
    """The cached answer (or an older entry's cards re-stamped for this document); None on a miss."""
    path = blobs.path("blob://" + _uri_key(key))
    if not path.exists():
        return None
    entry = blobs.get_json("blob://" + _uri_key(key))
    if isinstance(entry, dict) and "answer" in entry:
        return Cached(answer=Completion(entry["answer"], entry["finish_reason"]))
    if isinstance(entry, list):  # entries written before the ledger: the cards alone
        entry = {"cards": entry, "empty_reason": None}
    cards = [card_from_json(c) for c in entry["cards"]]
    restamped = [
        dataclasses.replace(
            c,
            card_id=card_id(document_id, generation, chunk_index, i),
            file=filename,
            chunk_index=chunk_index,
        )
        for i, c in enumerate(cards)
    ]
    return Cached(cards=restamped, empty_reason=entry.get("empty_reason"))


def cards_for_chunk(words: int, per_1000_words: float, cap: int) -> int:
    """How many cards to ask of a chunk: density × length, at least 1, at most the cap."""
    return max(1, min(cap, round(words * per_1000_words / 1000)))
