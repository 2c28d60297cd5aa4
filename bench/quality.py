"""`python -m bench quality`: are the cards worth studying? Coverage, support, language, on the real model.

A fixed set of corpus documents in four languages and four formats (a Spanish slide deck, a
French textbook PDF, a German text file, two English textbooks as PDF and DOCX, an English
syllabus as DOCX, an English slide deck), a window of pages of each, goes through
``write_cards`` against the local llama.cpp model as the worker runs it: each chunk's language
detected, the cards asked in it, the retry of a chunk whose cards were all dropped, the
follow-up for pages no kept card cites. Once with the configured prompt version and
once with the previous one (the highest older version with a file for the model's profile), in
the same run, greedy (temperature 0) so the versions differ only by their prompt.

Per document and overall, per version:

- ``cards``, ``cards_per_1000_words`` (words of the window's pages);
- ``page_coverage``: pages with 300 or more characters of text that a kept card cites, of all
  such pages;
- ``supported``: share of kept cards whose answer has at least half of its key terms (its
  language's stems, no stopwords) on the page it cites, and no fact check against it;
- ``language_match``: share of kept cards detected in their chunk's language (cards too short
  to tell, and chunks whose language could not be told, are left out and counted);
- ``duplicates``: share of the cards written (and kept by the checks) that the deck removes as
  repeats or near-duplicates; every other figure is the deck's, after that removal, as a user
  sees it (``cards_written``: before it);
- ``to_check``: share marked ``needs_review``; ``retried`` chunks and those the retry gave a card;
- ``pages_asked_again``: pages of a chunk no kept card cited, asked about again with only their
  text, and ``pages_asked_again_with_cards``, those that then got one;
- ``s_per_chunk``: wall time over chunks (the LLM calls of every attempt and follow-up).

``--model gemma3-270m`` (a few minutes: the test model, few-shot prompt) or the default
``qwen2.5-coder-1.5b`` (chat + JSON schema; ~20 s a chunk on 2 cores). ``--versions v3,v2``
overrides the pair (``v3/no-pages``: v3 without the page follow-up), ``--docs N`` keeps the
first N documents, ``--cards FILE`` writes every card kept and dropped as JSON lines. Progress
goes to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.generation import chunks_of, pages_of
from bench.llamacpp import Counting
from deckstream.corpus import CORPUS
from infra.llm.server import MODELS, start_local_llm
from services.cards import facts, language
from services.cards.cache import cards_for_chunk
from services.cards.dedup import drop_near_duplicates
from services.cards.lexicon import NEUTRAL, lexicon
from services.cards.prompting import prompt_version, prompt_versions
from services.cards.quality import SUBSTANTIAL_CHARS
from services.cards.writing import write_cards
from services.documents.decks import without_repeats
from services.domain import Card, Chunk, Page
from services.errors import DeckstreamError
from services.llm.adapters import OpenAICompatibleClient, detect_profile
from services.llm.client import Profile
from services.settings import get_settings

# (file, first page, pages): a window of each document, so a run takes minutes.
DOCUMENTS = (
    ("py4e_es_2.1_Spanish.pptx", 1, 15),  # Spanish slides
    ("exo7_algebre_cours-premiere-annee.pdf", 12, 2),  # French textbook (PDF)
    ("chardet_windows-1252_german_ude_1.txt", 1, 1),  # German text (windows-1252)
    ("whitehead_introduction-to-mathematics_pg41568.pdf", 126, 2),  # English textbook (PDF)
    ("py4e_python-for-everybody_book.docx", 20, 2),  # English textbook (DOCX)
    ("bee4750_syllabus.docx", 1, 1),  # English syllabus (DOCX)
    ("py4e_Pythonlearn-10-Tuples.pptx", 1, 16),  # English slides: where page coverage is hard
)
TEXTBOOKS = {
    "exo7_algebre_cours-premiere-annee.pdf",
    "whitehead_introduction-to-mathematics_pg41568.pdf",
    "py4e_python-for-everybody_book.docx",
}


def previous_version(configured: str, profile: Profile) -> str | None:
    """The highest version older than the configured one with a prompt file for the profile."""
    older = [v for v in prompt_versions() if _number(v) < _number(configured)]
    have = [v for v in older if _has_file(profile, v)]
    return max(have, key=_number) if have else None


def _number(version: str) -> int:
    return int("".join(c for c in version if c.isdigit()) or 0)


def _has_file(profile: Profile, version: str) -> bool:
    from importlib.resources import files

    return files("services.cards.prompts").joinpath(f"{prompt_version(profile, version)}.txt").is_file()


def load_documents(count: int) -> list[tuple[str, list[Page], list[Chunk]]]:
    settings = get_settings()
    out = []
    for name, first, n in DOCUMENTS[:count]:
        try:
            pages = pages_of(CORPUS / name, settings)
        except Exception as exc:  # a missing corpus: say so, do not invent numbers
            sys.exit(f"cannot read {CORPUS / name}: {exc}")
        window = [p for p in pages if first <= p.number < first + n]
        out.append((name, window, chunks_of(window, settings)))
    return out


def supported(card: Card, page_text: str, card_language: str) -> bool:
    """At least half of the answer's key terms on the cited page, and no fact check against it."""
    lex = lexicon(card_language)
    answer = card.back if card.type == "basic" else card.front
    terms = lex.key_terms(answer) or lex.key_terms(card.front)
    page_terms = set(lex.key_terms(page_text))
    if not terms or 2 * sum(t in page_terms for t in terms) < len(terms):
        return False
    return not any(f.drop for f in facts.check(card.front, answer, facts.Source(page_text, lex)))


