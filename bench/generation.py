"""`python -m bench generation`: card generation for a 352-page book, then the same book again.

The LLM is `deckstream llm sim` (capacity 64, 50 ms per call, instant decode), so the figures
measure how well the pipeline keeps the LLM busy: wall time from upload to `done` against the
ideal the simulator's capacity allows for the same number of chunks (target ratio ≤ 1.15),
time to first card (target < 3 s), chunks, cards and cards per 1000 words of extracted text.
The second upload of the same file is served by the result cache: its wall time, and the LLM
calls it made (target ~0). Last line: one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.pipeline import BOOK, SIM, SMALL, TOKEN, _healthy
from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_api_for, start_worker_for
from infra.kafka.launcher import ensure_topics, start_broker, stop_broker
from services import topics
from services.domain import Page
from services.extraction import extract
from services.llm_sim import SimConfig, ideal_time
from services.process import die_with_parent, free_port, terminate, wait_until
from services.settings import LimitSettings, Settings

TERMINAL = ("completed", "partial", "failed", "cancelled")


def start_sim(cfg: SimConfig) -> tuple[subprocess.Popen[bytes], str]:
    """`deckstream llm sim` with cfg's capacity and latency, healthy; the caller terminates it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deckstream", "llm", "sim", "--port", str(port), *_shape(cfg)],
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


def _shape(cfg: SimConfig) -> list[str]:
    return ["--latency", str(cfg.latency_s), "--capacity", str(cfg.capacity), "--tokens-per-s", "0"]


def sim_stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/stats", timeout=5).json()  # type: ignore[no-any-return]


def bench_settings(home: Path, bootstrap: str, sim_url: str, cfg: SimConfig) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "kafka": {"bootstrap": bootstrap, "partitions": 4},
            "llm": {
                "url": sim_url,
                "model": "deckstream-sim",
                "profile": "chat",
                "max_in_flight": cfg.capacity,
            },
            "api": {"port": 0, "token": TOKEN},
        }
    )


def run_document(
    client: DeckstreamClient, path: Path, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload, follow the SSE stream to `done`; times are seconds from the upload request."""
    t0 = time.monotonic()
    r = client.upload(path, options=options)
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


def words_of(path: Path) -> int:
    """Words of the extracted text, as the pipeline extracts it."""
    return sum(
        len(ev.text.split())
        for ev in extract(path, LimitSettings(), filename=path.name)
        if isinstance(ev, Page)
    )


def main() -> None:
    words = words_of(BOOK)
    home = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    broker = start_broker(home, heap="512m")
    sim, sim_url = None, ""
    stack: Stack | None = None
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        sim, sim_url = start_sim(SIM)
        (home / "logs").mkdir()
        stack = Stack(bench_settings(home, broker.bootstrap, sim_url, SIM), home / "logs")
        start_worker_for(stack)
        start_api_for(stack)
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
            run_document(client, SMALL)  # warm-up: group joins, first connections
            before = sim_stats(sim_url)
            first = run_document(client, BOOK)
            between = sim_stats(sim_url)
            first["deck_cards"] = deck_size(client, first["document_id"])
            second = run_document(client, BOOK)  # the same chunks: served by the result cache
            after = sim_stats(sim_url)
        first_calls = between["requests"] - before["requests"]
        second_calls = after["requests"] - between["requests"]
        max_concurrent = between["max_concurrent"]
        ideal = ideal_time(first["chunks"], SIM)
        first_card = first["first_card_s"]
        result = {
            "bench": "generation",
            "file": BOOK.name,
            "pages": first["pages"],
            "words": words,
            "chunks": first["chunks"],
            "chunks_failed": first["chunks_failed"],
            "status": first["status"],
            "sim": {"capacity": SIM.capacity, "latency_s": SIM.latency_s, "max_concurrent": max_concurrent},
            "wall_s": round(first["wall_s"], 3),
            "ideal_s": round(ideal, 3),
            "ratio": round(first["wall_s"] / ideal, 2),
            "ratio_target": 1.15,
            "time_to_first_card_s": round(first_card, 3) if first_card is not None else None,
            "time_to_first_card_target_s": 3.0,
            "first_card_to_done_s": round(first["wall_s"] - first_card, 3)
            if first_card is not None
            else None,
            "chunks_planned_s": round(first["chunks_planned_s"] or -1.0, 3),
            "llm_calls": first_calls,
            "cards": first["cards"],
            "deck_cards": first["deck_cards"],
            "cards_per_1000_words": round(first["cards"] * 1000 / words, 2),
            "deck_cards_per_1000_words": round(first["deck_cards"] * 1000 / words, 2),
            "cached_run": {
                "wall_s": round(second["wall_s"], 3),
                "chunks_planned_s": round(second["chunks_planned_s"] or -1.0, 3),
                "llm_calls": second_calls,
                "chunks": second["chunks"],
                "cards": second["cards"],
                "status": second["status"],
            },
        }
        sys.stdout.write(json.dumps(result) + "\n")
    finally:
        if stack is not None:
            stack.stop()
        if sim is not None:
            terminate(sim)
        stop_broker(broker)


if __name__ == "__main__":
    main()
