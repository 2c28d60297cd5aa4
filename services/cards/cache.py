"""A result cache for generated cards: a re-upload or a retry never pays twice for a chunk.

Keyed by what determines the answer: the chunk's text and page layout, the model, the prompt
version and profile, the card options, and the language the prompt names (versions that name
one). Entries live in the blob store and hold the model's answer, not the cards: a hit is read
again by ``rules.cards_from_answer``, so cards follow today's validation and grounding rules and
carry this document's file, ids and chunk index. Entries written before answers were kept hold
cards, re-stamped for the document on a hit.

A chunk whose cards were all dropped is asked once more with a prompt that names why
(``writing.write_cards``). That answer is kept in the same entry, under ``retry_key``: the
prompt version and the reasons named. A replay whose rules drop the same cards for the same
reasons reads it back; other reasons are another prompt, so another answer. The follow-up for
pages of the chunk left without a card is kept the same way, under ``pages_key``: the prompt
version and the pages asked about. One entry per chunk
keeps ``deckstream gc`` right: it keeps the entries a chunk's cards name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence

from services.documents.decks import card_from_json
from services.domain import Card, Chunk, card_id
from services.llm.client import Completion
from services.storage.blobs import BlobStore


def cache_key(
    chunk: Chunk,
    *,
    model: str,
    prompt_version: str,
    profile: str,
    card_types: Sequence[str],
    per_chunk: int,
    language: str | None = None,
) -> str:
    """``language``: what the prompt names ("es", "und"), None for versions that name none (their
    keys stay as they were)."""
    layout = [(s.page, s.label, list(s.section)) for s in chunk.segments]
    parts = [chunk.content_hash, layout, model, prompt_version, profile, sorted(card_types), per_chunk]
    if language is not None:
        parts.append(language)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def retry_key(prompt_version: str, reasons: Sequence[str]) -> str:
    """The retry's answer within a chunk's entry: its prompt is the version's retry prompt
    naming these reasons."""
    return hashlib.sha256(json.dumps([prompt_version, list(reasons)]).encode()).hexdigest()[:16]


def pages_key(prompt_version: str, page: str) -> str:
    """A page follow-up's answer within a chunk's entry: its prompt is the version's pages
    prompt on that page's text (by its label)."""
    return hashlib.sha256(json.dumps([prompt_version, "pages", [page]]).encode()).hexdigest()[:16]


def _uri_key(key: str) -> str:
    return f"cache/cards/{key[:2]}/{key}.json"


@dataclasses.dataclass(frozen=True, slots=True)
class Cached:
    answer: Completion | None = None  # the model's answer (entries written since answers are kept)
    cards: list[Card] | None = None  # older entries: the cards, re-stamped for this document
    empty_reason: str | None = None  # older entries: why there are no cards, when there are none
    retries: dict[str, Completion] = dataclasses.field(default_factory=dict)  # by retry_key


def _answer(completion: Completion) -> dict[str, str]:
    return {"answer": completion.text, "finish_reason": completion.finish_reason}


def store_cached(
    blobs: BlobStore, key: str, answer: Completion, retries: Mapping[str, Completion] | None = None
) -> None:
    entry: dict[str, object] = {**_answer(answer)}
    if retries:
        entry["retries"] = {k: _answer(c) for k, c in retries.items()}
    blobs.put_json(_uri_key(key), entry)


def load_cached(
    blobs: BlobStore, key: str, *, document_id: str, generation: int, chunk_index: int, filename: str
) -> Cached | None:
    """The cached answer (or an older entry's cards re-stamped for this document); None on a miss."""
    path = blobs.path("blob://" + _uri_key(key))
    if not path.exists():
        return None
    entry = blobs.get_json("blob://" + _uri_key(key))
    if isinstance(entry, dict) and "answer" in entry:
        kept = entry.get("retries", {})
        retries = {k: Completion(r["answer"], r["finish_reason"]) for k, r in kept.items()}
        return Cached(answer=Completion(entry["answer"], entry["finish_reason"]), retries=retries)
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
