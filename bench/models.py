"""`python -m bench models`: which local model (and prompt profile) should write the cards?

Each arm is a packaged model and a prompt profile (``qwen2.5-coder-1.5b:chat`` is the default
path: chat + JSON schema; ``:completion`` is the few-shot prompt of base models). The same
chunks of four corpus documents in four languages (Spanish slides, a French textbook PDF, an
English textbook DOCX, a German text) go through ``write_cards`` as the worker calls it: the
chunk's language detected and the cards asked in it, the worker's temperature and max_tokens,
a seed per chunk, the retry of a chunk whose cards were all dropped. Every model runs in its own
llama.cpp server (``start_local_llm``, one slot) and the arms take turns chunk by chunk, the
order rotating (A B C, B C A, ...), so a busy machine slows them alike: the per-chunk ratio to
the first arm is steadier than the seconds. Per arm:

- ``s_per_chunk`` (wall, LLM calls of both attempts), ``cpu_s_per_chunk`` (the server process's
  CPU time, less sensitive to other load), ``decode_tok_s``, ``ratio_to_first`` (median of the
  per-chunk wall ratios);
- ``written``, ``kept`` per chunk, ``dropped`` by reason, ``chunks_without_card``;
- ``supported``: share of kept cards with at least half of the answer's key terms on the cited
  page and no fact check against them (``bench.quality.supported``); ``support_mean``: the
  rules' own support figure; ``duplicates``: share the deck's dedup would remove;
- ``language_match``: share of kept cards detected in their chunk's language (cards or chunks
  too short to tell are left out); ``needs_review``: share marked to check;
- ``echoes_example``: share of kept cards with words of the prompt's worked example that their
  chunk does not have (a copied example).

Shared words do not tell a true card from a false one: read the ``--cards FILE`` output (every
card kept and dropped, as JSON lines). The load average is printed before and after: say it
with the figures. On a box where something else is busy, run the servers on one thread
(``DECKSTREAM_BENCH_THREADS=1``): llama.cpp's threads spin-wait, and two threads on two shared
cores slowed a chunk five- to ninefold. ``--arms`` and ``--per-doc`` choose what runs. Qwen 2.5
Coder 1.5B needs ``pip install 'deckstream[qwen]'``. Progress goes to stderr; the last stdout
line is JSON. docs/decisions/0014-default-model.md has the figures (10 chunks, ~12 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import httpx

from bench.cpu import process_cpu_s
from bench.generation import chunks_of, pages_of
from bench.llamacpp import Counting
from bench.quality import supported
from deckstream.corpus import CORPUS
from infra.llm.server import MODELS, RunningServer, start_local_llm
from services.cards import language
from services.cards.cache import cards_for_chunk
from services.cards.dedup import drop_near_duplicates
from services.cards.lexicon import NEUTRAL, lexicon
from services.cards.prompting import examples
from services.cards.writing import write_cards
from services.documents.decks import without_repeats
from services.domain import Card, Chunk
from services.errors import DeckstreamError
from services.llm.adapters import OpenAICompatibleClient, detect_profile
from services.llm.client import Profile
from services.settings import get_settings

# (file, first page, pages): a window of each document; chunks are taken evenly from it.
DOCUMENTS = (
    ("py4e_es_2.1_Spanish.pptx", 1, 15),  # Spanish slides
    ("exo7_algebre_cours-premiere-annee.pdf", 12, 6),  # French textbook (PDF)
    ("py4e_python-for-everybody_book.docx", 20, 6),  # English textbook (DOCX)
    ("chardet_windows-1252_german_ude_1.txt", 1, 1),  # German text
)
ARMS = "qwen2.5-coder-1.5b:chat,qwen2.5-coder-1.5b:completion,gemma3-270m:completion"


class Kept(NamedTuple):
    card: Card
    page: str  # the text of the page it cites, within the chunk
    chunk: str
    language: str  # the chunk's, which the card is asked in


@dataclass
class Arm:
    model: str
    profile: Profile
    server: RunningServer
    llm: Counting | None = None
    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    written: int = 0
    empty: int = 0
    failed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    log: list[dict[str, Any]] = field(default_factory=list)  # every card kept and dropped

    @property
    def name(self) -> str:
        return f"{self.model}:{self.profile}"


def load_chunks(per_doc: int) -> list[tuple[str, Chunk]]:
    """``per_doc`` chunks spread evenly through each document's window."""
    settings = get_settings()
    picked: list[tuple[str, Chunk]] = []
    for name, first, n in DOCUMENTS:
        try:
            pages = pages_of(CORPUS / name, settings)
        except Exception as exc:  # a missing corpus: say so, do not invent numbers
            sys.exit(f"cannot read {CORPUS / name}: {exc}")
        chunks = chunks_of([p for p in pages if first <= p.number < first + n], settings)
        spread = sorted({int((k + 0.5) * len(chunks) / per_doc) for k in range(per_doc)})
        picked += [(name, chunks[i]) for i in spread if i < len(chunks)]
    return picked


