"""`python -m bench generation`: card generation for a 352-page book, then the same book again.

Stress (the issue's configuration): `deckstream llm sim` at capacity 64, 50 ms per call and
instant decode, so the figures measure how well the pipeline keeps the LLM busy: wall time
from upload to `done` against the ideal the simulator's capacity allows for the same number of
chunks (target ratio ≤ 1.15), time to first card (target < 3 s), chunks, cards and cards per
1000 words of extracted text. Beside it, in the same run, `direct`: the book's prompts sent
straight to the same simulator with nothing else in between, which is the best this machine's
HTTP client and simulator manage. `cpu`: the core-seconds each process and the whole machine
spent on the run, on `direct` and on the cached run, and the least wall time (and ratio) that
much CPU allows on this machine's cores (bench/cpu.py). The second upload of the same file is
served by the result cache: its wall time, and the LLM calls it made (target ~0). Then
`slower_calls`: the book again at 100, 200 and 500 ms per call (same capacity, empty cache),
each against its own ideal: the call latency from which one worker here keeps 64 slots busy.

GPU model (`gpu_model`): the same book against the simulator shaped like vLLM serving an 8B
model on one H100 at 64 in flight (about 20 tokens/s per request, 1,300 tokens/s in all, and
0.3 s to the first token; see notes/performance-reliability.md). Side by side in one run: the
book's prompts sent straight to the server, 64 at a time (its saturated throughput with our
prompts), and the book through the pipeline; tokens/s of each and their ratio. `gpu_peak`: the
same against vLLM's peak on an H100 (5,333 tokens/s in all at 64 in flight, the notes' stretch
goal being ≥ 4,000).

    python -m bench generation --llm-url http://gpu-box:8000 --model NAME --capacity 64 [--file F]

runs only that comparison against a real OpenAI-compatible server, with the book or another
file: wall time of both, and tokens/s when the server reports the tokens it generated (vLLM
on /metrics; the direct run's count comes from the answers).
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.cpu import cpu_meter
from bench.harness import BOOK, BenchStack, deck_size, llm_stack, run_document, sim_stack, start_sim
from bench.pipeline import SIM
from infra.llm.sim import SimConfig, ideal_time
from infra.process import terminate
from services.cards.cache import cards_for_chunk
from services.cards.prompting import render_prompt
from services.documents.chunking import chunk_pages
from services.domain import Chunk, Page
from services.extraction import extract
from services.llm.connection import LLMConnection
from services.settings import LLMSettings, Settings

GPU_MODEL = SimConfig(capacity=64, latency_s=0.3, tokens_per_s=20.0)
GPU_PEAK = SimConfig(capacity=64, latency_s=0.3, tokens_per_s=5333 / 64)  # vLLM's peak on an H100
SWEEP_LATENCIES_S = (0.1, 0.2, 0.5)  # per call, after the 50 ms


def pages_of(path: Path, settings: Settings) -> list[Page]:
    """The file's pages, as the pipeline extracts them."""
    return [p for p in extract(path, settings.limits, filename=path.name) if isinstance(p, Page)]


def chunks_of(pages: list[Page], settings: Settings) -> list[Chunk]:
    """The pages' chunks, as the splitter makes them."""
    return chunk_pages(pages, settings.chunks.max_tokens, settings.chunks.overlap_tokens)


def generated_tokens(url: str) -> int | None:
    """Tokens the server has generated so far: the simulator's /stats or vLLM's /metrics."""
    try:
        stats = httpx.get(f"{url}/stats", timeout=5)
        if stats.status_code == 200 and "completion_tokens" in stats.json():
            return int(stats.json()["completion_tokens"])
        metrics = httpx.get(f"{url}/metrics", timeout=5)
    except (httpx.HTTPError, ValueError):
        return None
    found = re.findall(r"^vllm:generation_tokens_total(?:\{[^}]*\})? ([0-9.e+]+)$", metrics.text, re.M)
    return int(sum(float(v) for v in found)) if found and metrics.status_code == 200 else None


async def saturate(url: str, model: str, profile: str, capacity: int, chunks: list[Chunk]) -> dict[str, Any]:
    """The chunks' prompts straight to the server, `capacity` at a time: its saturated rate."""
    settings = Settings()
    cfg = LLMSettings(url=url, model=model, max_in_flight=capacity, profile=profile)  # type: ignore[arg-type]
    connection = LLMConnection(cfg)  # the worker's own client: pools, adapter, profile
    await connection.open()
    try:
        llm, chosen = connection.client, connection.profile
        gate = asyncio.Semaphore(capacity)
        before = generated_tokens(url)

        async def one(chunk: Chunk) -> int:
            per_chunk = cards_for_chunk(
                len(chunk.text.split()), settings.cards.per_1000_words, settings.cards.per_chunk
            )
            prompt = render_prompt(
                chunk, profile=chosen, per_chunk=per_chunk, max_tokens=cfg.max_tokens
            ).prompt
            async with gate:
                return (await llm.generate(prompt)).completion_tokens

        started = time.monotonic()
        answered = await asyncio.gather(*(one(c) for c in chunks))
        wall = time.monotonic() - started
    finally:
        await connection.close()
    after = generated_tokens(url)
    tokens = after - before if after is not None and before is not None else sum(answered)
    return {
        "requests": len(chunks),
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
    }


