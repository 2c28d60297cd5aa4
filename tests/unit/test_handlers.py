"""The use-case handlers with fakes for their ports: no Kafka, no HTTP.

Each handler takes its dependencies and one message and returns (or yields) what to emit; these
tests read those emits the way an agent or a route would send them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.documents.ledger import load_ledger
from services.documents.settled import SettledDocuments
from services.documents.state import DocumentState
from services.documents.views import DocumentViews, Position
from services.domain import Segment
from services.errors import (
    Conflict,
    DocumentNotFound,
    InvalidOptions,
    Refused,
    RetryableError,
    UnsupportedFileType,
)
from services.events import topics
from services.events.models import (
    CancelDocument,
    CardsGenerated,
    ChunkCreated,
    ChunkFailed,
    ChunksPlanned,
    DeckAssembled,
    DocumentProgress,
    DocumentUploaded,
    Event,
    ExtractionEnded,
    PageExtracted,
    RetryFailedChunks,
)
from services.extraction import extract
from services.handlers import Emit, HandBack, Send, control
from services.handlers import documents as queries
from services.handlers.export import export_deck
from services.handlers.split import SplitUpload
from services.handlers.track import DocumentTracker
from services.handlers.upload import AcceptUpload, parse_options
from services.handlers.watch import parse_cursor, watch
from services.handlers.write_cards import WriteChunkCards, retry_due
from services.llm.breaker import CircuitBreaker
from services.llm.client import Completion, Prompt
from services.llm.connection import LLMConnection
from services.llm.scheduler import InflightScheduler
from services.settings import LimitSettings, Settings
from services.storage.blobs import LocalBlobStore
from tests.conftest import corpus_file
from tests.fakes import FakePublisher

TEXT = (
    "Photosynthesis makes glucose in the chloroplasts of green plants.\n\n"
    "Chlorophyll is the green pigment that absorbs light for photosynthesis.\n"
)


def settings(tmp_path: Path, **over: Any) -> Settings:
    return Settings.model_validate({"home": tmp_path, **over})


def progress(doc: str, status: str, tenant: str = "default", **kw: Any) -> DocumentProgress:
    base: dict[str, Any] = dict(
        tenant_id=tenant,
        document_id=doc,
        generation=1,
        kind="progress",
        status=status,
        filename="f.txt",
        created_at=1,
        pages_total=1,
        pages_done=1,
        chunks_total=2,
        chunks_done=1,
        chunks_failed=0,
        cards=1,
        progress=0.5,
    )
    return DocumentProgress(**{**base, **kw})


def shape(emits: Sequence[Emit]) -> list[tuple[str, str, object, object]]:
    """What was sent where, without the ids and times each event gets anew."""
    return [
        (
            e.topic.name,
            type(e.event).__name__,
            getattr(e.event, "number", None),
            getattr(e.event, "chunk_index", None),
        )
        for e in emits
        if isinstance(e, Send)
    ]


def sent_to(emits: Sequence[Emit], topic: topics.TopicSpec) -> list[Event]:
    return [e.event for e in emits if isinstance(e, Send) and e.topic == topic]


# ── accept an upload ──────────────────────────────────────────────────────────────────────────


async def test_an_upload_is_stored_published_as_a_claim_check_and_shown_as_queued(tmp_path: Path) -> None:
    blobs, publisher, views = LocalBlobStore(tmp_path / "blobs"), FakePublisher(), DocumentViews()
    accept = AcceptUpload(settings=settings(tmp_path), blobs=blobs, publisher=publisher, views=views)
    event = await accept(
        "t1", io.BytesIO(TEXT.encode()), "dir/notes.txt", json.dumps({"card_types": ["cloze"]})
    )
    assert publisher.sent == [(topics.UPLOADED.name, event)]
    assert (event.tenant_id, event.filename, event.kind, event.card_types) == (
        "t1",
        "notes.txt",
        "text",
        ["cloze"],
    )
    assert blobs.path(event.blob_uri).read_bytes() == TEXT.encode()
    assert views.docs[event.document_id].snapshot.status == "queued"


@pytest.mark.parametrize(
    ("given", "kept"), [("fr", "fr"), ("pt-BR", "pt"), ("Français", "fr"), ("auto", None), (None, None)]
)
def test_the_language_option_is_a_code_a_name_or_auto(
    tmp_path: Path, given: str | None, kept: str | None
) -> None:
    assert parse_options(json.dumps({"language": given}), settings(tmp_path)).language == kept


async def test_a_refused_upload_queues_nothing_and_keeps_no_file(tmp_path: Path) -> None:
    blobs, publisher, views = LocalBlobStore(tmp_path / "blobs"), FakePublisher(), DocumentViews()
    accept = AcceptUpload(settings=settings(tmp_path), blobs=blobs, publisher=publisher, views=views)
    with pytest.raises(UnsupportedFileType):
        await accept("t1", io.BytesIO(b"\x00\x01\x02binary" * 100), "x.bin", None)
    with pytest.raises(InvalidOptions, match="invalid options") as bad:
        await accept("t1", io.BytesIO(TEXT.encode()), "notes.txt", json.dumps({"cards_per_chunk": 99}))
    assert bad.value.http_status == 422 and bad.value.code == "invalid-options"
    with pytest.raises(InvalidOptions, match="unknown language 'Klingon'"):
        await accept("t1", io.BytesIO(TEXT.encode()), "notes.txt", json.dumps({"language": "Klingon"}))
    assert publisher.sent == [] and views.docs == {}
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


# ── documents, cancel, retry, export, watch ───────────────────────────────────────────────────


def test_another_tenants_document_is_not_found_exactly_like_a_missing_one() -> None:
    views = DocumentViews()
    views.apply(Position(0, 0), progress("a1", "generating", tenant="A"))
    assert queries.find(views, "A", "a1").snapshot.document_id == "a1"
    for tenant, doc in (("B", "a1"), ("A", "nope")):
        with pytest.raises(DocumentNotFound) as missing:
            queries.find(views, tenant, doc)
        assert missing.value.http_status == 404 and str(missing.value) == f"no document {doc}"
    assert queries.list_documents(views, "B") == []


async def test_cancel_and_retry_publish_commands_only_when_they_can_apply() -> None:
    publisher, views = FakePublisher(), DocumentViews()
    views.apply(Position(0, 0), progress("run", "generating"))
    views.apply(Position(0, 1), progress("done", "completed"))
    views.apply(Position(0, 2), progress("part", "partial", chunks_failed=1))
    await control.cancel(publisher, views.docs["run"])
    with pytest.raises(Conflict, match="already completed") as finished:
        await control.cancel(publisher, views.docs["done"])
    assert finished.value.code == "already-finished" and finished.value.http_status == 409
    with pytest.raises(Conflict) as nothing:
        await control.retry_failed(publisher, views.docs["run"])
    assert nothing.value.code == "nothing-to-retry"
    await control.retry_failed(publisher, views.docs["part"])
    assert [(t, type(e), e.document_id) for t, e in publisher.sent] == [
        (topics.CONTROL.name, CancelDocument, "run"),
        (topics.CONTROL.name, RetryFailedChunks, "part"),
    ]


async def test_a_running_decks_export_holds_the_cards_so_far_and_neutral_quality(tmp_path: Path) -> None:
    from services.documents.decks import store_chunk_cards
    from services.domain import Card

    blobs, views = LocalBlobStore(tmp_path), DocumentViews()
    views.apply(Position(0, 0), progress("d1", "generating"))
    card = Card("c1", "basic", "What makes glucose?", "Photosynthesis", "f.txt", 1, "1", ("Intro",), 0, "v")
    store_chunk_cards(blobs, "d1", 1, 0, [card])
    body = await export_deck(blobs, views.docs["d1"], "json", 1)
    assert isinstance(body, dict) and body["complete"] is False and body["quality"]["dropped"] is None
    assert [c["source"] for c in body["cards"]] == [
        {"file": "f.txt", "page": 1, "page_label": "1", "section": ["Intro"]}
    ]
    text = await export_deck(blobs, views.docs["d1"], "csv", 1)
    assert isinstance(text, str)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["front", "back", "type"] and rows[1][:2] == [
        "What makes glucose?",
        "Photosynthesis",
    ]


async def test_watching_replays_after_the_cursor_and_ends_at_done(tmp_path: Path) -> None:
    views = DocumentViews()
    views.apply(Position(2, 10), progress("d1", "generating"))
    views.apply(Position(2, 11), progress("d1", "completed", kind="done", progress=1.0))
    seen = [
        (i, name) async for i, name, _ in watch(views, LocalBlobStore(tmp_path), "d1", parse_cursor("2-10-0"))
    ]
    assert seen == [("2-11-0", "progress"), ("2-11-1", "done")]
    assert views.subscribers() == 0  # the stream let go of its subscription
    with pytest.raises(Refused) as bad:
        parse_cursor("yesterday")
    assert bad.value.http_status == 400 and bad.value.code == "bad-last-event-id"


# ── split an upload ───────────────────────────────────────────────────────────────────────────


class InProcessSandbox:
    """The sandbox's contract (extract → DocumentOpened, Page*, ExtractionEnded) without a child."""

    def __init__(self) -> None:
        self.limits = LimitSettings()

    def extract(self, path: Path, *, filename: str, ocr_cache: Path | None = None) -> Any:
        return extract(path, self.limits, filename=filename)


