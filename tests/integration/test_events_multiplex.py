"""One event stream for many documents (`GET /v1/events`) on the live stack: a real broker,
worker and API, the LLM simulator writing cards.

A stream of the whole tenant, opened before anything is uploaded, shows two uploads to `done`;
a stream of the two, dropped mid-book and resumed with its last id, tells each document exactly
what the uninterrupted one told; another tenant's document is refused like a missing one and
never shows on that tenant's stream; the caps count such a stream once; and every stream, once
its client is gone, lets go of its place (the API's `deckstream_sse_clients` returns to zero).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import start_sim
from deckstream.client import DeckstreamClient, SSEEvent
from deckstream.stack import Stack
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from tests.conftest import TOKEN, corpus_file, restart_api, run_cli
from tests.unit.test_metrics import scrape

pytestmark = pytest.mark.kafka
BOOK = "py4e_python-for-everybody_book.docx"
SMALL = "bee4750_syllabus.docx"
TERMINAL = ("completed", "partial", "failed", "cancelled")
NOTES = "Photosynthesis turns light into chemical energy. Chlorophyll absorbs red and blue light.\n"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    # 200 ms a call: the book takes ~10 s of LLM work, so a stream dropped at its first card
    # drops mid-book (as in test_broker_faults.py).
    proc, url = start_sim(SimConfig(latency_s=0.2, capacity=8))
    yield url
    terminate(proc)


@pytest.fixture(scope="module")
def tenant_b(stack: Stack) -> str:
    """A second tenant's API key."""
    done = run_cli(stack, "tenants", "add", f"school-{uuid.uuid4().hex[:6]}", timeout_s=120)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    wait_until(lambda: answer(stack, key, "/v1/documents").status_code == 200, 10, what="B's key to count")
    return key


def answer(stack: Stack, key: str, path: str, **headers: str) -> httpx.Response:
    """A whole answer (a stream that ends, or a refusal)."""
    assert stack.api_url is not None
    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        return http.get(path, headers={"Authorization": f"Bearer {key}", **headers})


def open_streams(stack: Stack) -> float:
    assert stack.api_url is not None
    metrics = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
    return scrape(metrics)["deckstream_sse_clients"][()]


def until_streams(stack: Stack, n: int, what: str) -> None:
    wait_until(lambda: open_streams(stack) == n, 15, interval=0.1, what=what)


def upload(client: DeckstreamClient, path: Path) -> str:
    r = client.upload(path)
    assert r.status_code == 202, r.text
    return str(r.json()["document_id"])


def per_document(events: list[SSEEvent], docs: set[str]) -> dict[str, list[tuple[str, Any]]]:
    out: dict[str, list[tuple[str, Any]]] = {doc: [] for doc in docs}
    for e in events:
        if e.data["document_id"] in docs:
            out[e.data["document_id"]].append((e.event, e.data))
    return out


