"""The pipeline under LLM faults, on a real broker, worker and API, with `deckstream llm sim`.

Faults change at run time through the simulator's POST /admin/faults: an outage, 503s, garbage
answers, answers slower than the client's timeout. Then a worker is SIGKILLed mid-document,
partitions move twice mid-book, workers join and stop during an outage and while a scanned book
is read, and a small upload races a book. Each test asserts what a user sees: the document's final status, every
chunk accounted for, the failure reasons, the deck.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from deckstream.client import DeckstreamClient, SSEEvent
from deckstream.stack import Stack, start_stack, start_worker_for
from infra.process import die_with_parent, free_port, terminate, wait_until
from services.documents.chunking import chunk_pages
from services.domain import Page
from services.events import topics
from services.events.models import ChunkCreated, ChunkFailed, PageExtracted, decode
from services.extraction import extract
from services.settings import LimitSettings
from tests.conftest import corpus_file, scanned_pdf, stack_settings, upload_until_a_card

pytestmark = pytest.mark.kafka

LLM = {
    "model": "sim",
    "profile": "chat",
    "max_in_flight": 8,
    "max_tokens": 400,
    "timeout_s": 2,
    "max_attempts": 3,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.5,
    "retry_rounds": 4,
    "retry_delay_s": 0.5,
    "breaker_threshold": 5,
    "breaker_cooldown_s": 5.0,
}
NO_FAULTS = {
    "latency_s": 0.05,
    "error_rate": 0,
    "garbage_rate": 0,
    "unsupported_rate": 0,
    "slow_rate": 0,
    "slow_s": 0,
    "retry_after_s": 1.0,
    "down_for_s": 0,
}
TERMINAL = ("completed", "partial", "failed", "cancelled")

# Two paragraphs of about 300 tokens each: alone, the first is one chunk; together, two chunks
# of which the first is the same chunk (same text, page and section), so it hits the card cache.
PLANTS = (
    "Photosynthesis converts sunlight into chemical energy inside the chloroplasts of green plants. "
    "Chlorophyll absorbs mostly blue and red light and reflects green wavelengths back to our eyes. "
    "Stomata on the underside of leaves open during daylight to exchange carbon dioxide and oxygen. "
    "Xylem vessels carry water and dissolved minerals upward from the roots toward every leaf. "
    "Phloem tissue distributes sugars produced in the leaves to growing shoots, fruits and roots. "
    "Transpiration pulls water through the plant as moisture evaporates from the leaf surfaces. "
    "Germination begins when a seed absorbs water and its embryo resumes growth after dormancy. "
    "Pollination transfers pollen grains from anthers to stigmas, often carried by bees or wind. "
    "Deciduous trees shed their leaves in autumn to conserve water through the cold winter months. "
    "Mycorrhizal fungi colonise roots and trade soil nutrients for sugars made by their host plant."
)
CELLS = (
    "Mitochondria produce adenosine triphosphate through cellular respiration in animal cells. "
    "Ribosomes translate messenger molecules into chains of amino acids that fold into proteins. "
    "The nucleus stores chromosomes and controls which genes a cell expresses at any moment. "
    "Lysosomes contain digestive enzymes that break down worn organelles and engulfed bacteria. "
    "The endoplasmic reticulum folds new proteins and synthesises lipids for cellular membranes. "
    "Golgi bodies package proteins into vesicles and address them to destinations inside cells. "
    "Cytoskeleton filaments give cells their shape and guide the movement of internal cargo. "
    "Meiosis halves the chromosome number so that fertilisation restores the full complement. "
    "Apoptosis removes damaged cells in an orderly way without inflaming surrounding tissue. "
    "Membrane pumps spend energy moving sodium and potassium ions against their gradients."
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`deckstream llm sim`: 8 requests at once, 50 ms each, seeded faults."""
    port = free_port()
    command = ["deckstream", "llm", "sim", "--port", str(port), "--latency", "0.05", "--capacity", "8"]
    log_path = tmp_path_factory.mktemp("sim") / "sim.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *command, "--tokens-per-s", "0", "--seed", "1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the simulator exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, interval=0.1, what="the LLM simulator")
        yield url
    finally:
        terminate(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, sim_url: str) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("faults")
    # One LLM call per chunk, so the tests can count calls: the page follow-up (a call more for a
    # chunk with a bare page) is off here; tests/unit/test_page_follow_up.py has it under faults.
    cards = {"cover_pages": False}
    st = start_stack(
        stack_settings(home, kafka_bootstrap, sim_url, llm={"url": sim_url, **LLM}, cards=cards), api=True
    )
    yield st
    st.stop()