IDS: dict[str, Any] = {"tenant_id": "t", "document_id": "doc", "generation": 1}


def upload_event(**over: Any) -> DocumentUploaded:
    base: dict[str, Any] = dict(
        **IDS,
        filename="bio.txt",
        kind="text",
        size=9,
        sha256="0" * 64,
        blob_uri="blob://x",
        card_types=["basic"],
        cards_per_chunk=4,
    )
    return DocumentUploaded(**{**base, **over})


def uploaded(blobs: LocalBlobStore, path: Path, **over: Any) -> DocumentUploaded:
    """An upload of a corpus file, stored in `blobs`."""
    with path.open("rb") as f:
        uri, sha, size = blobs.put_upload(f, max_bytes=10**8)
    return upload_event(
        **{"filename": path.name, "kind": "pptx", "size": size, "sha256": sha, "blob_uri": uri, **over}
    )


async def collect(items: AsyncIterator[Emit], hand_back_fails: bool = True) -> list[Emit]:
    out = []
    async for item in items:
        out.append(item)
        if isinstance(item, HandBack) and not hand_back_fails:
            break
    return out


def splitter(tmp_path: Path, settled: SettledDocuments | None = None) -> tuple[SplitUpload, LocalBlobStore]:
    blobs = LocalBlobStore(tmp_path)
    split = SplitUpload(
        blobs=blobs,
        sandbox=InProcessSandbox(),  # type: ignore[arg-type]
        settled=settled or SettledDocuments(),
        chunks=settings(tmp_path).chunks,
    )
    return split, blobs