async def run_chunk(arm: Arm, name: str, chunk: Chunk) -> None:
    """One chunk's cards by one arm, as the worker writes them; its time and cards recorded."""
    assert arm.llm is not None
    settings = get_settings()
    source = language.detect(chunk.text).code
    card_language = language.card_language(source, None)
    before = process_cpu_s(arm.server.process.pid) or 0.0
    started = time.monotonic()
    try:
        result = await write_cards(
            chunk,
            llm=arm.llm,
            profile=arm.profile,
            document_id="bench",
            generation=1,
            filename=name,
            card_types=("basic",),
            per_chunk=cards_for_chunk(
                len(chunk.text.split()), settings.cards.per_1000_words, settings.cards.per_chunk
            ),
            max_attempts=settings.llm.max_attempts,
            prompt_version=settings.cards.prompt_version,
            max_tokens=settings.llm.max_tokens,
            temperature=settings.llm.temperature,
            seed=zlib.crc32(chunk.text.encode()),  # the same for every arm
            language=card_language,
            source_language=source,
        )
    except DeckstreamError as exc:
        arm.failed += 1
        arm.dropped[exc.reason.split(":")[0]] += 1
        return
    finally:
        arm.walls.append(time.monotonic() - started)
        arm.cpu.append((process_cpu_s(arm.server.process.pid) or 0.0) - before)
    pages = {s.page: s.text for s in chunk.segments}
    arm.kept += [Kept(c, pages.get(c.page, chunk.text), chunk.text, card_language) for c in result.cards]
    arm.written += len(result.cards) + sum(1 for front, _ in result.dropped if front)
    arm.empty += not result.cards
    arm.dropped.update(reason for _, reason in result.dropped)
    at = {"arm": arm.name, "file": name, "chunk": chunk.index, "language": card_language}
    arm.log += [{**at, "front": c.front, "back": c.back, "review": c.review} for c in result.cards]
    arm.log += [{**at, "front": front, "dropped": reason} for front, reason in result.dropped]


def echoes_example(kept: Kept, version: str) -> bool:
    """Whether a card takes words from the prompt's worked example that its chunk does not have
    (the example's photosynthesis card, asked of a chapter on logic)."""
    found = examples(version)
    text, pairs = found.get(kept.language) or found.get("en") or ("", ())
    lex = lexicon(kept.language)
    example = set(lex.key_terms(" ".join([text, *(f"{q} {a}" for q, a in pairs)])))
    chunk = set(lex.key_terms(kept.chunk))
    return any(t in example and t not in chunk for t in lex.key_terms(f"{kept.card.front} {kept.card.back}"))


def figures(arm: Arm, first: Arm, chunks: int) -> dict[str, Any]:
    assert arm.llm is not None
    version = get_settings().cards.prompt_version
    cards = [k.card for k in arm.kept]
    told = matched = 0
    for k in arm.kept:
        found = language.detect(f"{k.card.front} {k.card.back}", min_confidence=0.0).code
        if NEUTRAL not in (k.language, found):
            told += 1
            matched += found == k.language
    unique = drop_near_duplicates(without_repeats(cards)) if cards else []
    decode_s = sum(
        max(0.0, lat - (c.ttft_ms or 0.0) / 1000)
        for lat, c in zip(arm.llm.latencies, arm.llm.completions, strict=True)
    )
    ratios = [a / b for a, b in zip(arm.walls, first.walls, strict=True) if b > 0]

    def share(n: int, d: int) -> float | None:
        return round(n / d, 3) if d else None

    return {
        "s_per_chunk": round(statistics.fmean(arm.walls), 1),
        "s_per_chunk_median": round(statistics.median(arm.walls), 1),
        "ratio_to_first": round(statistics.median(ratios), 2) if ratios else None,
        "cpu_s_per_chunk": round(statistics.fmean(arm.cpu), 1),
        "decode_tok_s": round(arm.llm.completion_tokens / decode_s, 1) if decode_s else None,
        "completion_tokens_per_chunk": round(arm.llm.completion_tokens / chunks, 1),
        "calls_per_chunk": round(arm.llm.calls / chunks, 2),
        "written_per_chunk": round(arm.written / chunks, 2),
        "kept_per_chunk": round(len(cards) / chunks, 2),
        "chunks_without_card": arm.empty + arm.failed,
        "chunks_failed": arm.failed,
        "supported": share(sum(supported(k.card, k.page, k.language) for k in arm.kept), len(cards)),
        "support_mean": round(statistics.fmean(c.support for c in cards), 3) if cards else None,
        "language_match": share(matched, told),
        "language_untold": len(cards) - told,
        "needs_review": share(sum(c.needs_review for c in cards), len(cards)),
        "duplicates": share(len(cards) - len(unique), len(cards)),
        "echoes_example": share(sum(echoes_example(k, version) for k in arm.kept), len(cards)),
        "dropped": dict(arm.dropped.most_common()),
    }