@pytest.fixture(autouse=True)
def clear_faults(sim_url: str) -> Iterator[None]:
    set_faults(sim_url, **NO_FAULTS)
    yield
    set_faults(sim_url, **NO_FAULTS)


# --------------------------------------------------------------------------- helpers


def set_faults(sim_url: str, **faults: float) -> dict[str, Any]:
    r = httpx.post(f"{sim_url}/admin/faults", json=faults, timeout=5)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def sim_stats(sim_url: str) -> dict[str, int]:
    return httpx.get(f"{sim_url}/stats", timeout=5).json()  # type: ignore[no-any-return]


def upload(client: DeckstreamClient, path: Path, filename: str | None = None) -> str:
    r = client.upload(path, filename=filename)
    assert r.status_code == 202, r.text
    return str(r.json()["document_id"])


def follow(
    client: DeckstreamClient, doc: str, after: str | None = None, deadline_s: float = 120
) -> list[SSEEvent]:
    """The document's SSE events (after `after`) until the server ends the stream at `done`."""
    events = list(client.events(doc, last_event_id=after, timeout_s=deadline_s))
    assert events and events[-1].event == "done", [e.event for e in events[-5:]]
    return events


def settled(client: DeckstreamClient, doc: str, deadline_s: float = 30) -> dict[str, Any]:
    """The status once it is terminal and carries the deck of that outcome (its failures)."""

    def check() -> dict[str, Any] | None:
        s = client.status(doc)
        deck = client.deck(doc).json()
        if s["status"] in TERMINAL and deck["complete"] and len(s["failures"]) == s["chunks_failed"]:
            return s
        return None

    return wait_until(check, deadline_s, interval=0.1, what=f"document {doc} to settle")


def assert_accounted(final: dict[str, Any]) -> None:
    assert final["chunks_total"] > 0, final
    assert final["chunks_done"] + final["chunks_failed"] == final["chunks_total"], final


def dead_letters(bootstrap: str, doc: str, want: int, deadline_s: float = 30) -> list[ChunkFailed]:
    """ChunkFailed records of `doc` on chunks.dlq, once `want` of them are there."""

    def found() -> list[ChunkFailed] | None:
        dlq = [e for e in document_events(bootstrap, [topics.DLQ.name], doc) if isinstance(e, ChunkFailed)]
        return dlq if len(dlq) >= want else None

    return wait_until(found, deadline_s, interval=0.2, what=f"{want} dead letter(s) of {doc}")