def server_comparison(
    url: str,
    model: str,
    capacity: int,
    profile: str,
    shape: SimConfig | None,
    path: Path,
    chunks: list[Chunk],
) -> dict[str, Any]:
    """Direct saturation with the file's chunks, then the file through the pipeline."""
    direct = asyncio.run(saturate(url, model, profile, capacity, chunks))
    with llm_stack(url, model, capacity, profile) as run:
        before = generated_tokens(url)
        book = run_document(run.client, path)
        after = generated_tokens(url)
    tokens = after - before if after is not None and before is not None else None
    out: dict[str, Any] = {
        "file": path.name,
        "capacity": capacity,
        "chunks": book["chunks"],
        "status": book["status"],
        "wall_s": round(book["wall_s"], 3),
        "time_to_first_card_s": round(book["first_card_s"] or -1.0, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / book["wall_s"], 1) if tokens is not None else None,
        "direct": direct,
    }
    # The same prompts straight to the server vs through the pipeline: the pipeline's cost.
    out["direct_wall_over_pipeline_wall"] = round(direct["wall_s"] / book["wall_s"], 3)
    if tokens is not None:
        out["of_direct_tokens_per_s"] = round(tokens / book["wall_s"] / direct["tokens_per_s"], 3)
    if shape is not None:
        ideal = ideal_time(book["chunks"], shape, tokens or 0)
        out |= {
            "sim": {"latency_s": shape.latency_s, "tokens_per_s_per_request": shape.tokens_per_s},
            "saturated_tokens_per_s": shape.capacity * shape.tokens_per_s,
            "ideal_s": round(ideal, 3),
            "ratio": round(book["wall_s"] / ideal, 3),
        }
    return out


def latency_sweep(run: BenchStack, latencies: tuple[float, ...]) -> list[dict[str, Any]]:
    """The book again with each per-call latency (set through the simulator's /admin/faults)
    and an empty result cache: where one worker on this machine keeps the 64 slots busy."""
    out = []
    try:
        for latency in latencies:
            set_latency(run.llm_url, latency)
            run.forget_cards()
            book = run_document(run.client, BOOK)
            ideal = ideal_time(book["chunks"], dataclasses.replace(SIM, latency_s=latency))
            out.append(
                {
                    "latency_s": latency,
                    "wall_s": round(book["wall_s"], 3),
                    "ideal_s": round(ideal, 3),
                    "ratio": round(book["wall_s"] / ideal, 2),
                    "chunks_per_s": round(book["chunks"] / book["wall_s"], 1),
                    "status": book["status"],
                }
            )
    finally:
        set_latency(run.llm_url, SIM.latency_s)
    return out


def set_latency(url: str, latency: float) -> None:
    httpx.post(f"{url}/admin/faults", json={"latency_s": latency}, timeout=5).raise_for_status()


def gpu_model(chunks: list[Chunk], shape: SimConfig) -> dict[str, Any]:
    proc, url = start_sim(shape)
    try:
        return server_comparison(url, "deckstream-sim", shape.capacity, "chat", shape, BOOK, chunks)
    finally:
        terminate(proc)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench generation")
    parser.add_argument("--llm-url", help="a real OpenAI-compatible server (vLLM): compare against it only")
    parser.add_argument("--model", default="default", help="the model name the server expects")
    parser.add_argument(
        "--capacity", type=int, default=64, help="requests in flight (the server's max_num_seqs)"
    )
    parser.add_argument("--profile", default="auto", choices=["auto", "chat", "completion"])
    parser.add_argument(
        "--file", type=Path, default=BOOK, help="with --llm-url: the document (default: the book)"
    )
    args = parser.parse_args(sys.argv[2:])
    settings = Settings()
    if args.llm_url:
        chunks = chunks_of(pages_of(args.file, settings), settings)
        server = server_comparison(
            args.llm_url, args.model, args.capacity, args.profile, None, args.file, chunks
        )
        sys.stdout.write(json.dumps({"bench": "generation", "server": args.llm_url} | server) + "\n")
        return
    pages = pages_of(BOOK, settings)
    words = sum(len(p.text.split()) for p in pages)
    chunks = chunks_of(pages, settings)
    with sim_stack(SIM) as run:
        # The same prompts straight to the same simulator, 64 at a time, with no pipeline: the
        # best this machine's client and simulator manage, beside the capacity model's ideal.
        client = {"bench_client": os.getpid()}  # this process: `direct`'s requests, the SSE reader
        with cpu_meter(client | {"simulator": run.pids["simulator"]}) as direct_cpu:
            direct = asyncio.run(saturate(run.llm_url, "deckstream-sim", "chat", SIM.capacity, chunks))
        before = run.sim_stats()
        with cpu_meter(run.pids | client) as run_cpu:
            first = run_document(run.client, BOOK)
        between = run.sim_stats()
        first["deck_cards"] = deck_size(run.client, first["document_id"])
        with cpu_meter(run.pids | client) as cached_cpu:
            second = run_document(run.client, BOOK)  # the same chunks: served by the result cache
        after = run.sim_stats()
        slower = latency_sweep(run, SWEEP_LATENCIES_S)
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
        "direct": {
            "wall_s": direct["wall_s"],
            "ratio": round(direct["wall_s"] / ideal, 2),
            "what": "the book's prompts sent straight to the simulator, 64 in flight, no pipeline",
        },
        "ratio_to_direct": round(first["wall_s"] / direct["wall_s"], 2),
        # The CPU each run cost this machine, and the least wall time that much CPU allows on
        # its cores; beside it, the CPU the ratio target leaves for everything (1.15 × ideal).
        "cpu": {
            "run": run_cpu.figures(ideal),
            "direct": direct_cpu.figures(ideal),
            "cached_run": cached_cpu.figures(ideal),  # the run without its LLM calls
            "target_budget_core_s": round(1.15 * ideal * run_cpu.cores, 2),
        },
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
        "slower_calls": slower,
        "gpu_model": gpu_model(chunks, GPU_MODEL),
        "gpu_peak": gpu_model(chunks, GPU_PEAK),
    }
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