async def test_an_upload_splits_into_its_page_ledger_chunks_and_a_plan(tmp_path: Path) -> None:
    split, blobs = splitter(tmp_path)
    up = uploaded(blobs, corpus_file("py4e_Pythonlearn-10-Tuples.pptx"))
    out = await collect(split(up, None))
    pages = sent_to(out, topics.PAGES)
    assert [p.number for p in pages if isinstance(p, PageExtracted)] == list(range(1, len(pages)))
    assert isinstance(pages[-1], ExtractionEnded) and pages[-1].status == "ok"
    chunks = sent_to(out, topics.CHUNKS_INTERACTIVE)  # a slide deck is small: the interactive lane
    (plan,) = sent_to(out, topics.CARDS)
    assert isinstance(plan, ChunksPlanned) and plan.chunks_total == len(chunks) > 0
    assert [c.chunk_index for c in chunks if isinstance(c, ChunkCreated)] == list(range(len(chunks)))
    assert not sent_to(out, topics.CHUNKS)


async def test_a_stopping_worker_hands_the_upload_back_and_the_next_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    split, blobs = splitter(tmp_path)
    up = uploaded(blobs, corpus_file("py4e_Pythonlearn-10-Tuples.pptx"))
    full = await collect(split(up, None))
    stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stopped.set_result(None)
    first = await collect(split(up, stopped), hand_back_fails=False)
    assert len(first) == 1 and isinstance(first[0], HandBack)
    marked = first[0].event
    assert isinstance(marked, DocumentUploaded) and (marked.pages_sent, marked.chunks_sent) == (0, 0)
    # A hand-back that cannot be sent: this worker splits the upload itself, all of it.
    kept = await collect(split(up, stopped))
    assert isinstance(kept[0], HandBack) and shape(kept[1:]) == shape(full)
    # The next splitter of an upload handed back after 3 pages sends only what was not sent.
    rest = await collect(split(up.model_copy(update={"pages_sent": 3, "chunks_sent": 1}), None))
    assert next(p.number for p in sent_to(rest, topics.PAGES) if isinstance(p, PageExtracted)) == 4
    first_chunk = next(c for c in sent_to(rest, topics.CHUNKS_INTERACTIVE) if isinstance(c, ChunkCreated))
    assert first_chunk.chunk_index == 1
    # The kept ledger has every page, also those the first splitter sent.
    ledger = load_ledger(blobs, up.document_id, up.generation)
    pages = [p for p in sent_to(full, topics.PAGES) if isinstance(p, PageExtracted)]
    assert ledger is not None and [(p.number, p.label) for p in ledger] == [
        (p.number, p.label) for p in pages
    ]


