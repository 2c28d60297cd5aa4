"""`python -m bench prompts`: what a new prompt version changes in the cards, on the real model.

Before an operator replays a book with a new prompt, this shows what the replay would do:
the same chunks of five corpus documents (a textbook as DOCX, two PDF books, a syllabus, a
slide deck) go through ``write_cards`` against the local llama.cpp model once per prompt
version, greedy (temperature 0) so the versions differ only by their prompt. Per version:

- what the model wrote, before validation: the share of questions that point at their source
  ("…presented in the text?") and of answers that start by repeating their question;
- what is kept: cards, cards per chunk, the share marked ``needs_review``, words per answer,
  and why cards were dropped.

``--model gemma3-270m`` runs the base model instead (its few-shot prompt). ``--versions v1,v2``
(default: the configured version) and ``--per-doc N`` choose what runs; ``--cards FILE``
writes every kept and dropped card as JSON lines, to read them side by side. Progress goes to
stderr; the last stdout line is JSON. Qwen 2.5 1.5B on 2 cores takes about 3 minutes a
version for the default 20 chunks.

A v2 of the chat prompt was tried with it and not kept: asking for questions that stand on
their own and answers that do not repeat the question changed neither share beyond noise on
Qwen 2.5 1.5B (54 cards a version), and kept fewer cards (46 against 49). Naming "the text"
as a thing to avoid made the model write it more often. The validation in
``services/cards/rules.py`` does that work instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.generation import chunks_of, pages_of
from bench.llamacpp import Counting
from deckstream.corpus import CORPUS
from infra.llm.server import MODELS, start_local_llm
from services.cards.cache import cards_for_chunk
from services.cards.prompting import parse_json_cards, parse_qa_pairs, prompt_version
from services.cards.rules import answer_only, leans_on_source
from services.cards.writing import write_cards
from services.domain import Chunk
from services.errors import DeckstreamError, UnreadableOutput
from services.llm.adapters import OpenAICompatibleClient, detect_profile
from services.llm.client import Completion, Profile
from services.settings import get_settings

DOCUMENTS = (
    "py4e_python-for-everybody_book.docx",
    "whitehead_introduction-to-mathematics_pg41568.pdf",
    "freeculture_lessig_352p.pdf",
    "bee4750_syllabus.docx",
    "py4e_Pythonlearn-06-Strings.pptx",
)


def load_chunks(per_doc: int) -> list[tuple[str, Chunk]]:
    """``per_doc`` chunks spread evenly through each document."""
    settings = get_settings()
    picked: list[tuple[str, Chunk]] = []
    for name in DOCUMENTS:
        try:
            pages = pages_of(CORPUS / name, settings)
        except Exception as exc:  # a missing corpus: say so, do not invent numbers
            sys.exit(f"cannot read {CORPUS / name}: {exc}")
        chunks = chunks_of(pages, settings)
        spread = sorted({int((k + 0.5) * len(chunks) / per_doc) for k in range(per_doc)})
        picked += [(name, chunks[i]) for i in spread if i < len(chunks)]
    return picked


def written(completions: list[Completion], profile: Profile) -> dict[str, Any]:
    """What the model wrote, before validation."""
    raw = []
    for completion in completions:
        try:
            if profile == "chat":
                raw += parse_json_cards(completion.text)
            else:
                raw += parse_qa_pairs(completion.text, truncated=completion.finish_reason == "length")
        except UnreadableOutput:
            continue
    basic = [c for c in raw if c.type == "basic" and c.front and c.back]
    return {
        "cards": len(raw),
        "points_at_source": round(sum(leans_on_source(c.front) for c in raw) / max(1, len(raw)), 3),
        "answer_repeats_question": round(
            sum(answer_only(c.front, c.back) != c.back for c in basic) / max(1, len(basic)), 3
        ),
    }


async def run_version(
    url: str, model: str, chunks: list[tuple[str, Chunk]], version: str, slots: int, out: list[dict[str, Any]]
) -> dict[str, Any]:
    settings = get_settings()
    cards, failed = [], 0
    dropped: Counter[str] = Counter()
    limit = asyncio.Semaphore(slots)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as http:
        profile = await detect_profile(http, url, "openai")
        llm = Counting(OpenAICompatibleClient(http, url, model))

        async def one(name: str, chunk: Chunk) -> None:
            nonlocal failed
            types = ("basic", "cloze") if profile == "chat" and name.endswith(".pptx") else ("basic",)
            per_chunk = cards_for_chunk(
                len(chunk.text.split()), settings.cards.per_1000_words, settings.cards.per_chunk
            )
            async with limit:
                try:
                    result = await write_cards(
                        chunk,
                        llm=llm,
                        profile=profile,
                        document_id="bench",
                        generation=1,
                        filename=name,
                        card_types=types,
                        per_chunk=per_chunk,
                        prompt_version=version,
                        temperature=0.0,
                    )
                except DeckstreamError as exc:
                    failed += 1
                    dropped[exc.reason.split(":")[0]] += 1
                    return
            cards.extend(result.cards)
            dropped.update(reason for _, reason in result.dropped)
            at = {"version": version, "file": name, "chunk": chunk.index}
            kept = ({**at, "front": c.front, "back": c.back, "review": c.review} for c in result.cards)
            out.extend(kept)
            out.extend({**at, "front": front, "dropped": reason} for front, reason in result.dropped)

        started = time.monotonic()
        await asyncio.gather(*(one(name, chunk) for name, chunk in chunks))
        wall = time.monotonic() - started
    answers = [len(c.back.split()) for c in cards if c.type == "basic"]
    return {
        "prompt": prompt_version(profile, version),
        "wall_s": round(wall, 1),
        "written": written(llm.completions, profile),
        "cards": len(cards),
        "cards_per_chunk": round(len(cards) / len(chunks), 2),
        "needs_review": round(sum(c.needs_review for c in cards) / max(1, len(cards)), 3),
        "answer_words_mean": round(statistics.fmean(answers), 1) if answers else None,
        "chunks_failed": failed,
        "dropped": dict(dropped.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench prompts")
    parser.add_argument("bench")
    parser.add_argument("--model", choices=MODELS, default="qwen2.5-coder-1.5b")
    parser.add_argument("--versions", default=get_settings().cards.prompt_version, help="e.g. v1,v2")
    parser.add_argument("--per-doc", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--cards", type=argparse.FileType("w"), help="write every card here (JSON lines)")
    args = parser.parse_args()
    chunks = load_chunks(args.per_doc)
    threads = int(os.environ.get("DECKSTREAM_BENCH_THREADS", 0)) or os.cpu_count() or 1
    print(f"{len(chunks)} chunks; starting {args.model}...", file=sys.stderr)
    server = start_local_llm(
        args.model,
        cache=get_settings().home / "models",
        n_parallel=args.slots,
        ctx_per_slot=4096,
        threads=threads,
    )
    versions: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    try:
        for version in args.versions.split(","):
            versions[version] = asyncio.run(
                run_version(server.url, args.model, chunks, version, args.slots, out)
            )
            print(f"{version}: {versions[version]}", file=sys.stderr)
    finally:
        server.stop()
    if args.cards:
        args.cards.writelines(json.dumps(card, ensure_ascii=False) + "\n" for card in out)
    print(json.dumps({"bench": "prompts", "model": args.model, "chunks": len(chunks), "versions": versions}))


if __name__ == "__main__":
    main()
