"""`python -m bench fairness`: does a small upload wait behind a 352-page book?

The LLM is `deckstream llm sim` at capacity 8 and 200 ms per call, so the book keeps every slot
busy for a while. A 9-page document is measured alone (upload to `done`); then the book is
uploaded, and 5 s later the small document again. The small document's time with the book in
the way, over its time alone, is the figure (target ≤ 2). The card cache is emptied before the
second small upload so that it calls the LLM like the first one. Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys
import time

from bench.harness import BOOK, CORPUS, TERMINAL, run_document, sim_stack
from infra.llm.sim import SimConfig

SIM = SimConfig(latency_s=0.2, capacity=8, tokens_per_s=0.0)
TEN_PAGES = CORPUS / "bee4750_hw01_julia-intro.pdf"
HEAD_START_S = 5.0


def _r(seconds: float | None) -> float | None:
    return round(seconds, 3) if seconds is not None else None


def main() -> None:
    with sim_stack(SIM) as run:
        client = run.client
        alone = run_document(client, TEN_PAGES)
        r = client.upload(BOOK)
        r.raise_for_status()
        book = r.json()["document_id"]
        time.sleep(HEAD_START_S)  # let the book fill the LLM's slots
        run.forget_cards()  # no cache hits
        before = run.sim_stats()["requests"]
        contended = run_document(client, TEN_PAGES)
        calls = run.sim_stats()["requests"] - before
        book_then = client.status(book)
        if book_then["status"] not in TERMINAL:
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
        "first_card_s": {"alone": _r(alone["first_card_s"]), "with_book": _r(contended["first_card_s"])},
        "chunks_planned_s": {
            "alone": _r(alone["chunks_planned_s"]),
            "with_book": _r(contended["chunks_planned_s"]),
        },
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


if __name__ == "__main__":
    main()