async def test_a_bad_file_ends_with_a_failed_ledger_and_a_cancelled_one_with_nothing(tmp_path: Path) -> None:
    settled = SettledDocuments()
    split, blobs = splitter(tmp_path, settled)
    out = await collect(
        split(uploaded(blobs, corpus_file("pdfjs_issue6010_1_encrypted-pw-abc.pdf"), kind="pdf"), None)
    )
    (ended,) = sent_to(out, topics.PAGES)
    assert (
        isinstance(ended, ExtractionEnded) and ended.status == "failed" and "password" in (ended.reason or "")
    )
    (plan,) = sent_to(out, topics.CARDS)
    assert isinstance(plan, ChunksPlanned) and plan.chunks_total == 0
    settled.apply(CancelDocument(tenant_id="t", document_id="doc", generation=1))
    assert await collect(split(uploaded(blobs, corpus_file("py4e_Pythonlearn-10-Tuples.pptx")), None)) == []


# ── write a chunk's cards ─────────────────────────────────────────────────────────────────────


class ScriptedLLM:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers, self.calls = list(answers), 0

    async def generate(self, prompt: Prompt) -> Completion:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return Completion(answer, "stop")

    async def aclose(self) -> None:
        return None


GOOD = json.dumps(
    {"cards": [{"type": "basic", "front": "What does photosynthesis make?", "back": "glucose"}]}
)


def chunk_event(**over: Any) -> ChunkCreated:
    base: dict[str, Any] = dict(
        tenant_id="t",
        document_id="doc",
        generation=1,
        chunk_index=0,
        segments=[Segment(1, "1", ("Intro",), TEXT)],
        tokens=30,
        content_hash="h",
        filename="bio.txt",
        card_types=["basic"],
        cards_per_chunk=4,
        lane="bulk",
    )
    return ChunkCreated(**{**base, **over})


def writer(tmp_path: Path, llm: ScriptedLLM, **llm_over: Any) -> WriteChunkCards:
    cfg = settings(tmp_path, llm={"url": "http://unused", "max_attempts": 1, "backoff_base_s": 0, **llm_over})
    connection = LLMConnection(cfg.llm)
    connection._client = llm  # the port, opened: what LLMConnection.open() sets
    return WriteChunkCards(
        llm_settings=cfg.llm,
        card_settings=cfg.cards,
        blobs=LocalBlobStore(tmp_path),
        llm=connection,
        scheduler=InflightScheduler(2),
        breaker=CircuitBreaker(5, 1.0),
        settled=SettledDocuments(),
    )


