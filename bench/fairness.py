"""`python -m bench fairness`: does a small upload wait behind a 352-page book?

The LLM is `deckstream llm sim` at capacity 8 and 200 ms per call, so the book keeps every slot
busy for a while. A 9-page document is measured alone (upload to `done`); then the book is
uploaded, and 5 s later the small document again. The small document's time with the book in
the way, over its time alone, is the figure (target ≤ 2). The card cache is emptied before the
second small upload so that it calls the LLM like the first one. Last line: one JSON object.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.generation import bench_settings, run_document, sim_stats, start_sim
from bench.pipeline import BOOK, CORPUS, SMALL, TOKEN
from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_api_for, start_worker_for
from infra.kafka.launcher import ensure_topics, start_broker, stop_broker
from services import topics
from services.llm_sim import SimConfig
from services.process import terminate

SIM = SimConfig(latency_s=0.2, capacity=8, tokens_per_s=0.0)
TEN_PAGES = CORPUS / "bee4750_hw01_julia-intro.pdf"
HEAD_START_S = 5.0


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    broker = start_broker(home, heap="512m")
    sim, sim_url = None, ""
    stack: Stack | None = None
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        sim, sim_url = start_sim(SIM)
        (home / "logs").mkdir()
        settings = bench_settings(home, broker.bootstrap, sim_url, SIM)
        stack = Stack(settings, home / "logs")
        start_worker_for(stack)
        start_api_for(stack)
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
            run_document(client, SMALL)  # warm-up: group joins, first connections
            alone = run_document(client, TEN_PAGES)

            r = client.upload(BOOK)
            r.raise_for_status()
            book = r.json()["document_id"]
            time.sleep(HEAD_START_S)  # let the book fill the LLM's slots
            shutil.rmtree(settings.blob_dir / "cache", ignore_errors=True)  # no cache hits
            before = sim_stats(sim_url)["requests"]
            contended = run_document(client, TEN_PAGES)
            calls = sim_stats(sim_url)["requests"] - before
            book_then = client.status(book)
            if book_then["status"] not in ("completed", "partial", "failed", "cancelled"):
                client.http.post(f"/v1/documents/{book}/cancel")  # the rest of the book is not measured
        result = {
            "bench": "fairness",
            "small": TEN_PAGES.name,
            "small_pages": alone["pages"],
            "small_chunks": alone["chunks"],
            "book": BOOK.name,
            "sim": {"capacity": SIM.capacity, "latency_s": SIM.latency_s},
            "alone_s": round(alone["wall_s"], 3),
            "with_book_s": round(contended["wall_s"], 3),
            "ratio": round(contended["wall_s"] / alone["wall_s"], 2),
            "ratio_target": 2.0,
            "status_alone": alone["status"],
            "status_with_book": contended["status"],
            "llm_calls_while_small_ran": calls,
            "book_when_small_done": {
                "status": book_then["status"],
                "chunks_done": book_then["chunks_done"],
                "chunks_total": book_then["chunks_total"],
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
