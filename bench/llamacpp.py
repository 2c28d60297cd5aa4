"""`python -m bench llamacpp`: does the local llama.cpp server gain from parallel slots?

The same chunks (paragraphs of the course syllabus in the test corpus) go through
``write_cards`` against the real Gemma 3 270M server twice: n_parallel=1 with one request
at a time, then n_parallel=4 with 4 requests in flight. Greedy decoding (temperature 0) keeps
the two runs' outputs comparable. Progress goes to stderr; the last stdout line is JSON.
DECKSTREAM_BENCH_THREADS sets the server's threads (default: all cores).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import httpx

from deckstream.corpus import CORPUS
from infra.llm.server import start_local_llm
from services.cards.writing import write_cards
from services.domain import Chunk, Segment
from services.errors import DeckstreamError
from services.llm.adapters import OpenAICompatibleClient
from services.llm.client import Completion, LLMClient, Prompt
from services.llm.scheduler import InflightScheduler
from services.settings import get_settings

SYLLABUS = CORPUS / "bee4750_syllabus.docx"
N_CHUNKS = 8
MAX_TOKENS = 160


def load_chunks(n: int = N_CHUNKS) -> list[Chunk]:
    """The syllabus's longer paragraphs, one chunk each (~50–110 words)."""
    try:
        import docx

        paragraphs = [p.text for p in docx.Document(str(SYLLABUS)).paragraphs if len(p.text.split()) > 40]
    except Exception as exc:  # a missing corpus or python-docx: say so, do not invent numbers
        sys.exit(f"cannot read {SYLLABUS}: {exc}")
    return [
        Chunk(i, (Segment(i + 1, str(i + 1), ("Syllabus",), text),), 0)
        for i, text in enumerate(paragraphs[:n])
    ]


class Counting:
    """An LLMClient wrapper that counts calls, tokens and call latencies, and keeps the answers."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self.calls = 0
        self.completion_tokens = 0
        self.latencies: list[float] = []
        self.completions: list[Completion] = []

    async def generate(self, prompt: Prompt) -> Completion:
        started = time.monotonic()
        completion = await self.inner.generate(prompt)
        self.latencies.append(time.monotonic() - started)
        self.completions.append(completion)
        self.calls += 1
        self.completion_tokens += completion.completion_tokens
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run(url: str, chunks: list[Chunk], in_flight: int) -> dict[str, Any]:
    sched = InflightScheduler(in_flight)
    cards = failed = 0
    chunk_latencies: list[float] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as http:
        llm = Counting(OpenAICompatibleClient(http, url, "gemma3-270m"))

        async def one(chunk: Chunk) -> None:
            nonlocal cards, failed
            async with sched.slot("bench"):
                started = time.monotonic()
                try:
                    result = await write_cards(
                        chunk,
                        llm=llm,
                        profile="completion",
                        document_id="bench",
                        generation=1,
                        filename=SYLLABUS.name,
                        card_types=("basic",),
                        per_chunk=4,
                        max_tokens=MAX_TOKENS,
                        temperature=0.0,
                    )
                    cards += len(result.cards)
                except DeckstreamError:
                    failed += 1
                chunk_latencies.append(time.monotonic() - started)

        started = time.monotonic()
        await asyncio.gather(*(one(c) for c in chunks))
        wall = time.monotonic() - started
    return {
        "in_flight": in_flight,
        "wall_s": round(wall, 2),
        "calls": llm.calls,
        "completion_tokens": llm.completion_tokens,
        "tokens_per_s": round(llm.completion_tokens / wall, 1),
        "chunks_per_s": round(len(chunks) / wall, 3),
        "chunk_latency_s_p50": round(statistics.median(chunk_latencies), 2),
        "call_latency_s_mean": round(statistics.fmean(llm.latencies), 2),
        "cards": cards,
        "chunks_failed": failed,
    }


def main() -> None:
    chunks = load_chunks()
    cache = get_settings().home / "models"
    # llama.cpp threads spin-wait: on a shared box, fewer threads than cores is steadier.
    threads = int(os.environ.get("DECKSTREAM_BENCH_THREADS", 0)) or os.cpu_count() or 1
    figures: dict[int, dict[str, Any]] = {}
    for n_parallel in (1, 4):
        print(f"n_parallel={n_parallel}: starting Gemma 3 270M...", file=sys.stderr)
        server = start_local_llm(
            "gemma3-270m", cache=cache, n_parallel=n_parallel, ctx_per_slot=2048, threads=threads
        )
        try:
            figures[n_parallel] = asyncio.run(run(server.url, chunks, in_flight=n_parallel))
        finally:
            server.stop()
        print(f"n_parallel={n_parallel}: {figures[n_parallel]}", file=sys.stderr)
    one, four = figures[1], figures[4]
    report = {
        "bench": "llamacpp",
        "model": "gemma3-270m",
        "chunks": len(chunks),
        "threads": threads,
        "max_tokens": MAX_TOKENS,
        "sequential": one,
        "parallel4": four,
        "tokens_per_s_ratio": round(four["tokens_per_s"] / one["tokens_per_s"], 2),
        "chunks_per_s_ratio": round(four["chunks_per_s"] / one["chunks_per_s"], 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