class Follower(threading.Thread):
    """Follows every document of a tenant on one stream, from before the uploads, until each of
    `wanted` (set later) has sent `done`; then it closes the stream."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.wanted: set[str] = set()
        self.known = threading.Event()
        self.seen: list[SSEEvent] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with DeckstreamClient(self.url, self.key) as client:
                done: set[str] = set()
                for e in client.events_of(timeout_s=300):
                    self.seen.append(e)
                    if e.event == "done":
                        done.add(e.data["document_id"])
                    if self.known.is_set() and self.wanted <= done:
                        return
        except BaseException as exc:  # the test thread reports it
            self.error = exc


def test_two_uploads_on_one_stream_to_done_and_a_stream_dropped_mid_book_resumes_whole(
    stack: Stack, client: DeckstreamClient
) -> None:
    assert stack.api_url is not None
    everything = Follower(stack.api_url, TOKEN)
    everything.start()
    until_streams(stack, 1, "the tenant's stream to open")
    book, small = upload(client, corpus_file(BOOK)), upload(client, corpus_file(SMALL))
    everything.wanted, docs = {book, small}, [book, small]
    everything.known.set()

    before: list[SSEEvent] = []
    for e in client.events_of(docs, timeout_s=120):
        before.append(e)
        if e.event == "card" and e.data["document_id"] == book:
            break  # the connection drops
    assert client.status(book)["status"] not in TERMINAL, "the book was done before the drop"
    until_streams(stack, 1, "the dropped stream to let go of its place")
    after = list(client.events_of(docs, last_event_id=before[-1].id, timeout_s=300))
    everything.join(timeout=300)
    assert everything.error is None and not everything.is_alive(), everything.error

    resumed, whole = per_document(before + after, {book, small}), per_document(everything.seen, {book, small})
    for doc in docs:
        names = [name for name, _ in whole[doc]]
        assert names[-1] == "done" and whole[doc][-1][1]["status"] in ("completed", "partial"), names[-3:]
        assert "page" in names and "card" in names, names
        assert whole[doc][-1][1]["cards"] == names.count("card")  # every card once
        assert resumed[doc] == whole[doc], f"{doc}: the resumed stream differs from the whole one"
    assert len({e.id for e in before + after}) == len(before + after)
    # A browser reconnects to the stream that ended: 204, so that it stops.
    again = answer(stack, TOKEN, f"/v1/events?documents={small},{book}", **{"Last-Event-ID": after[-1].id})
    assert again.status_code == 204, again.text
    until_streams(stack, 0, "every stream to let go of its place")


def test_another_tenants_document_is_refused_like_a_missing_one_and_never_shown(
    stack: Stack, client: DeckstreamClient, tenant_b: str, tmp_path: Path
) -> None:
    ours, fake = upload(client, corpus_file(SMALL)), uuid.uuid4().hex
    theirs = answer(stack, tenant_b, f"/v1/events?documents={ours}")
    nobody = answer(stack, tenant_b, f"/v1/events?documents={fake}")
    assert theirs.status_code == 404 and theirs.headers["content-type"] == "application/problem+json"
    assert theirs.json() == {**nobody.json(), "detail": nobody.json()["detail"].replace(fake, ours)}
    bad = answer(stack, tenant_b, "/v1/events", **{"Last-Event-ID": "0-12-3"})
    assert bad.status_code == 400 and bad.json()["type"].endswith("/bad-last-event-id"), bad.text

    # B's stream of all its documents, opened while it has none: pings keep it open; B's upload
    # shows up on it, and nothing of the operator's tenant ever does.
    assert stack.api_url is not None
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {tenant_b}"}
        with http.stream("GET", "/v1/events", headers=headers) as r:
            assert r.status_code == 200
            assert next(line for line in r.iter_lines() if line).startswith(": ping")
    until_streams(stack, 0, "the pinged stream to let go of its place")
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES * 10)
    with DeckstreamClient(stack.api_url, tenant_b) as b:
        mine = b.events_of(timeout_s=120)
        uploaded: list[str] = []
        uploader = threading.Thread(
            target=lambda: (until_streams(stack, 1, "B's stream to open"), uploaded.append(upload(b, notes)))
        )
        uploader.start()
        seen = []
        for e in mine:
            seen.append(e)
            if e.event == "done":
                break
        mine.close()
        uploader.join(timeout=30)
    assert {e.data["document_id"] for e in seen} == set(uploaded) and len(uploaded) == 1
    assert seen[-1].data["status"] in ("completed", "partial")
    until_streams(stack, 0, "B's stream to let go of its place")


def test_a_stream_of_many_counts_once_against_the_tenants_and_the_servers_caps(
    stack: Stack, tenant_b: str
) -> None:
    # Last in this module: the API keeps these caps.
    stack.settings.quotas.sse_streams, stack.settings.api.max_subscribers = 2, 3
    restart_api(stack)
    assert stack.api_url is not None
    theirs = [d["document_id"] for d in answer(stack, tenant_b, "/v1/documents").json()]
    assert theirs and len(answer(stack, TOKEN, "/v1/documents").json()) >= 2

    def opened(streams: ExitStack, key: str, path: str) -> httpx.Response:
        r = streams.enter_context(http.stream("GET", path, headers={"Authorization": f"Bearer {key}"}))
        if r.status_code != 200:
            r.read()
        return r

    with httpx.Client(base_url=stack.api_url, timeout=30) as http, ExitStack() as all_open:
        first = ExitStack()
        all_open.enter_context(first)
        assert opened(first, tenant_b, "/v1/events").status_code == 200
        assert opened(all_open, tenant_b, "/v1/events").status_code == 200
        for path in (f"/v1/events?documents={theirs[0]}", f"/v1/documents/{theirs[0]}/events"):
            refused = opened(all_open, tenant_b, path)
            assert refused.status_code == 429 and refused.json()["limit"] == "sse_streams", path
            assert int(refused.headers["retry-after"]) >= 1
        # The operator is held to no tenant cap, only the server's, which counts the same way:
        # a stream of all its documents is one.
        assert opened(all_open, TOKEN, "/v1/events").status_code == 200
        full = opened(all_open, TOKEN, "/v1/events")
        assert full.status_code == 503 and full.json()["limit"] == "max_subscribers"
        assert open_streams(stack) == 3

        first.close()  # B's first stream goes away: its place is free again
        until_streams(stack, 2, "B's first stream to let go of its place")
        assert opened(all_open, tenant_b, f"/v1/events?documents={theirs[0]}").status_code == 200
    until_streams(stack, 0, "every stream to let go of its place")