def share(n: int, d: int) -> float | None:
    return round(n / d, 3) if d else None


def measure(
    pages: list[tuple[str, Page]], kept: list[tuple[Card, str]], counts: Counter[str], wall: float
) -> dict[str, Any]:
    """One document's figures, or all of them together: ``pages`` as (file, page), so page 1 of
    one document is not page 1 of another."""
    cards = [c for c, _ in kept]
    words = sum(len(p.text.split()) for _, p in pages)
    by_page = {(name, p.number): p.text for name, p in pages}
    substantial = {(name, p.number) for name, p in pages if len(p.text) >= SUBSTANTIAL_CHARS}
    cited = {(c.file, c.page) for c in cards}
    told, matched, untold = 0, 0, 0
    for card, expected in kept:
        found = language.detect(f"{card.front} {card.back}", min_confidence=0.0).code
        if expected == NEUTRAL or found == NEUTRAL:
            untold += 1
            continue
        told += 1
        matched += found == expected
    return {
        "cards": len(cards),
        "cards_written": counts["written"],
        "words": words,
        "cards_per_1000_words": round(1000 * len(cards) / words, 1) if words else None,
        "pages_with_text": len(substantial),
        "page_coverage": share(len(substantial & cited), len(substantial)),
        "supported": share(
            sum(supported(c, by_page.get((c.file, c.page), ""), e) for c, e in kept), len(cards)
        ),
        "language_match": share(matched, told),
        "language_untold": untold,
        "duplicates": share(counts["written"] - len(cards), counts["written"]),
        "to_check": share(sum(c.needs_review for c in cards), len(cards)),
        "chunks": counts["chunks"],
        "retried": counts["retried"],
        "retried_with_cards": counts["rescued"],
        "pages_asked_again": counts["pages_asked"],
        "pages_asked_again_with_cards": counts["pages_rescued"],
        "s_per_chunk": round(wall / counts["chunks"], 1) if counts["chunks"] else None,
    }


async def run_document(
    llm: Counting,
    profile: Profile,
    name: str,
    chunks: list[Chunk],
    version: str,
    limit: asyncio.Semaphore,
    dropped: Counter[str],
    out: list[dict[str, Any]],
    cover_pages: bool = True,
    arm: str = "",
) -> tuple[list[tuple[Card, str]], Counter[str]]:
    """A document's kept cards (with their chunk's language), in chunk order, and its counts."""
    settings = get_settings()
    kept: list[tuple[int, list[tuple[Card, str]]]] = []
    counts: Counter[str] = Counter()

    async def one(chunk: Chunk) -> None:
        source = language.detect(chunk.text).code
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
                    card_types=("basic",),
                    per_chunk=per_chunk,
                    prompt_version=version,
                    temperature=0.0,
                    language=source,
                    source_language=source,
                    cover_pages=cover_pages,
                )
            except DeckstreamError as exc:
                counts["failed"] += 1
                dropped[exc.reason.split(":")[0]] += 1
                return
        kept.append((chunk.index, [(c, source) for c in result.cards]))
        if result.retry is not None:
            counts["retried"] += 1
            counts["rescued"] += bool(result.cards)
        if result.pages is not None and result.pages.pages:
            counts["pages_asked"] += len(result.pages.pages)
            counts["pages_rescued"] += len(result.pages.pages) - len(result.pages.uncovered)
        dropped.update(reason for _, reason in result.dropped)
        at = {"version": arm or version, "file": name, "chunk": chunk.index, "language": source}
        out.extend(
            {**at, "page": c.page_label, "front": c.front, "back": c.back, "review": c.review}
            for c in result.cards
        )
        out.extend({**at, "front": front, "dropped": reason} for front, reason in result.dropped)
        if result.pages is not None:
            out.extend({**at, "page": label, "no_card": why} for label, why in result.pages.uncovered.items())

    await asyncio.gather(*(one(chunk) for chunk in chunks))
    written = [pair for _, pairs in sorted(kept, key=lambda k: k[0]) for pair in pairs]
    # The deck: what assembly keeps (repeats and near-duplicates out, the first kept), as a user sees it.
    deck = (
        {id(c) for c in drop_near_duplicates(without_repeats([c for c, _ in written]))} if written else set()
    )
    counts["written"] = len(written)
    return [pair for pair in written if id(pair[0]) in deck], counts