async def run(arms: list[Arm], chunks: list[tuple[str, Chunk]], loads: list[float]) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0, connect=5.0)) as http:
        for arm in arms:
            detected = await detect_profile(http, arm.server.url, "openai")
            print(f"{arm.name}: the server's own profile is {detected}", file=sys.stderr)
            arm.llm = Counting(OpenAICompatibleClient(http, arm.server.url, arm.model))
        for i, (name, chunk) in enumerate(chunks):
            loads.append(os.getloadavg()[0])
            for k in range(len(arms)):  # rotate who goes first
                arm = arms[(i + k) % len(arms)]
                await run_chunk(arm, name, chunk)
                done = f"{arm.walls[-1]:.1f} s, {len(arm.kept)} cards kept so far"
                print(f"chunk {i + 1}/{len(chunks)} {arm.name}: {done}", file=sys.stderr)


def table(report: dict[str, dict[str, Any]]) -> str:
    columns = (
        ("s_per_chunk", "s/chunk"),
        ("ratio_to_first", "ratio"),
        ("cpu_s_per_chunk", "cpu s"),
        ("decode_tok_s", "tok/s"),
        ("written_per_chunk", "written"),
        ("kept_per_chunk", "kept"),
        ("chunks_without_card", "no card"),
        ("supported", "supported"),
        ("support_mean", "support"),
        ("language_match", "lang"),
        ("needs_review", "review"),
        ("duplicates", "dups"),
        ("echoes_example", "echo"),
    )
    width = max(len(name) for name in report) + 2
    lines = ["arm".ljust(width) + "".join(f"{title:>10}" for _, title in columns)]
    for name, row in report.items():
        lines.append(name.ljust(width) + "".join(f"{row[key]!s:>10}" for key, _ in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench models")
    parser.add_argument("bench")
    parser.add_argument("--arms", default=ARMS, help="model:profile,... (the first is the baseline)")
    parser.add_argument("--per-doc", type=int, default=3)
    parser.add_argument("--cards", type=argparse.FileType("w"), help="write every card here (JSON lines)")
    args = parser.parse_args()
    wanted = [tuple(a.split(":")) for a in args.arms.split(",")]
    for model, profile in wanted:
        if model not in MODELS or profile not in ("chat", "completion"):
            sys.exit(f"unknown arm {model}:{profile}: models {', '.join(MODELS)}, profiles chat, completion")
    chunks = load_chunks(args.per_doc)
    settings = get_settings()
    threads = int(os.environ.get("DECKSTREAM_BENCH_THREADS", 0)) or os.cpu_count() or 1
    load_before = os.getloadavg()
    print(f"{len(chunks)} chunks; load average {load_before}; starting the servers...", file=sys.stderr)
    servers: dict[str, RunningServer] = {}
    loads: list[float] = []
    try:
        for model in dict.fromkeys(m for m, _ in wanted):
            servers[model] = start_local_llm(
                model, cache=settings.home / "models", n_parallel=1, ctx_per_slot=4096, threads=threads
            )
        arms = [Arm(m, cast(Profile, p), servers[m]) for m, p in wanted]
        started = time.monotonic()
        asyncio.run(run(arms, chunks, loads))
        elapsed = time.monotonic() - started
    finally:
        for server in servers.values():
            server.stop()
    load_after = os.getloadavg()
    report = {arm.name: figures(arm, arms[0], len(chunks)) for arm in arms}
    print(table(report), file=sys.stderr)
    print(f"load average before {load_before}, after {load_after}", file=sys.stderr)
    if args.cards:
        for arm in arms:
            args.cards.writelines(json.dumps(card, ensure_ascii=False) + "\n" for card in arm.log)
    print(
        json.dumps(
            {
                "bench": "models",
                "chunks": len(chunks),
                "documents": [name for name, _, _ in DOCUMENTS],
                "languages": dict(Counter(language.detect(c.text).code for _, c in chunks)),
                "prompt_version": settings.cards.prompt_version,
                "threads": threads,
                "elapsed_s": round(elapsed, 1),
                "load_before": [round(v, 2) for v in load_before],
                "load_after": [round(v, 2) for v in load_after],
                "load_1min_during": [round(f(loads), 2) for f in (min, statistics.fmean, max)],
                "arms": report,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