async def test_a_chunks_cards_are_announced_and_a_second_time_come_from_the_cache(tmp_path: Path) -> None:
    llm = ScriptedLLM(GOOD)
    write = writer(tmp_path, llm)
    first = await write(chunk_event(), priority=0, give_up=None)
    (made,) = sent_to(first, topics.CARDS)
    assert (
        isinstance(made, CardsGenerated)
        and [c.back for c in made.cards] == ["glucose"]
        and made.attempts == 1
    )
    again = await write(chunk_event(document_id="copy"), priority=0, give_up=None)
    (hit,) = sent_to(again, topics.CARDS)
    assert (
        isinstance(hit, CardsGenerated) and hit.attempts == 0 and [c.back for c in hit.cards] == ["glucose"]
    )
    assert llm.calls == 1  # the copy paid no LLM call


async def test_an_unavailable_llm_defers_the_chunk_then_fails_it_with_the_reason(tmp_path: Path) -> None:
    write = writer(tmp_path, ScriptedLLM(RetryableError("LLM answered HTTP 503")), retry_rounds=2)
    deferred = await write(chunk_event(), priority=0, give_up=None)
    (later,) = sent_to(deferred, topics.CHUNKS_RETRY)
    assert isinstance(later, ChunkCreated) and later.attempt == 1
    assert retry_due(later, 5.0) == pytest.approx(later.occurred_at / 1000 + 5.0)
    failed = await write(later, priority=0, give_up=None)
    dead, reported = sent_to(failed, topics.DLQ), sent_to(failed, topics.CARDS)
    assert dead == reported and isinstance(dead[0], ChunkFailed)
    assert "HTTP 503" in dead[0].reason and "gave up after 2 round(s)" in dead[0].reason


async def test_a_chunk_waiting_for_a_slot_is_handed_back_when_the_worker_stops(tmp_path: Path) -> None:
    write = writer(tmp_path, ScriptedLLM(GOOD))
    for _ in range(2):  # every slot taken
        assert write.scheduler.try_acquire("other")
    stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stopped.set_result(None)
    ev = chunk_event()
    assert await write(ev, priority=0, give_up=stopped) == [HandBack(ev)]
    assert write.scheduler.held("doc") == 0  # it holds nothing
    write.settled.apply(CancelDocument(tenant_id="t", document_id="doc", generation=1))
    assert await write(chunk_event(), priority=0, give_up=None) == []  # a cancelled document's chunk


# ── fold document facts ───────────────────────────────────────────────────────────────────────


class DictStates:
    def __init__(self) -> None:
        self.live: dict[str, DocumentState] = {}
        self.saved: dict[str, DocumentState] = {}

    def get(self, document_id: str) -> DocumentState | None:
        return self.live.get(document_id)

    def put(self, state: DocumentState) -> None:
        self.live[state.document_id] = state

    def save(self, states: Sequence[DocumentState]) -> None:
        self.saved.update((s.document_id, s) for s in states)

    def cached(self) -> list[DocumentState]:
        return list(self.live.values())

    def every(self) -> list[DocumentState]:
        return list(self.live.values())


async def test_a_documents_facts_fold_into_progress_and_one_deck(tmp_path: Path) -> None:
    from services.documents.decks import load_deck

    blobs, states = LocalBlobStore(tmp_path), DictStates()
    tracker = DocumentTracker(blobs=blobs, breaker=CircuitBreaker(5, 1.0), reconcile_after_s=600)
    write = writer(tmp_path, ScriptedLLM(GOOD))
    ids, up = IDS, upload_event()
    cards = sent_to(await write(chunk_event(), priority=0, give_up=None), topics.CARDS)
    facts: list[object] = [
        up,
        PageExtracted(**ids, number=1, label="1", section=[], text=TEXT, method="text", tokens=30),
        ExtractionEnded(**ids, status="ok", pages_total=1),
        ChunksPlanned(**ids, chunks_total=1, pages_total=1),
        *cards,
        *cards,  # redelivered: counted once
    ]
    folded = await tracker.fold(facts, states)
    (deck,) = sent_to(folded.sends, topics.DECKS)
    assert isinstance(deck, DeckAssembled) and (deck.status, deck.cards) == ("completed", 1)
    assert [c.back for c in load_deck(blobs, deck.deck_uri).cards] == ["glucose"]
    kinds = [p.kind for p in sent_to(folded.sends, topics.PROGRESS) if isinstance(p, DocumentProgress)]
    assert kinds == ["progress", "page", "progress", "progress", "card", "done"]
    assert [s.status for s in folded.changed] == ["completed"] and states.saved == {}  # saved once sent