async def run_version(
    url: str,
    model: str,
    documents: list[tuple[str, list[Page], list[Chunk]]],
    version: str,
    slots: int,
    out: list[dict[str, Any]],
) -> dict[str, Any]:
    arm = version
    version, _, flat = version.partition("/")  # "v3/no-pages": without the page follow-up
    limit = asyncio.Semaphore(slots)
    report: dict[str, Any] = {}
    every: list[tuple[Card, str]] = []
    all_pages: list[tuple[str, Page]] = []
    totals: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as http:
        profile = await detect_profile(http, url, "openai")
        llm = Counting(OpenAICompatibleClient(http, url, model))
        for name, pages, chunks in documents:
            started = time.monotonic()
            kept, counts = await run_document(
                llm, profile, name, chunks, version, limit, dropped, out, flat != "no-pages", arm
            )
            wall = time.monotonic() - started
            counts["chunks"] = len(chunks)
            report[name] = measure([(name, p) for p in pages], kept, counts, wall)
            report[name]["chunks_failed"] = counts["failed"]
            print(f"{version} {name}: {report[name]}", file=sys.stderr)
            every += kept
            all_pages += [(name, p) for p in pages]
            totals.update(counts + Counter(wall_ms=int(wall * 1000)))
    overall = measure(all_pages, every, totals, totals["wall_ms"] / 1000)
    overall["chunks_failed"] = totals["failed"]
    textbook_words = sum(report[n]["words"] for n in report if n in TEXTBOOKS)
    textbook_cards = sum(report[n]["cards"] for n in report if n in TEXTBOOKS)
    overall["textbook_cards_per_1000_words"] = (
        round(1000 * textbook_cards / textbook_words, 1) if textbook_words else None
    )
    overall["dropped"] = dict(dropped.most_common())
    name = prompt_version(profile, version) + (f" ({flat})" if flat else "")
    return {"prompt": name, "overall": overall, "documents": report}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench quality")
    parser.add_argument("bench")
    parser.add_argument("--model", choices=MODELS, default="qwen2.5-coder-1.5b")
    parser.add_argument(
        "--versions",
        help="e.g. v3,v3/no-pages,v2 (default: the configured one and the previous; /no-pages: "
        "without asking again about pages left without a card)",
    )
    parser.add_argument("--docs", type=int, default=len(DOCUMENTS))
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--cards", type=argparse.FileType("w"), help="write every card here (JSON lines)")
    args = parser.parse_args()
    documents = load_documents(args.docs)
    threads = int(os.environ.get("DECKSTREAM_BENCH_THREADS", 0)) or os.cpu_count() or 1
    chunks = sum(len(c) for _, _, c in documents)
    print(f"{len(documents)} documents, {chunks} chunks; starting {args.model}...", file=sys.stderr)
    server = start_local_llm(
        args.model,
        cache=get_settings().home / "models",
        n_parallel=args.slots,
        ctx_per_slot=4096,
        threads=threads,
    )
    started = time.monotonic()
    results: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    try:
        profile = asyncio.run(_profile(server.url))
        configured = get_settings().cards.prompt_version
        previous = previous_version(configured, profile)
        versions = (
            args.versions.split(",") if args.versions else [configured, *([previous] if previous else [])]
        )
        for version in versions:
            results[version] = asyncio.run(
                run_version(server.url, args.model, documents, version, args.slots, out)
            )
            print(f"{version}: {results[version]['overall']}", file=sys.stderr)
    finally:
        server.stop()
    if args.cards:
        args.cards.writelines(json.dumps(card, ensure_ascii=False) + "\n" for card in out)
    documents_json = [{"file": n, "pages": [p.label for p in pages]} for n, pages, _ in documents]
    print(
        json.dumps(
            {
                "bench": "quality",
                "model": args.model,
                "documents": documents_json,
                "chunks": chunks,
                "elapsed_s": round(time.monotonic() - started, 1),
                "versions": results,
            },
            ensure_ascii=False,
        )
    )


async def _profile(url: str) -> Profile:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
        return await detect_profile(http, url, "openai")


if __name__ == "__main__":
    main()
