"""The whole pipeline on real parts: Kafka broker, Faust worker, llama.cpp (Gemma 3 270M), API.

Upload real corpus files, follow their SSE streams to `done`, and check the deck a user gets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deckstream.client import DeckstreamClient, SSEEvent
from deckstream.stack import Stack, start_stack
from tests.conftest import corpus_file, stack_settings

pytestmark = [pytest.mark.kafka, pytest.mark.llm]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, llm_url: str) -> Iterator[Stack]:
    st = start_stack(stack_settings(tmp_path_factory.mktemp("pipeline"), kafka_bootstrap, llm_url), api=True)
    yield st
    st.stop()


def follow(client: DeckstreamClient, document_id: str, deadline_s: float = 300) -> list[SSEEvent]:
    """Every SSE event of a document until the server ends the stream after `done`."""
    return list(client.events(document_id, timeout_s=deadline_s))


def assert_monotonic(progress: list[dict[str, Any]]) -> None:
    for key in ("pages_done", "chunks_done", "progress", "cards"):
        values = [p[key] for p in progress]
        assert values == sorted(values), f"{key} went backwards: {values}"


def latin1_lecture(tmp_path: Path) -> Path:
    """Eighty lines of a real Latin-1 text from the corpus (the whole book would take the tiny
    model minutes), kept as the original bytes: the TXT path with encoding detection."""
    raw = corpus_file("macdowell_critical-historical-essays_pg16351_latin1.txt").read_bytes()
    path = tmp_path / "macdowell_lecture_latin1.txt"
    path.write_bytes(b"\n".join(raw.splitlines()[260:340]))
    return path


@pytest.mark.parametrize(
    "name",
    [
        "bee4750_hw01_julia-intro.pdf",
        "bee4750_syllabus.docx",
        "py4e_Pythonlearn-10-Tuples.pptx",
        "macdowell_lecture_latin1.txt",
    ],
)
def test_upload_streams_progress_and_yields_a_cited_deck(
    client: DeckstreamClient, name: str, tmp_path: Path
) -> None:
    path = latin1_lecture(tmp_path) if name.startswith("macdowell") else corpus_file(name)
    started = time.monotonic()
    r = client.upload(path)
    upload_s = time.monotonic() - started
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"].endswith(f"/v1/documents/{body['document_id']}")
    assert body["status_url"].endswith(body["document_id"]) and body["events_url"].endswith("/events")
    assert upload_s < 5, f"upload took {upload_s:.2f} s"

    events = follow(client, body["document_id"])
    names = [e.event for e in events]
    assert names[-1] == "done"
    assert all(e.id for e in events), "every SSE event has an id"
    progress = [e.data for e in events if e.event == "progress"]
    assert_monotonic(progress)
    final = events[-1].data
    assert final["status"] in ("completed", "partial"), final
    assert final["pages_done"] == final["pages_total"] > 0
    assert final["chunks_done"] + final["chunks_failed"] == final["chunks_total"] > 0
    pages = [e.data for e in events if e.event == "page"]
    assert sorted(p["number"] for p in pages) == list(range(1, final["pages_total"] + 1))
    streamed_cards = [e.data for e in events if e.event == "card"]

    deck = client.deck(body["document_id"]).json()
    assert deck["complete"] is True
    cards = deck["cards"]
    assert cards, f"no cards for {name}: {final}"
    assert len(cards) <= len(streamed_cards)
    for card in cards:
        assert card["front"].strip() and card["back"].strip()
        assert card["type"] in ("basic", "cloze")
        assert card["source"]["file"] == name
        assert 1 <= card["source"]["page"] <= final["pages_total"]
        assert isinstance(card["source"]["section"], list)
    status = client.status(body["document_id"])
    assert status["status"] == final["status"] and status["cards"] == final["cards"] == len(streamed_cards)
    assert status["deck_cards"] == len(cards)  # after cross-chunk dedup
    # The ledger names exactly the chunks that gave no card, each with a reason and its pages.
    with_cards = {c["chunk_index"] for c in streamed_cards}
    failed = {f["chunk_index"] for f in deck["failures"]}
    without = set(range(final["chunks_total"])) - with_cards - failed
    assert {e["chunk_index"] for e in deck["empty_chunks"]} == without, deck["empty_chunks"]
    assert all(e["reason"] and e["pages"] for e in deck["empty_chunks"])
    quality = deck["quality"]
    assert quality["cards"] == len(cards) and quality["duplicates_removed"] == len(streamed_cards) - len(
        cards
    )
    assert quality["needs_review"] == sum(c["needs_review"] for c in cards) and quality["dropped"] >= 0
    # Every dropped card, and every card to check, is counted under a reason (a card may have two).
    assert sum(quality["dropped_by_reason"].values()) == quality["dropped"]
    assert "reason not recorded" not in quality["dropped_by_reason"] | quality["needs_review_by_reason"]
    assert sum(quality["needs_review_by_reason"].values()) >= quality["needs_review"]


def test_last_event_id_resumes_after_the_given_event(client: DeckstreamClient) -> None:
    r = client.upload(corpus_file("unstructured_fake-text-utf-16-le-bom.txt"), filename="resume.txt")
    assert r.status_code == 202
    doc = r.json()["document_id"]
    everything = follow(client, doc)
    cut = len(everything) // 2
    resumed = list(client.events(doc, last_event_id=everything[cut - 1].id, timeout_s=60))
    assert [(e.id, e.event) for e in resumed] == [(e.id, e.event) for e in everything[cut:]]


def test_documents_are_listed_newest_first(client: DeckstreamClient) -> None:
    first = client.upload(corpus_file("unstructured_fake-text-utf-16-le-bom.txt"), filename="a.txt").json()
    second = client.upload(corpus_file("unstructured_fake-text-utf-16-le-bom.txt"), filename="b.txt").json()
    listed = [d["document_id"] for d in client.http.get("/v1/documents").json()]
    assert listed.index(second["document_id"]) < listed.index(first["document_id"])
    for doc in (first, second):
        follow(client, doc["document_id"])


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("zero-bytes.pdf", 400, "empty"),
        ("tmb-workshop_office-owner-lockfile_lab4_GLMM.pptx", 415, ""),
        ("msoffcrypto_plain_legacy-word97.doc", 415, "doc"),
        ("msoffcrypto_example_password.docx", 422, "password"),
        ("pdfjs_issue6010_1_encrypted-pw-abc.pdf", 422, "password"),
        ("samplefiles_libreoffice-writer-password.pdf", 422, "password"),
        ("pdfjs_issue15590_truncated.pdf", 422, ""),
    ],
)
def test_bad_uploads_get_problem_json_and_queue_nothing(
    client: DeckstreamClient, name: str, status: int, reason: str
) -> None:
    before = len(client.http.get("/v1/documents").json())
    r = client.upload(corpus_file(name))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["detail"]
    assert reason in problem["detail"].lower()
    assert len(client.http.get("/v1/documents").json()) == before


def test_oversized_upload_is_refused_with_413(client: DeckstreamClient, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"lorem ipsum dolor sit amet\n" * (4 * 1024 * 1024 // 27))
    r = client.upload(big)
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_a_file_that_fails_late_ends_failed_with_the_reason(client: DeckstreamClient) -> None:
    # Image-only pages and no text layer: accepted at upload, found empty by extraction.
    r = client.upload(corpus_file("samplefiles_imagemagick-images_no-text.pdf"))
    assert r.status_code == 202, r.text
    events = follow(client, r.json()["document_id"])
    final = events[-1].data
    assert events[-1].event == "done"
    assert final["status"] == "failed"
    assert final["error"]
    pages = [e.data for e in events if e.event == "page"]
    assert len(pages) == 6 and all(p["reason"] for p in pages if p["chars"] == 0)
    ledger = client.http.get(f"/v1/documents/{r.json()['document_id']}/pages").json()
    assert [p["number"] for p in ledger["pages"]] == [1, 2, 3, 4, 5, 6]
    assert all(p["method"] in ("text", "ocr", "skipped") and p["reason"] for p in ledger["pages"])


def test_auth_is_required(stack: Stack) -> None:
    import httpx

    assert stack.api_url is not None
    r = httpx.get(f"{stack.api_url}/v1/documents")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (
        httpx.get(f"{stack.api_url}/v1/documents", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert httpx.get(f"{stack.api_url}/healthz").status_code == 200
    ready = httpx.get(f"{stack.api_url}/readyz").json()
    assert ready["status"] == "ready" and ready["checks"]["kafka"] == "ok"


def test_unknown_document_is_404(client: DeckstreamClient) -> None:
    r = client.http.get("/v1/documents/nope")
    assert r.status_code == 404
    assert r.json()["status"] == 404


def test_cancel_stops_a_long_document_and_keeps_its_cards(client: DeckstreamClient) -> None:
    r = client.upload(corpus_file("freeculture_lessig_352p.pdf"))
    assert r.status_code == 202, r.text
    doc = r.json()["document_id"]
    seen: list[SSEEvent] = []
    for ev in client.events(doc, timeout_s=300):
        seen.append(ev)
        if ev.event == "card":
            break
    c = client.http.post(f"/v1/documents/{doc}/cancel")
    assert c.status_code == 202, c.text
    rest = follow(client, doc, deadline_s=120)
    final = rest[-1].data
    assert rest[-1].event == "done" and final["status"] == "cancelled"
    assert final["chunks_done"] < final["chunks_total"] or final["chunks_total"] == 0
    deck = client.deck(doc).json()
    assert deck["status"] == "cancelled" and len(deck["cards"]) >= 1
    again = client.http.post(f"/v1/documents/{doc}/cancel")
    assert again.status_code == 409