async def test_a_stalled_document_gets_its_missing_chunks_again_unless_the_llm_is_down(
    tmp_path: Path,
) -> None:
    breaker, states = CircuitBreaker(1, 60.0), DictStates()
    tracker = DocumentTracker(blobs=LocalBlobStore(tmp_path), breaker=breaker, reconcile_after_s=1)
    ids, up = IDS, upload_event(occurred_at=0)
    facts = [
        up,
        ExtractionEnded(**ids, status="ok", pages_total=1, occurred_at=0),
        ChunksPlanned(**ids, chunks_total=3, pages_total=1, occurred_at=0),
    ]
    await tracker.fold(facts, states)
    (again,) = [s.event for s in tracker.reconcile(states, now_ms=10_000)]
    assert isinstance(again, DocumentUploaded) and again.replay_chunks == [0, 1, 2]
    assert tracker.reconcile(states, now_ms=10_500) == []  # not again before reconcile_after_s
    with pytest.raises(RetryableError):
        await breaker.call(lambda: _unavailable())
    assert breaker.state == "open" and tracker.reconcile(states, now_ms=60_000) == []
    (notice,) = [s.event for s in tracker.llm_notices(states)]
    assert (
        isinstance(notice, DocumentProgress)
        and notice.kind == "waiting"
        and "LLM is unavailable" in (notice.waiting or "")
    )


async def _unavailable() -> None:
    raise RetryableError("LLM unreachable: ConnectError")


async def test_a_refused_upload_never_removes_a_file_an_accepted_document_shares(tmp_path: Path) -> None:
    blobs, publisher, views = LocalBlobStore(tmp_path / "blobs"), FakePublisher(), DocumentViews()
    accept = AcceptUpload(settings=settings(tmp_path), blobs=blobs, publisher=publisher, views=views)
    first = await accept("t1", io.BytesIO(TEXT.encode()), "notes.txt", None)
    with pytest.raises(UnsupportedFileType) as refused:
        await accept("t1", io.BytesIO(TEXT.encode()), "notes.pdf", None)  # the same bytes, named a PDF
    assert refused.value.http_status == 415
    assert blobs.path(first.blob_uri).read_bytes() == TEXT.encode()  # the first document still reads
    copy = await accept("t2", io.BytesIO(TEXT.encode()), "copy.txt", None)
    assert copy.blob_uri == first.blob_uri  # one file for the same bytes
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


def test_staged_uploads_a_crash_left_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    import os
    import time

    staging = tmp_path / "tmp"
    staging.mkdir()
    old, fresh = staging / "tmp-crashed", staging / "tmp-being-written"
    old.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload under way")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    store = LocalBlobStore(tmp_path)
    assert store.removed_stale == 1 and not old.exists() and fresh.exists()


def test_a_deck_read_before_its_documents_progress_is_not_lost() -> None:
    views = DocumentViews()
    deck = DeckAssembled(
        **IDS,
        status="completed",
        deck_uri="blob://decks/doc/g1.json",
        cards=3,
        chunks_total=2,
        chunks_failed=0,
        failures=[],
    )
    views.apply(Position(0, 7), deck)  # the decks topic read first: the feed reads topics in no set order
    views.apply(Position(1, 3), progress("doc", "completed", tenant="t", kind="done", progress=1.0))
    assert views.docs["doc"].deck == deck
