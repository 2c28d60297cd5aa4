"""Extraction benchmark: ``python -m bench extract`` (last line: one JSON object).

1. Throughput on the corpus textbook PDFs: our in-process ``extract()`` (OCR off, so both sides
   read the same text layer; OCR on is reported too) against raw PyMuPDF ``page.get_text()`` over
   the same files in the same run. Rounds alternate and the best round of each counts, which
   keeps other load on the machine out of the ratio. Target: ratio >= 0.7.
2. Isolation overhead: ``extract_isolated`` (a child started for the document) and
   ``Sandbox.extract`` (the worker's way: a child started ahead of time, parsers imported)
   minus ``extract`` on a one-page text file, and the time to the first page of a 352-page book
   both ways (pages stream; the book's first page is an image-only cover that is OCRed).
3. The whole corpus through ``extract_isolated``: ok / partial / failed / refused (with reasons) /
   crashed / timed out (the last two must be 0), and the worker's peak RSS (ru_maxrss of children).
"""

from __future__ import annotations

import csv
import json
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymupdf

from deckstream.corpus import CORPUS
from services.domain import ExtractionEnded, Page
from services.errors import InputRejected
from services.extraction import Sandbox, extract, extract_isolated
from services.extraction.ledger import Event
from services.settings import LimitSettings

fitz: Any = pymupdf  # untyped methods
ROUNDS = 5


def _textbooks() -> list[Path]:
    with (CORPUS / "MANIFEST.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [CORPUS / r["file"] for r in rows if "1-textbook-pdf" in r["category"] and r["kind"] == "pdf"]


def _raw(files: list[Path]) -> int:
    pages = 0
    for path in files:
        with fitz.open(path) as doc:
            for page in doc:
                page.get_text()
                pages += 1
    return pages


def _ours(files: list[Path], limits: LimitSettings) -> int:
    return sum(isinstance(e, Page) for path in files for e in extract(path, limits, filename=path.name))


def _best(fn: Callable[[], int], rounds: int) -> tuple[int, float]:
    best, pages = float("inf"), 0
    for _ in range(rounds):
        started = time.perf_counter()
        pages = fn()
        best = min(best, time.perf_counter() - started)
    return pages, best


def throughput() -> dict[str, float]:
    files = _textbooks()
    fitz.TOOLS.mupdf_display_errors(False)
    no_ocr = LimitSettings(ocr=False)
    _ours(files, no_ocr)  # warm caches and imports
    raw_best, ours_best, pages = float("inf"), float("inf"), 0
    for _ in range(ROUNDS):
        pages, t = _best(lambda: _raw(files), 1)
        raw_best = min(raw_best, t)
        pages, t = _best(lambda: _ours(files, no_ocr), 1)
        ours_best = min(ours_best, t)
    _, ocr_time = _best(lambda: _ours(files, LimitSettings()), 2)
    print(f"textbook PDFs: {len(files)} files, {pages} pages")
    print(f"  raw PyMuPDF get_text  {pages / raw_best:8.0f} pages/s")
    print(f"  extract() (OCR off)   {pages / ours_best:8.0f} pages/s   ratio {raw_best / ours_best:.2f}")
    print(f"  extract() (OCR on)    {pages / ocr_time:8.0f} pages/s   (OCRs the image-only cover page)")
    return {
        "textbook_pages": pages,
        "raw_pages_per_s": round(pages / raw_best, 1),
        "extract_pages_per_s": round(pages / ours_best, 1),
        "ratio": round(raw_best / ours_best, 3),
        "extract_pages_per_s_with_ocr": round(pages / ocr_time, 1),
    }


def _book_times(events: Iterator[Event]) -> tuple[float, float]:
    """Seconds to the first page and to the end."""
    started, first = time.perf_counter(), 0.0
    for event in events:
        if isinstance(event, Page) and not first:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


def isolation_overhead() -> dict[str, float]:
    limits = LimitSettings()
    box = Sandbox(limits)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            note = Path(tmp) / "note.txt"
            note.write_text("Osmosis moves water across a membrane.\n")
            inproc, cold, warm = [], [], []
            for _ in range(5):
                started = time.perf_counter()
                list(extract(note, limits, filename=note.name))
                inproc.append(time.perf_counter() - started)
                started = time.perf_counter()
                list(extract_isolated(note, limits, filename=note.name))
                cold.append(time.perf_counter() - started)
                box.prepare()
                box.wait_ready()
                started = time.perf_counter()
                list(box.extract(note, filename=note.name))
                warm.append(time.perf_counter() - started)
        book = CORPUS / "freeculture_lessig_352p.pdf"
        first, total = _book_times(extract_isolated(book, limits, filename=book.name))
        box.wait_ready()
        warm_first, warm_total = _book_times(box.extract(book, filename=book.name))
    finally:
        box.close()
    overhead = statistics.median(cold) - statistics.median(inproc)
    warm_overhead = statistics.median(warm) - statistics.median(inproc)
    print(f"isolation overhead per document: {overhead * 1000:.0f} ms cold (subprocess start + imports),")
    print(f"  {warm_overhead * 1000:.0f} ms with a child started ahead of time (the worker's Sandbox)")
    print(f"352-page book isolated: first page after {first:.2f} s cold, {warm_first:.2f} s warm;")
    print(f"  all pages after {total:.2f} s cold, {warm_total:.2f} s warm")
    return {
        "isolation_overhead_ms": round(overhead * 1000, 1),
        "warm_isolation_overhead_ms": round(warm_overhead * 1000, 1),
        "book_first_page_s": round(first, 3),
        "book_all_pages_s": round(total, 3),
        "warm_book_first_page_s": round(warm_first, 3),
        "warm_book_all_pages_s": round(warm_total, 3),
    }


def whole_corpus() -> dict[str, object]:
    limits = LimitSettings()
    outcomes: Counter[str] = Counter()
    refusals: dict[str, str] = {}
    problems: dict[str, str] = {}
    started = time.perf_counter()
    for path in sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md")):
        try:
            end = list(extract_isolated(path, limits, filename=path.name))[-1]
        except InputRejected as e:
            outcomes["refused"] += 1
            refusals[path.name] = f"{type(e).__name__}: {e.reason}"
            continue
        except Exception as e:  # must never happen: counted as a crash
            outcomes["crashed"] += 1
            problems[path.name] = f"{type(e).__name__}: {e}"
            continue
        assert isinstance(end, ExtractionEnded)
        reason = end.reason or ""
        if reason.startswith("timed out"):
            outcomes["timed_out"] += 1
            problems[path.name] = reason
        elif "crashed" in reason or "extraction failed" in reason or "killed" in reason:
            outcomes["crashed"] += 1
            problems[path.name] = reason
        else:
            outcomes[end.status] += 1
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"whole corpus isolated in {elapsed:.1f} s: {dict(outcomes)}; worker peak RSS {peak_mb:.0f} MB")
    for name, reason in refusals.items():
        print(f"  refused  {name}: {reason}")
    for name, reason in problems.items():
        print(f"  PROBLEM  {name}: {reason}")
    return {
        "corpus_files": sum(outcomes.values()),
        **{k: outcomes.get(k, 0) for k in ("ok", "partial", "failed", "refused", "crashed", "timed_out")},
        "refusals": refusals,
        "corpus_seconds": round(elapsed, 1),
        "worker_peak_rss_mb": round(peak_mb, 1),
    }


def main() -> None:
    if not CORPUS.is_dir():
        sys.exit(f"corpus not found at {CORPUS}")
    figures = {**throughput(), **isolation_overhead(), **whole_corpus()}
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
