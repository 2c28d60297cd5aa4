"""Shared fixtures. The broker and the LLM server start once per test run (session scope)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deckstream.client import DeckstreamClient, SSEEvent
from deckstream.corpus import CORPUS
from deckstream.stack import Stack, settings_env, start_api_for, start_stack
from infra.llm.sim import SimConfig
from infra.process import terminate
from services.settings import Settings

TOKEN = "test-token-" + "x" * 16


def pytest_sessionstart(session: pytest.Session) -> None:
    # Outside CI a missing corpus skips its tests; in CI that would be a green run that tested less.
    if os.environ.get("CI") and not CORPUS.is_dir():
        raise pytest.UsageError(f"the shared corpus is not at {CORPUS} (set DECKSTREAM_CORPUS)")


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"corpus file {name} not found in {CORPUS}")
    return path


def scanned_pdf(path: Path, source: Path, pages: range) -> Path:
    """A scan of some of a PDF's pages: each page an image at 100 DPI, no text layer (OCR)."""
    import pymupdf

    src, out = pymupdf.open(source), pymupdf.open()
    for i in pages:
        image = src[i].get_pixmap(dpi=100, colorspace=pymupdf.csGRAY)
        page = out.new_page(width=src[i].rect.width, height=src[i].rect.height)
        page.insert_image(page.rect, stream=image.tobytes("png"))
    out.save(path, deflate=True)
    return path


@pytest.fixture(scope="session")
def test_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deckstream-home")


@pytest.fixture(scope="session")
def kafka_bootstrap(test_home: Path) -> Iterator[str]:
    """A real single-node Kafka broker with every pipeline topic, for the whole run."""
    from infra.kafka.admin import ensure_topics
    from infra.kafka.launcher import start_broker, stop_broker
    from services.events import topics

    broker = start_broker(test_home, heap="512m", timeout_s=180)
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        yield broker.bootstrap
    finally:
        stop_broker(broker)


@pytest.fixture(scope="session")
def llm_url(test_home: Path) -> Iterator[str]:
    """The real llama.cpp server (xllamacpp) with Gemma 3 270M, for the whole run.

    One slot, and one call at a time from the worker (`stack_settings`): each call then samples
    on its own with the seed the worker takes from the chunk, so a document gets the same cards
    on every run. With two slots the batch changed the answers: the syllabus once gave no card
    at all. One slot was also faster here (2 cores): 124-129 s for the pipeline tests, not 150.
    """
    from infra.llm.server import start_local_llm

    server = start_local_llm(
        "gemma3-270m",
        cache=test_home / "models",
        n_parallel=1,
        ctx_per_slot=2048,
        threads=os.cpu_count() or 2,
    )
    try:
        yield server.url
    finally:
        server.stop()


def stack_settings(home: Path, bootstrap: str, llm_url: str, **overrides: object) -> Settings:
    """Settings of the test stack: the tiny model, few tokens, small limits."""
    values: dict[str, object] = {
        "home": home,
        "kafka": {"bootstrap": bootstrap, "partitions": 4},
        "llm": {
            "url": llm_url,
            "model": "gemma3-270m",
            "max_in_flight": 1,
            "max_tokens": 160,
            "timeout_s": 60,
        },
        "chunks": {"max_tokens": 500},
        "api": {"port": 0, "token": TOKEN, "sse_ping_s": 1},
        "limits": {"max_upload_bytes": 3 * 1024 * 1024, "extract_timeout_s": 120},
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """`deckstream llm sim` (8 slots, 50 ms a call) for one test module."""
    from bench.harness import start_sim

    proc, url = start_sim(SimConfig(latency_s=0.05, capacity=8))
    yield url
    terminate(proc)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    sim_url: str,
) -> Iterator[Stack]:
    """A worker and API on the session's broker, writing cards with the module's simulator (a
    module may define its own `stack`)."""
    llm = {"url": sim_url, "model": "deckstream-sim", "profile": "chat", "max_in_flight": 8}
    home = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "home"
    running = start_stack(stack_settings(home, kafka_bootstrap, sim_url, llm=llm), api=True)
    yield running
    running.stop()


def run_cli(
    stack: Stack, *args: str, timeout_s: float = 180, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`deckstream ARGS` with the stack's settings (and `stdin` on its standard input); its
    output as text."""
    return subprocess.run(
        [sys.executable, "-m", "deckstream", *args],
        env=settings_env(stack.settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=stdin,
    )


def restart_api(stack: Stack) -> None:
    """Stop the stack's API and start a new one on the same home (a new port)."""
    api = next(p for p in stack.children if p.pid == stack.pids["api"])
    terminate(api)
    stack.children.remove(api)
    stack.pids.pop("api")
    stack.settings.api.port = 0
    start_api_for(stack)


@pytest.fixture()
def client(stack: Stack) -> Iterator[DeckstreamClient]:
    """A client of the API of the module's `stack` fixture (a worker and API on real parts)."""
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as c:
        yield c


def upload_until_a_card(client: DeckstreamClient, name: str) -> tuple[str, list[SSEEvent]]:
    """Upload a corpus file; its SSE events up to the first card."""
    r = client.upload(corpus_file(name))
    assert r.status_code == 202, r.text
    doc = str(r.json()["document_id"])
    seen: list[SSEEvent] = []
    for ev in client.events(doc, timeout_s=120):
        seen.append(ev)
        if ev.event == "card":
            break
    assert seen[-1].event == "card", [e.event for e in seen[-5:]]
    return doc, seen