def document_events(bootstrap: str, names: list[str], doc: str) -> list[Any]:
    """Every event of `doc` on these topics, read without a group from the start to their end."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            *names, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            assert consumer.assignment(), "without a group, start() assigns every partition"
            ends = await consumer.end_offsets(list(consumer.assignment()))
            found: list[Any] = []
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    found += [ev for ev in map(decode, (r.value for r in records)) if ev.document_id == doc]
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


# --------------------------------------------------------------------------- tests


def test_an_llm_outage_delays_a_document_but_fails_no_chunk(client: DeckstreamClient, sim_url: str) -> None:
    # 30 s: more than a chunk's 4 rounds of calls and delays; failed probes use no round.
    set_faults(sim_url, down_for_s=30)
    before = sim_stats(sim_url)
    started = time.monotonic()
    doc = upload(client, corpus_file("bee4750_syllabus.docx"))

    events = follow(client, doc, deadline_s=150)
    final = events[-1].data
    elapsed = time.monotonic() - started
    after = sim_stats(sim_url)
    waits = [e.data["reason"] for e in events if e.event == "waiting"]
    assert waits and "LLM is unavailable" in waits[0] and "503" in waits[0], waits  # told why
    assert final["waiting"] is None

    assert after["down_rejections"] > before["down_rejections"], "the outage never hit the document"
    assert elapsed > 28, f"done after {elapsed:.1f} s: the document did not wait out the outage"
    assert final["status"] == "completed", final
    assert final["chunks_failed"] == 0
    assert_accounted(final)
    assert final["chunks_done"] == final["chunks_total"]
    deck = client.deck(doc).json()
    assert deck["cards"] and deck["failures"] == []


def test_a_re_upload_pays_no_llm_call_and_gets_the_same_deck(client: DeckstreamClient, sim_url: str) -> None:
    path = corpus_file("py4e_Pythonlearn-02-Expressions.pptx")  # no other test uploads it
    first = upload(client, path)
    assert follow(client, first)[-1].data["status"] == "completed"
    settled(client, first)
    before = sim_stats(sim_url)["requests"]

    again = upload(client, path)
    assert follow(client, again)[-1].data["status"] == "completed"
    settled(client, again)

    assert sim_stats(sim_url)["requests"] == before, "the LLM was paid again"
    decks = [client.deck(doc).json() for doc in (first, again)]

    def cards(deck: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(c["front"], c["back"], c["source"], c["review"]) for c in deck["cards"]]

    assert cards(decks[0]) and cards(decks[0]) == cards(decks[1])
    # Read again from the model's cached answers: what the checks dropped is counted again.
    assert decks[0]["quality"] == decks[1]["quality"] and decks[1]["empty_chunks"] == decks[0]["empty_chunks"]


def test_a_card_cache_cleared_by_hand_costs_llm_calls_not_documents(
    client: DeckstreamClient, sim_url: str, stack: Stack
) -> None:
    path = corpus_file("bee4750_syllabus.docx")
    first = follow(client, upload(client, path))[-1].data
    assert first["status"] == "completed", first
    shutil.rmtree(stack.settings.blob_dir / "cache")  # an operator frees disk space
    before = sim_stats(sim_url)["requests"]

    again = follow(client, upload(client, path))[-1].data

    assert again["status"] == "completed", again
    assert again["chunks_done"] == first["chunks_done"] and again["cards"] > 0, again
    assert sim_stats(sim_url)["requests"] - before >= again["chunks_total"], "served without the LLM"
    assert (stack.settings.blob_dir / "cache").is_dir(), "the cache was not filled again"


def test_occasional_503s_lose_no_chunk(client: DeckstreamClient, sim_url: str) -> None:
    set_faults(sim_url, error_rate=0.2, retry_after_s=0.1)
    before = sim_stats(sim_url)
    names = [
        "bee4750_hw01_julia-intro.pdf",
        "py4e_Pythonlearn-10-Tuples.pptx",
        "py4e_Pythonlearn-06-Strings.pptx",
    ]
    docs = [upload(client, corpus_file(name)) for name in names]

    finals = [follow(client, doc)[-1].data for doc in docs]

    assert sim_stats(sim_url)["errors_injected"] > before["errors_injected"], "no 503 was injected"
    for name, final in zip(names, finals, strict=True):
        assert final["status"] == "completed", (name, final)
        assert final["chunks_total"] > 0 and final["chunks_done"] == final["chunks_total"], (name, final)
        assert final["cards"] > 0, (name, final)


def test_garbage_answers_fail_chunks_with_the_reason_and_a_retry_reruns_only_those(
    client: DeckstreamClient, sim_url: str, kafka_bootstrap: str
) -> None:
    # Each chunk gets a repair retry, so a chunk fails when both of its answers are garbage.
    set_faults(sim_url, garbage_rate=0.75)
    doc = upload(client, corpus_file("bee4750_syllabus.pdf"))
    events = follow(client, doc)
    final = events[-1].data
    assert final["status"] in ("partial", "failed"), final
    assert final["chunks_failed"] > 0
    assert_accounted(final)

    streamed = [e.data for e in events if e.event == "chunk_failed"]
    status = settled(client, doc)
    deck = client.deck(doc).json()
    failed = sorted(f["chunk_index"] for f in status["failures"])
    assert len(failed) == final["chunks_failed"]
    assert sorted(f["chunk_index"] for f in deck["failures"]) == failed
    assert sorted(f["chunk_index"] for f in streamed) == failed
    for failure in status["failures"] + deck["failures"] + streamed:
        assert "json" in failure["reason"].lower(), failure
    if final["status"] == "failed":
        assert "every chunk failed" in (status["error"] or "")

    dlq = dead_letters(kafka_bootstrap, doc, want=len(failed))
    assert sorted({d.chunk_index for d in dlq}) == failed
    assert all(d.code == "bad-model-output" and "json" in d.reason.lower() for d in dlq)
    assert all(d.chunk.chunk_index == d.chunk_index and d.chunk.segments for d in dlq)

    set_faults(sim_url, **NO_FAULTS)
    calls_before = sim_stats(sim_url)["requests"]
    r = client.http.post(f"/v1/documents/{doc}/retry")
    assert r.status_code == 202, r.text
    again = follow(client, doc, after=events[-1].id)
    final = again[-1].data
    assert final["status"] == "completed", final
    assert final["chunks_done"] == final["chunks_total"] and final["chunks_failed"] == 0
    assert sim_stats(sim_url)["requests"] - calls_before == len(failed), "only failed chunks run again"
    status = settled(client, doc)
    assert status["status"] == "completed" and status["failures"] == []
    assert client.http.post(f"/v1/documents/{doc}/retry").status_code == 409


def test_made_up_cards_never_reach_the_deck_which_counts_them_by_reason(
    client: DeckstreamClient, sim_url: str, tmp_path: Path
) -> None:
    notes = tmp_path / "biology-notes.txt"
    nonce = uuid.uuid4().hex  # text no earlier test sent: every chunk asks the LLM
    notes.write_text(f"Notes {nonce}. {PLANTS}\n\nNotes {nonce}. {CELLS}\n")
    set_faults(sim_url, unsupported_rate=1.0)  # every answer opens with a card about Jupiter
    before = sim_stats(sim_url)["unsupported_injected"]

    doc = upload(client, notes)
    events = follow(client, doc)
    final = events[-1].data
    settled(client, doc)

    assert final["status"] == "completed", final
    made_up = sim_stats(sim_url)["unsupported_injected"] - before
    assert made_up >= final["chunks_total"] > 0
    deck = client.deck(doc).json()
    streamed = [e.data for e in events if e.event == "card"]
    assert deck["cards"] and streamed
    assert not [c for c in streamed + deck["cards"] if "Jupiter" in c["front"] + c["back"]]
    quality = deck["quality"]
    assert quality["dropped"] == made_up
    assert quality["dropped_by_reason"] == {"not supported by the text": made_up}


def test_answers_slower_than_the_timeout_fail_the_chunk_after_its_rounds(
    client: DeckstreamClient, sim_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    alone, both = tmp_path / "plants.txt", tmp_path / "biology.txt"
    alone.write_text(PLANTS + "\n")
    both.write_text(PLANTS + "\n\n" + CELLS + "\n")
    warm = follow(client, upload(client, alone))[-1].data  # caches the first chunk's cards
    assert warm["status"] == "completed" and warm["chunks_total"] == 1, warm

    set_faults(sim_url, slow_rate=1.0, slow_s=3.0)  # 3 s answers, 2 s client timeout
    before = sim_stats(sim_url)
    doc = upload(client, both)
    final = follow(client, doc, deadline_s=150)[-1].data
    calls = sim_stats(sim_url)["requests"] - before["requests"]

    assert final["status"] == "partial", final  # the cached chunk's cards are kept
    assert final["chunks_total"] == 2 and final["chunks_done"] == 1 and final["chunks_failed"] == 1, final
    status = settled(client, doc)
    [failure] = status["failures"]
    assert failure["chunk_index"] == 1 and "timed out" in failure["reason"], failure
    assert calls == LLM["retry_rounds"] * LLM["max_attempts"], f"{calls} calls"
    [dead] = dead_letters(kafka_bootstrap, doc, want=1)
    assert dead.attempts == LLM["retry_rounds"] and dead.code == "retryable", dead
    deck = client.deck(doc).json()
    assert deck["cards"] and all(c["source"]["file"] == both.name for c in deck["cards"])


def assert_finished_whole(client: DeckstreamClient, doc: str, seen: list[SSEEvent]) -> dict[str, Any]:
    """Follow the document to its end: every chunk accounted for, one deck of streamed cards,
    none twice. Returns the final progress."""
    rest = follow(client, doc, after=seen[-1].id, deadline_s=150)
    final = rest[-1].data
    assert_accounted(final)
    streamed = [e.data["card_id"] for e in seen + rest if e.event == "card"]
    status = settled(client, doc)
    cards = client.deck(doc).json()["cards"]
    assert cards and len(cards) == status["deck_cards"]
    ids = [c["card_id"] for c in cards]
    fronts = [" ".join(c["front"].lower().split()) for c in cards]
    assert len(set(ids)) == len(ids), "a card is in the deck twice"
    assert len(set(fronts)) == len(fronts), "a question is in the deck twice"
    assert set(ids) <= set(streamed), "the deck holds cards the live stream never showed"
    return final  # type: ignore[no-any-return]


def running_worker(stack: Stack) -> subprocess.Popen[bytes]:
    [worker] = [p for p in stack.children if "worker" in p.args and p.poll() is None]
    return worker


def test_a_worker_killed_mid_document_is_replaced_without_losing_or_duplicating_cards(
    client: DeckstreamClient, stack: Stack, sim_url: str
) -> None:
    set_faults(sim_url, latency_s=0.2)  # ~7 s of LLM work: the kill lands mid-document
    doc, seen = upload_until_a_card(client, "py4e_python-for-everybody_book.docx")

    worker = running_worker(stack)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    stack.children.remove(worker)
    interrupted = client.status(doc)
    assert interrupted["status"] not in TERMINAL, interrupted
    assert interrupted["chunks_done"] < interrupted["chunks_total"] or interrupted["chunks_total"] == 0

    # start_worker_for waits for "Ready" in worker.log: keep the dead worker's log apart.
    (stack.logs / "worker.log").rename(stack.logs / "worker-killed.log")
    start_worker_for(stack)
    final = assert_finished_whole(client, doc, seen)
    assert final["status"] in ("completed", "partial"), final


def test_partitions_moving_twice_mid_document_lose_and_duplicate_nothing(
    client: DeckstreamClient, stack: Stack, sim_url: str
) -> None:
    """Scaling out, then a rolling restart: a second worker joins (the group rebalances and both
    workers give up and take partitions while chunks are in flight), then the first is stopped
    (SIGTERM) and the second takes every partition over."""
    set_faults(sim_url, latency_s=0.4)  # ~20 s of LLM work for the book: both moves land mid-document
    doc, seen = upload_until_a_card(client, "whitehead_introduction-to-mathematics_pg41568.pdf")
    first = running_worker(stack)

    second = start_worker_for(stack)
    joined = client.status(doc)
    assert joined["status"] not in TERMINAL, joined
    terminate(first, timeout_s=30.0)
    assert first.returncode is not None
    stack.children.remove(first)
    handed_over = client.status(doc)
    assert handed_over["status"] not in TERMINAL, handed_over
    assert running_worker(stack) is second

    final = assert_finished_whole(client, doc, seen)
    assert final["status"] == "completed", final


def test_workers_join_and_stop_during_an_llm_outage_without_waiting_for_it(
    client: DeckstreamClient, stack: Stack, sim_url: str, tmp_path: Path
) -> None:
    """Scaling out and a rolling restart while the LLM is down. Chunks waiting for the breaker
    have not started, so a worker hands them back: the rebalance does not wait out the outage
    (new uploads are still read meanwhile), the stopped worker exits at once, and the chunks
    complete once the LLM is back."""
    set_faults(sim_url, down_for_s=40)
    before = sim_stats(sim_url)["down_rejections"]
    doc = upload(client, corpus_file("py4e_Pythonlearn-03-Conditional_slides.pdf"))  # not cached
    wait_until(
        lambda: sim_stats(sim_url)["down_rejections"] > before + LLM["breaker_threshold"],
        60,
        what="the outage to open the breaker",
    )
    first = running_worker(stack)

    # A worker is ready once the group has rebalanced. Without the hand-back each waiting chunk
    # holds the rebalance until it has been the breaker's probe: a cool-down (5 s) per chunk,
    # longer than the rest of the outage for these 7.
    second = start_worker_for(stack)
    joined_during_outage = set_faults(sim_url)["down_for_s"]
    note = tmp_path / "cells.txt"
    note.write_text(CELLS + "\n")
    later = upload(client, note)
    wait_until(lambda: client.status(later)["chunks_total"] > 0, 10, what="a new upload to be read")
    terminate(first, timeout_s=10.0)
    stopped_during_outage = set_faults(sim_url)["down_for_s"]
    stack.children.remove(first)

    assert joined_during_outage > 0, "the group's rebalance waited for the outage to end"
    assert first.returncode == 0, f"the worker had to be killed ({first.returncode})"
    assert stopped_during_outage > 0, "the worker stopped only once the outage was over"
    assert running_worker(stack) is second
    for d in (doc, later):
        final = follow(client, d, deadline_s=150)[-1].data
        assert final["status"] == "completed", final
        assert final["chunks_failed"] == 0 and final["chunks_done"] == final["chunks_total"] > 0, final


def test_workers_join_and_stop_while_a_scanned_book_is_read_without_waiting_for_it(
    client: DeckstreamClient, stack: Stack, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """OCR takes 1-2 s a page, so a scanned book takes minutes to read, and a rebalance or a
    shutdown waits for the upload a worker is splitting. The splitter hands it back, marked with
    the pages and chunks it sent; the next one reads the file again, OCR from the cache, and
    sends the rest. Every page and every chunk is sent once, the same as in one reading."""
    book = corpus_file("whitehead_introduction-to-mathematics_pg41568.pdf")
    scan = scanned_pdf(tmp_path / "scanned-whitehead.pdf", book, range(20, 44))  # ~40 s of OCR
    doc = upload(client, scan)
    wait_until(lambda: client.status(doc)["pages_done"] > 0, 120, interval=0.2, what="a first page")
    first = running_worker(stack)

    second = start_worker_for(stack)  # ready once the group has rebalanced
    joined = client.status(doc)
    note = tmp_path / "cells.txt"
    note.write_text(CELLS + "\n")
    later = upload(client, note)
    wait_until(lambda: client.status(later)["chunks_total"] > 0, 10, what="a new upload to be read")
    terminate(first, timeout_s=10.0)
    stopped = client.status(doc)
    stack.children.remove(first)

    assert joined["pages_done"] < 24, f"the rebalance waited for the book to be read: {joined}"
    assert first.returncode == 0, f"the worker had to be killed ({first.returncode})"
    assert stopped["pages_done"] < 24, f"the worker stopped only once the book was read: {stopped}"
    assert running_worker(stack) is second
    final = follow(client, doc, deadline_s=180)[-1].data
    assert final["status"] == "completed", final
    assert final["pages_total"] == final["pages_done"] == 24 and final["chunks_failed"] == 0, final

    pages = client.http.get(f"/v1/documents/{doc}/pages").json()["pages"]
    assert [(p["number"], p["method"]) for p in pages] == [(n, "ocr") for n in range(1, 25)]
    # Read in one go from the same OCR results, the scan makes these chunks: each was sent once.
    sha = hashlib.sha256(scan.read_bytes()).hexdigest()
    ocr = stack.settings.blob_dir / "ocr" / sha[:2] / sha
    assert len(list(ocr.glob("*.json"))) == 24
    read = [
        e for e in extract(scan, LimitSettings(), filename=scan.name, ocr_cache=ocr) if isinstance(e, Page)
    ]
    expected = chunk_pages(read, stack.settings.chunks.max_tokens, stack.settings.chunks.overlap_tokens)
    lanes = [topics.CHUNKS.name, topics.CHUNKS_INTERACTIVE.name]
    sent: dict[int, set[str]] = {}
    for ev in document_events(kafka_bootstrap, lanes, doc):
        if isinstance(ev, ChunkCreated):  # a chunk handed back by the generator keeps its event id
            assert ev.content_hash == expected[ev.chunk_index].content_hash, ev.chunk_index
            sent.setdefault(ev.chunk_index, set()).add(ev.event_id)
    assert sorted(sent) == list(range(len(expected))) == list(range(final["chunks_total"]))
    assert all(len(ids) == 1 for ids in sent.values()), "a chunk was split and sent twice"
    read_pages = [
        ev.number
        for ev in document_events(kafka_bootstrap, [topics.PAGES.name], doc)
        if isinstance(ev, PageExtracted)
    ]
    assert sorted(read_pages) == list(range(1, 25)), "a page was sent twice"


def test_a_small_upload_finishes_before_a_book_that_was_uploaded_first(
    client: DeckstreamClient, sim_url: str, tmp_path: Path
) -> None:
    set_faults(sim_url, latency_s=0.2)  # the book needs ~12 s of LLM time: a long queue to jump
    note = tmp_path / "note.txt"
    note.write_text(CELLS + "\n")
    book = upload(client, corpus_file("freeculture_lessig_352p.pdf"))
    for ev in client.events(book, timeout_s=120):
        if ev.event == "card":  # the book's chunks now fill the LLM's slots
            break
        assert ev.event != "done", ev.data

    started = time.monotonic()
    small = upload(client, note)
    final = follow(client, small, deadline_s=60)[-1].data
    small_s = time.monotonic() - started
    book_now = client.status(book)

    assert final["status"] == "completed", final
    assert book_now["status"] not in TERMINAL, f"the book finished before the note ({small_s:.1f} s)"
    assert book_now["chunks_done"] < book_now["chunks_total"] or book_now["chunks_total"] == 0
    r = client.http.post(f"/v1/documents/{book}/cancel")  # no need to wait for the whole book
    assert r.status_code == 202, r.text
    assert follow(client, book, deadline_s=60)[-1].data["status"] == "cancelled"
