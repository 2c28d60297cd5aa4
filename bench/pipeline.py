"""`python -m bench pipeline`: a 352-page book through the real broker and workers.

The LLM is `deckstream llm sim` (capacity 64, 50 ms per call, instant decode), so the figures
measure our pipeline, not a model. Reports wall time from upload to `done`, the ideal time the
simulator's capacity allows for the same number of chunks, their ratio, time to first card,
and upload latency p50/p99 over a series of small uploads. Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from bench.harness import BOOK, SMALL, run_document, sim_stack
from infra.llm.sim import SimConfig, ideal_time

SIM = SimConfig(latency_s=0.05, capacity=64, tokens_per_s=0.0)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    with sim_stack(SIM) as run:
        book = run_document(run.client, BOOK)
        uploads = []
        for _ in range(30):
            t0 = time.monotonic()
            run.client.upload(SMALL).raise_for_status()
            uploads.append(time.monotonic() - t0)
    ideal = ideal_time(book["chunks"], SIM)
    result = {
        "bench": "pipeline",
        "file": BOOK.name,
        "pages": book["pages"],
        "chunks": book["chunks"],
        "cards": book["cards"],
        "status": book["status"],
        "sim": {"capacity": SIM.capacity, "latency_s": SIM.latency_s},
        "wall_s": round(book["wall_s"], 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(book["wall_s"] / ideal, 2),
        "time_to_first_card_s": round(book["first_card_s"] or -1.0, 3),
        "upload_book_s": round(book["upload_s"], 3),
        "upload_p50_ms": round(statistics.median(uploads) * 1000, 1),
        "upload_p99_ms": round(_pct(uploads, 99) * 1000, 1),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
