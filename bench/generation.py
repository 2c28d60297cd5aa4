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
import sys
from pathlib import Path

from bench.harness import BOOK, deck_size, run_document, sim_stack
from bench.pipeline import SIM
from services.domain import Page
from services.extraction import extract
from services.llm_sim import ideal_time
from services.settings import LimitSettings


def words_of(path: Path) -> int:
    """Words of the extracted text, as the pipeline extracts it."""
    return sum(
        len(ev.text.split())
        for ev in extract(path, LimitSettings(), filename=path.name)
        if isinstance(ev, Page)
    )


def main() -> None:
    words = words_of(BOOK)
    with sim_stack(SIM) as run:
        before = run.sim_stats()
        first = run_document(run.client, BOOK)
        between = run.sim_stats()
        first["deck_cards"] = deck_size(run.client, first["document_id"])
        second = run_document(run.client, BOOK)  # the same chunks: served by the result cache
        after = run.sim_stats()
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
        "first_card_to_done_s": round(first["wall_s"] - first_card, 3) if first_card is not None else None,
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


if __name__ == "__main__":
    main()
