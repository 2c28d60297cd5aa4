"""`python -m bench replay`: reprocessing a finished 352-page book with an unchanged prompt (every
chunk's answer from the result cache) against its first run, side by side in one run.

The LLM is `deckstream llm sim` shaped like vLLM on a GPU (0.3 s to the first token, 20
tokens/s per request, 64 in flight: bench/generation.py's `gpu_model`), so the first run pays
for its LLM calls as it would in production. The replay goes through the API
(`POST /v1/documents/{id}/reprocess`) and is followed over SSE to `done`, like a client would.
Reported for each: wall time, LLM calls, and the CPU each process used; then the replay's share
of the first run's wall time and CPU. Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.cpu import cpu_meter
from bench.generation import GPU_MODEL
from bench.harness import BOOK, BenchStack, run_document, sim_stack


def _replay(run: BenchStack, doc: str) -> dict[str, Any]:
    t0 = time.monotonic()
    r = run.client.http.post(f"/v1/documents/{doc}/reprocess")
    r.raise_for_status()
    final: dict[str, Any] = {}
    for ev in run.client.events(doc, timeout_s=900):
        if ev.event == "done":
            final = ev.data
    return {"wall_s": time.monotonic() - t0, "generation": r.json()["generation"], **final}


def _figures(wall_s: float, calls: int, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "wall_s": round(wall_s, 3),
        "llm_calls": calls,
        "core_s": round(sum(cpu.values()), 2),
        "processes_core_s": {k: round(v, 2) for k, v in cpu.items()},
    }


def main() -> None:
    with sim_stack(GPU_MODEL) as run:
        pids = {k: v for k, v in run.pids.items() if k != "simulator"}  # our processes, not the GPU's
        served = run.sim_stats()["served"]
        with cpu_meter(pids) as first_cpu:
            first = run_document(run.client, BOOK)
        first_calls, served = run.sim_stats()["served"] - served, run.sim_stats()["served"]
        with cpu_meter(pids) as replay_cpu:
            replay = _replay(run, first["document_id"])
        replay_calls = run.sim_stats()["served"] - served
    a = _figures(first["wall_s"], first_calls, first_cpu.by_process)
    b = _figures(replay["wall_s"], replay_calls, replay_cpu.by_process)
    result = {
        "bench": "replay",
        "file": BOOK.name,
        "pages": first["pages"],
        "chunks": first["chunks"],
        "sim": {
            "capacity": GPU_MODEL.capacity,
            "latency_s": GPU_MODEL.latency_s,
            "tokens_per_s": GPU_MODEL.tokens_per_s,
        },
        "first": {**a, "status": first["status"], "cards": first["cards"]},
        "replay": {
            **b,
            "status": replay.get("status"),
            "cards": replay.get("cards"),
            "generation": replay["generation"],
        },
        "wall_share": round(b["wall_s"] / a["wall_s"], 3),
        "cpu_share": round(b["core_s"] / a["core_s"], 3) if a["core_s"] else None,
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
