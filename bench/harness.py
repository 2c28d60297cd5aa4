"""What the pipeline benches share: a real broker, `deckstream llm sim`, a worker and the API.

    with sim_stack(SimConfig(capacity=64, latency_s=0.05)) as run:
        figures = run_document(run.client, BOOK)

Everything runs as local processes and is stopped (and its folder removed) on exit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deckstream.client import DeckstreamClient
from deckstream.corpus import CORPUS
from deckstream.stack import Stack, start_stack
from infra.kafka.admin import ensure_topics
from infra.kafka.launcher import start_broker, stop_broker
from infra.llm.sim import SimConfig
from infra.process import die_with_parent, free_port, terminate, wait_until
from services.events import topics
from services.settings import Settings

BOOK = CORPUS / "freeculture_lessig_352p.pdf"
SMALL = CORPUS / "bee4750_syllabus.docx"
TOKEN = "bench-token-0123456789"
TERMINAL = ("completed", "partial", "failed", "cancelled")


@dataclass
class BenchStack:
    client: DeckstreamClient
    llm_url: str
    stack: Stack
    pids: dict[str, int]  # the processes a run costs CPU in: broker, worker, api (simulator)

    @property
    def settings(self) -> Settings:
        return self.stack.settings

    def forget_cards(self) -> None:
        """Empty the result cache, so the next run pays for its LLM calls."""
        shutil.rmtree(self.settings.blob_dir / "cache", ignore_errors=True)

    def sim_stats(self) -> dict[str, int]:
        return httpx.get(f"{self.llm_url}/stats", timeout=5).json()  # type: ignore[no-any-return]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_sim(cfg: SimConfig) -> tuple[subprocess.Popen[bytes], str]:
    """`deckstream llm sim` with cfg's capacity and latency, healthy; the caller terminates it."""
    port = free_port()
    shape = [
        "--latency",
        str(cfg.latency_s),
        "--capacity",
        str(cfg.capacity),
        "--tokens-per-s",
        str(cfg.tokens_per_s),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deckstream", "llm", "sim", "--port", str(port), *shape],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), 30, what="the LLM simulator")
    except BaseException:
        terminate(proc)
        raise
    return proc, url


@contextmanager
def sim_stack(
    cfg: SimConfig, *, analytics: bool = True, clickhouse: dict[str, Any] | None = None
) -> Iterator[BenchStack]:
    """A broker, `deckstream llm sim` shaped by cfg, a worker and the API (with its analytics
    sink unless `analytics` is False; `clickhouse`: more of its settings)."""
    sim, sim_url = start_sim(cfg)
    try:
        with llm_stack(
            sim_url,
            "deckstream-sim",
            cfg.capacity,
            profile="chat",
            analytics=analytics,
            clickhouse=clickhouse,
        ) as run:
            run.pids["simulator"] = sim.pid
            yield run
    finally:
        terminate(sim)


@contextmanager
def llm_stack(
    url: str,
    model: str,
    capacity: int,
    profile: str = "auto",
    *,
    analytics: bool = True,
    clickhouse: dict[str, Any] | None = None,
) -> Iterator[BenchStack]:
    """A broker, a worker and the API using the LLM server at url with `capacity` in flight."""
    home = Path(tempfile.mkdtemp(prefix="bench-"))
    broker = start_broker(home, heap="512m")
    stack: Stack | None = None
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        settings = Settings.model_validate(
            {
                "home": home,
                "kafka": {"bootstrap": broker.bootstrap, "partitions": 4},
                "llm": {"url": url, "model": model, "profile": profile, "max_in_flight": capacity},
                "api": {"port": 0, "token": TOKEN},
                "clickhouse": {"enabled": analytics, **(clickhouse or {})},
            }
        )
        stack = start_stack(settings, api=True)
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
            run = BenchStack(client, url, stack, {"broker": broker.pid} | stack.pids)
            run_document(client, SMALL)  # warm-up: group joins, first connections
            run.forget_cards()  # ...whose cards must not serve the measured runs (`--file` may be SMALL)
            yield run
    finally:
        if stack is not None:
            stack.stop()
        stop_broker(broker)
        shutil.rmtree(home, ignore_errors=True)


def run_document(
    client: DeckstreamClient, path: Path, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload, follow the SSE stream to `done`; times are seconds from the upload request."""
    t0 = time.monotonic()
    r = client.upload(path, options=options)
    upload_s = time.monotonic() - t0
    r.raise_for_status()
    doc = r.json()["document_id"]
    first_card = planned = None
    final: dict[str, Any] = {}
    for ev in client.events(doc, timeout_s=900):
        if ev.event == "card" and first_card is None:
            first_card = time.monotonic() - t0
        if ev.event == "progress" and planned is None and ev.data["chunks_total"] > 0:
            planned = time.monotonic() - t0  # extraction and chunking ended, as the tracker saw it
        if ev.event == "done":
            final = ev.data
    return {
        "document_id": doc,
        "wall_s": time.monotonic() - t0,
        "upload_s": upload_s,
        "first_card_s": first_card,
        "chunks_planned_s": planned,
        "chunks": int(final["chunks_total"]),
        "chunks_failed": int(final["chunks_failed"]),
        "pages": int(final["pages_total"]),
        "cards": int(final["cards"]),
        "status": str(final["status"]),
    }


def deck_size(client: DeckstreamClient, doc: str) -> int:
    """Cards in the assembled deck (after cross-chunk dedup), once the deck is in."""

    def settled() -> dict[str, Any] | None:
        s = client.status(doc)
        return s if s["status"] in TERMINAL and s.get("deck_cards") is not None else None

    return int(wait_until(settled, 60, interval=0.2, what="the deck")["deck_cards"])
