"""Card cache, density, cross-chunk dedup and deck assembly: what a user's deck ends up holding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.cards import dedup
from services.cards.cache import cache_key, cards_for_chunk, load_cached, store_cached
from services.cards.dedup import drop_near_duplicates
from services.cards.rules import NOT_SUPPORTED, cards_from_answer
from services.documents.decks import card_to_json, collect_cards, load_deck, store_chunk_cards, store_deck
from services.domain import Card, Chunk, Segment
from services.llm.client import Completion
from services.storage.blobs import LocalBlobStore


def card(front: str, back: str = "an answer", chunk: int = 0, cid: str = "c") -> Card:
    return Card(cid, "basic", front, back, "book.pdf", 3, "iii", ("Ch 1",), chunk, "cards-chat-v1")


def chunk(text: str = "Photosynthesis makes glucose.", page: int = 3) -> Chunk:
    return Chunk(0, (Segment(page, str(page), ("Ch 1",), text),), 4)


def test_a_cache_hit_is_the_models_answer_read_again_for_this_document(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    text = "Photosynthesis makes glucose in the chloroplasts of green plants."
    key = cache_key(
        chunk(text), model="m", prompt_version="v1", profile="chat", card_types=["basic"], per_chunk=3
    )
    assert load_cached(blobs, key, document_id="d2", generation=1, chunk_index=7, filename="copy.pdf") is None
    items = [
        {"type": "basic", "front": "What does photosynthesis make?", "back": "Glucose"},
        {"type": "basic", "front": "What is the capital of France?", "back": "Paris"},  # not in the text
    ]
    answer = Completion(json.dumps({"cards": items}), "stop")
    store_cached(blobs, key, answer)

    hit = load_cached(blobs, key, document_id="d2", generation=1, chunk_index=7, filename="copy.pdf")
    assert hit is not None and hit.answer == answer
    read = cards_from_answer(
        Chunk(7, chunk(text).segments, 12),
        hit.answer,
        profile="chat",
        card_types=["basic"],
        version="cards-chat-v1",
        document_id="d2",
        generation=1,
        filename="copy.pdf",
    )
    assert [(c.front, c.file, c.chunk_index, c.page) for c in read.cards] == [
        ("What does photosynthesis make?", "copy.pdf", 7, 3)
    ]
    assert read.dropped == [("What is the capital of France?", NOT_SUPPORTED)]


def test_cache_entries_written_before_answers_were_kept_still_load(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    key = cache_key(
        chunk(), model="m", prompt_version="v1", profile="chat", card_types=["basic"], per_chunk=3
    )
    uri = f"cache/cards/{key[:2]}/{key}.json"
    blobs.put_json(uri, {"cards": [card_to_json(card("What is made?")), card_to_json(card("Where?"))]})
    hit = load_cached(blobs, key, document_id="d2", generation=1, chunk_index=7, filename="copy.pdf")
    assert hit is not None and hit.answer is None and hit.cards is not None
    assert [c.front for c in hit.cards] == ["What is made?", "Where?"]
    assert {c.file for c in hit.cards} == {"copy.pdf"} and {c.chunk_index for c in hit.cards} == {7}
    assert len({c.card_id for c in hit.cards}) == 2 and hit.cards[0].page == 3

    blobs.put_json(uri, {"cards": [], "empty_reason": "not supported by the text (2)"})  # the ledger's
    hit = load_cached(blobs, key, document_id="d", generation=1, chunk_index=0, filename="f.pdf")
    assert hit is not None and hit.cards == [] and hit.empty_reason == "not supported by the text (2)"
    blobs.put_json(uri, [card_to_json(card("Old entry?"))])  # the first format
    old = load_cached(blobs, key, document_id="d", generation=1, chunk_index=0, filename="f.pdf")
    assert old is not None and old.cards is not None and [c.front for c in old.cards] == ["Old entry?"]
    assert old.empty_reason is None


def test_cache_key_changes_with_text_model_prompt_or_options() -> None:
    base = {"model": "m", "prompt_version": "v1", "profile": "chat", "card_types": ["basic"], "per_chunk": 3}
    key = cache_key(chunk(), **base)  # type: ignore[arg-type]
    assert key == cache_key(chunk(), **base)  # type: ignore[arg-type]
    variants = [
        cache_key(chunk("Other text."), **base),  # type: ignore[arg-type]
        cache_key(chunk(page=4), **base),  # type: ignore[arg-type]
        cache_key(chunk(), **{**base, "model": "m2"}),  # type: ignore[arg-type]
        cache_key(chunk(), **{**base, "prompt_version": "v2"}),  # type: ignore[arg-type]
        cache_key(chunk(), **{**base, "card_types": ["basic", "cloze"]}),  # type: ignore[arg-type]
        cache_key(chunk(), **{**base, "per_chunk": 4}),  # type: ignore[arg-type]
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_card_count_scales_with_length_within_bounds() -> None:
    assert cards_for_chunk(100, 15, 8) == 2
    assert cards_for_chunk(300, 15, 8) == 4
    assert cards_for_chunk(2000, 15, 8) == 8  # capped
    assert cards_for_chunk(5, 15, 8) == 1  # never zero


def test_near_duplicate_questions_across_chunks_are_dropped() -> None:
    cards = [
        card("What is photosynthesis?", "The process plants use to make glucose from light.", 0),
        card("Define photosynthesis.", "The process by which plants make glucose using light.", 1),
        card("What is the capital of France?", "Paris", 2),
        card("What is the capital of Germany?", "Berlin", 3),
    ]
    kept = drop_near_duplicates(cards)
    assert [c.chunk_index for c in kept] == [0, 2, 3]


@pytest.mark.parametrize("block", [1, 2, 3, 512])
def test_near_duplicates_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    facts = [
        ("What is photosynthesis?", "The process plants use to make glucose from light."),
        ("Define photosynthesis.", "The process by which plants make glucose using light."),
        ("What do plants make from light?", "Glucose, by photosynthesis."),
        ("What is the capital of France?", "Paris"),
        ("Which city is the capital of France?", "Paris is the capital."),
        ("What is the capital of Germany?", "Berlin"),
        ("What is osmosis?", "Water moving across a membrane."),
        ("Explain osmosis.", "The movement of water across a membrane."),
    ]
    cards = [card(front, back, chunk) for chunk, (front, back) in enumerate(facts)]
    vectors = np.asarray(dedup._model().embed([f"{f} {b}" for f, b in facts], norm=True))
    expected: list[int] = []  # greedy, card by card: kept unless like a card kept before it
    for i in range(len(cards)):
        if all(float(vectors[k] @ vectors[i]) < 0.6 for k in expected):
            expected.append(i)
    assert 2 < len(expected) < len(cards)  # the threshold does drop some, not all
    monkeypatch.setattr(dedup, "_BLOCK", block)
    assert [c.chunk_index for c in drop_near_duplicates(cards, threshold=0.6)] == expected


def test_deck_is_the_union_of_chunk_cards_in_order_without_exact_repeats(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    store_chunk_cards(
        blobs, "d", 1, 1, [card("Why is the sky blue?", cid="b"), card("What is Kafka?", cid="c")]
    )
    store_chunk_cards(blobs, "d", 1, 0, [card("What is a log?", cid="a")])
    store_chunk_cards(
        blobs, "d", 1, 1, [card("Why is the sky blue?", cid="b"), card("what is  kafka", cid="c")]
    )
    store_chunk_cards(blobs, "d", 2, 0, [card("Another generation?", cid="z")])
    cards = collect_cards(blobs, "d", 1)
    assert [c.card_id for c in cards] == ["a", "b", "c"]  # redelivery overwrote chunk 1; gen 2 apart
    empty = [{"chunk_index": 3, "pages": ["iv"], "reason": "not supported by the text (2)"}]
    why = {"not supported by the text": 2}
    uri = store_deck(
        blobs,
        "d",
        1,
        "completed",
        cards,
        empty_chunks=empty,
        dropped=2,
        dropped_by_reason=why,
        duplicates_removed=1,
    )
    deck = load_deck(blobs, uri)
    assert deck.cards == cards and deck.empty_chunks == empty
    assert (deck.status, deck.dropped, deck.duplicates_removed) == ("completed", 2, 1)
    assert deck.dropped_by_reason == why


def test_a_deck_written_before_drop_reasons_were_kept_reads_as_reason_not_recorded(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    old = {"status": "completed", "cards": [], "empty_chunks": [], "dropped": 3, "duplicates_removed": 0}
    assert load_deck(blobs, blobs.put_json("decks/d/g1.json", old)).dropped_by_reason == {
        "reason not recorded": 3
    }
    none = blobs.put_json("decks/e/g1.json", old | {"dropped": 0})
    assert load_deck(blobs, none).dropped_by_reason == {}


@pytest.mark.parametrize(
    "uri", ["blob://../outside.json", "blob://cards/../../x", "blob:///etc/passwd", "blob://a//b", "s3://x"]
)
def test_blob_uris_cannot_name_a_file_outside_the_store(tmp_path: Path, uri: str) -> None:
    blobs = LocalBlobStore(tmp_path / "store")
    with pytest.raises(ValueError):
        blobs.path(uri)


def test_json_blobs_are_rewritten_whole_and_survive_a_deleted_folder(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    uri = blobs.put_json("cards/d1/g0/000001.json", [1, 2])
    assert blobs.put_json("cards/d1/g0/000001.json", [3]) == uri
    assert blobs.get_json(uri) == [3]
    blobs.delete("blob://cards/d1")
    blobs.put_json("cards/d1/g0/000002.json", [4])  # the folder is made again
    assert blobs.list("cards/d1/g0") == ["blob://cards/d1/g0/000002.json"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_json_blobs_are_written_after_their_folder_was_removed_by_hand(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    blobs.put_json("cache/cards/ab/one.json", [1])
    shutil.rmtree(tmp_path / "cache")  # an operator clears the card cache
    uri = blobs.put_json("cache/cards/ab/two.json", [2])
    assert blobs.get_json(uri) == [2]
