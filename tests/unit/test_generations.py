"""Generations without a broker: what a reprocessing writes and reuses, what the API's views serve,
which documents a replay picks, how generations compare, and what a promotion accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from services.documents.decks import store_deck
from services.documents.state import track
from services.documents.views import DocumentViews, Position
from services.domain import Card
from services.errors import Conflict, InvalidOptions
from services.events import topics
from services.events.models import (
    CardsGenerated,
    DeckAssembled,
    DocumentUploaded,
    GenerationPromoted,
)
from services.handlers.generations import compare_generations, promotion
from services.handlers.replay import plan_replay
from services.llm.client import Completion, Prompt
from services.storage.blobs import LocalBlobStore
from tests.unit.test_handlers import GOOD, chunk_event, progress, sent_to, upload_event, writer


class RecordingLLM:
    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    async def generate(self, prompt: Prompt) -> Completion:
        self.prompts.append(prompt)
        return Completion(GOOD, "stop")

    async def aclose(self) -> None:
        return None


def cards_of(emits: Any) -> CardsGenerated:
    (made,) = sent_to(emits, topics.CARDS)
    assert isinstance(made, CardsGenerated)
    return made


# ── writing a new generation's cards ──────────────────────────────────────────────────────────


async def test_a_new_generation_with_the_same_prompt_is_served_from_the_cache(tmp_path: Path) -> None:
    llm = RecordingLLM()
    write = writer(tmp_path, llm)  # type: ignore[arg-type]
    first = cards_of(await write(chunk_event(), priority=0, give_up=None))
    second = cards_of(await write(chunk_event(generation=2), priority=0, give_up=None))
    assert len(llm.prompts) == 1 and second.attempts == 0
    assert [c.back for c in second.cards] == [c.back for c in first.cards]
    assert {c.card_id for c in second.cards}.isdisjoint(c.card_id for c in first.cards)  # its own cards


async def test_a_new_prompt_version_or_model_asks_the_llm_again_and_says_so(tmp_path: Path) -> None:
    llm = RecordingLLM()
    write = writer(tmp_path, llm, model="served-model")  # type: ignore[arg-type]
    cards_of(await write(chunk_event(), priority=0, give_up=None))
    v2 = cards_of(await write(chunk_event(generation=2, prompt_version="v2"), priority=0, give_up=None))
    other = cards_of(await write(chunk_event(generation=3, model="other-model"), priority=0, give_up=None))
    assert len(llm.prompts) == 3
    assert v2.prompt_version == "cards-chat-v2" and {c.prompt_version for c in v2.cards} == {"cards-chat-v2"}
    assert "language of the text" in llm.prompts[1].messages[0].content  # the v2 file's wording
    assert other.model == "other-model" and llm.prompts[2].model == "other-model"
    assert llm.prompts[0].model is None  # the worker's own: the client sends its configured model


# ── the tracker ───────────────────────────────────────────────────────────────────────────────


def test_an_older_generations_upload_redelivered_leaves_the_new_generation_alone() -> None:
    newer = track(None, upload_event(generation=2)).state
    assert newer is not None
    again = track(newer, upload_event(generation=1))
    assert again.state is newer and again.progress == []


# ── the API's views ───────────────────────────────────────────────────────────────────────────


def deck_event(doc: str, generation: int) -> DeckAssembled:
    return DeckAssembled(
        tenant_id="default",
        document_id=doc,
        generation=generation,
        status="completed",
        deck_uri=f"blob://decks/{doc}/g{generation}.json",
        cards=1,
        chunks_total=1,
        chunks_failed=0,
        failures=[],
    )


def test_views_follow_the_newest_generation_and_serve_the_first_until_a_promotion() -> None:
    views = DocumentViews()
    views.apply(Position(0, 0), upload_event(document_id="d", tenant_id="default"))
    views.apply(Position(0, 1), progress("d", "completed", kind="done", progress=1.0))
    views.apply(Position(0, 2), deck_event("d", 1))
    view = views.docs["d"]
    assert view.done is not None and views.current(view) == 1
    views.apply(Position(0, 3), upload_event(document_id="d", tenant_id="default", generation=2))
    views.apply(
        Position(0, 4), upload_event(document_id="d", generation=2, replay_chunks=[3])
    )  # not a new one
    views.apply(Position(0, 5), progress("d", "extracting", generation=2))
    assert view.snapshot.generation == 2 and view.done is None and len(view.events) == 1
    assert view.deck is None and view.decks[1].generation == 1  # generation 1's deck is still known
    assert views.current(view) == 1 and views.generations(view) == [1, 2]
    assert sorted(views.uploads["d"]) == [1, 2]
    views.apply(Position(0, 6), progress("d", "queued", generation=1))  # a late event of generation 1
    assert view.snapshot.generation == 2
    views.register_reprocessing(upload_event(document_id="d", tenant_id="default", generation=3))
    assert (view.snapshot.generation, view.snapshot.status, view.snapshot.cards) == (3, "queued", 0)
    assert not view.events and views.generations(view) == [1, 2, 3]
    views.apply(
        Position(1, 0),
        GenerationPromoted(tenant_id="default", document_id="d", generation=2, promoted_by="cli"),
    )
    assert views.current(view) == 2


# ── a replay's plan ───────────────────────────────────────────────────────────────────────────


def test_a_replay_picks_finished_documents_and_says_why_it_skips_the_others(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    uri = blobs.put_json("sha256/ab/file", {})

    def up(doc: str, at: int, **kw: Any) -> DocumentUploaded:
        return upload_event(**{"document_id": doc, "blob_uri": uri, "occurred_at": at, **kw})

    log = [
        up("done", 1_000),
        progress("done", "completed", kind="done"),
        up("twice", 2_000),
        up("twice", 3_000, generation=2, prompt_version="v2"),
        progress("twice", "partial", generation=2, kind="done"),
        up("running", 4_000),
        progress("running", "generating"),
        up("queued", 5_000),
        up("gone", 6_000, blob_uri="blob://sha256/no/such"),
        progress("gone", "completed", kind="done"),
        up("done", 1_000, generation=1, pages_sent=3),  # a hand-back: not a generation
    ]
    plan = plan_replay(log, blobs, model="m2")
    assert [(u.document_id, u.generation, u.model) for u in plan.uploads] == [
        ("done", 2, "m2"),
        ("twice", 3, "m2"),
    ]
    assert all(u.prompt_version is None and u.is_original for u in plan.uploads)
    assert dict(plan.skipped) == {
        "running": "generation 1 is still generating",
        "queued": "generation 1 has not started yet",
        "gone": "the uploaded file is no longer in the blob store",
    }
    assert [u.document_id for u in plan_replay(log, blobs, since_ms=2_000).uploads] == ["twice"]
    chosen = plan_replay(log, blobs, documents=["twice", "nope"])
    assert [u.document_id for u in chosen.uploads] == ["twice"] and chosen.skipped == [
        ("nope", "not in the log")
    ]
    with pytest.raises(InvalidOptions, match="no prompt version 'v9'"):
        plan_replay(log, blobs, prompt_version="v9")


# ── compare and promote ───────────────────────────────────────────────────────────────────────


def card(i: int, page: int, **kw: Any) -> Card:
    return Card(
        f"c{i}",
        "basic",
        f"Question number {i}?",
        "answer",
        "f.txt",
        page,
        str(page),
        (),
        0,
        "cards-chat-v1",
        **kw,
    )


def test_generations_compare_side_by_side_and_only_a_usable_one_is_promoted(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    summary = {"model": "m1", "prompt_version": "cards-chat-v1", "pages_total": 3, "chunks_total": 2}
    store_deck(
        blobs,
        "d",
        1,
        "completed",
        [card(1, 1), card(2, 1)],
        dropped=1,
        dropped_by_reason={"x": 1},
        summary=summary,
    )
    flagged = dataclasses.replace(card(3, 2), needs_review=True, review="weakly supported")
    store_deck(
        blobs, "d", 2, "partial", [card(1, 1), flagged, card(4, 3)], summary={**summary, "model": "m2"}
    )
    store_deck(blobs, "d", 3, "cancelled", [], summary=summary)
    uploads = {1: upload_event(document_id="d"), 2: upload_event(document_id="d", generation=2, model="m2")}
    live = progress("d", "generating", generation=4, cards=5)
    table = compare_generations(blobs, "d", uploads=uploads, live=live, current=1)
    rows = {r["generation"]: r for r in table["generations"]}
    assert table["current"] == 1 and table["latest"] == 4 and list(rows) == [1, 2, 3, 4]
    assert (rows[1]["cards"], rows[1]["pages_covered"], rows[1]["dropped_by_reason"]) == (2, 1, {"x": 1})
    assert (rows[2]["cards"], rows[2]["needs_review"], rows[2]["pages_covered"], rows[2]["model"]) == (
        3,
        1,
        3,
        "m2",
    )
    assert rows[2]["requested"] == {"model": "m2", "prompt_version": None}
    assert rows[4]["status"] == "generating" and rows[4]["cards"] == 5 and "pages_covered" not in rows[4]
    assert [r["current"] for r in rows.values()] == [True, False, False, False]

    from services.documents.decks import load_generation

    assert promotion("t", "d", 2, load_generation(blobs, "d", 2), "api").generation == 2
    with pytest.raises(Conflict, match="ended cancelled"):
        promotion("t", "d", 3, load_generation(blobs, "d", 3), "api")
    with pytest.raises(Conflict, match="no deck yet"):
        promotion("t", "d", 4, load_generation(blobs, "d", 4), "api")
