"""`python -m bench pipeline`: a 352-page book through the real broker and workers.

The LLM is `deckstream llm sim` (capacity 64, 50 ms per call, instant decode), so the figures
measure our pipeline, not a model. Reports wall time from upload to `done`, the ideal time the
simulator's capacity allows for the same number of chunks, their ratio, time to first card,
and upload latency p50/p99 over a series of small uploads. Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_api_for, start_worker_for
from infra.kafka.launcher import ensure_topics, start_broker, stop_broker
from services import topics
from services.llm_sim import SimConfig, ideal_time
from services.process import die_with_parent, free_port, terminate, wait_until
from services.settings import Settings

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BOOK = CORPUS / "freeculture_lessig_352p.pdf"
SMALL = CORPUS / "bee4750_syllabus.docx"
TOKEN = "bench-token-0123456789"
SIM = SimConfig(latency_s=0.05, capacity=64, tokens_per_s=0.0)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _run(client: DeckstreamClient, path: Path) -> dict[str, float | int | str]:
    t0 = time.monotonic()
    r = client.upload(path)
    upload_s = time.monotonic() - t0
    r.raise_for_status()
    first_card = None
    final: dict[str, object] = {}
    for ev in client.events(r.json()["document_id"]):
        if ev.event == "card" and first_card is None:
            first_card = time.monotonic() - t0
        if ev.event == "done":
            final = ev.data
    wall = time.monotonic() - t0
    return {
        "wall_s": wall,
        "upload_s": upload_s,
        "first_card_s": first_card or -1.0,
        "chunks": int(final["chunks_total"]),
        "pages": int(final["pages_total"]),  # type: ignore[call-overload]
        "cards": int(final["cards"]),
        "status": str(final["status"]),
    }  # type: ignore[call-overload]


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    broker = start_broker(home, heap="512m")
    sim_port = free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deckstream",
            "llm",
            "sim",
            "--port",
            str(sim_port),
            "--latency",
            str(SIM.latency_s),
            "--capacity",
            str(SIM.capacity),
            "--tokens-per-s",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    stack: Stack | None = None
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_until(lambda: _healthy(sim_url), 30, what="the LLM simulator")
        settings = Settings.model_validate(
            {
                "home": home,
                "kafka": {"bootstrap": broker.bootstrap, "partitions": 4},
                "llm": {
                    "url": sim_url,
                    "model": "deckstream-sim",
                    "profile": "chat",
                    "max_in_flight": SIM.capacity,
                },
                "api": {"port": 0, "token": TOKEN},
            }
        )
        (home / "logs").mkdir()
        stack = Stack(settings, home / "logs")
        start_worker_for(stack)
        start_api_for(stack)
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
            _run(client, SMALL)  # warm-up: group joins, first connections
            book = _run(client, BOOK)
            uploads = []
            for _ in range(30):
                t0 = time.monotonic()
                client.upload(SMALL).raise_for_status()
                uploads.append(time.monotonic() - t0)
        ideal = ideal_time(int(book["chunks"]), SIM)
        result = {
            "bench": "pipeline",
            "file": BOOK.name,
            "pages": book["pages"],
            "chunks": book["chunks"],
            "cards": book["cards"],
            "status": book["status"],
            "sim": {"capacity": SIM.capacity, "latency_s": SIM.latency_s},
            "wall_s": round(float(book["wall_s"]), 3),
            "ideal_s": round(ideal, 3),
            "ratio": round(float(book["wall_s"]) / ideal, 2),
            "time_to_first_card_s": round(float(book["first_card_s"]), 3),
            "upload_book_s": round(float(book["upload_s"]), 3),
            "upload_p50_ms": round(statistics.median(uploads) * 1000, 1),
            "upload_p99_ms": round(_pct(uploads, 99) * 1000, 1),
        }
        sys.stdout.write(json.dumps(result) + "\n")
    finally:
        if stack is not None:
            stack.stop()
        terminate(sim)
        stop_broker(broker)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
