"""Extraction proper: one reader per format behind a page ledger, in-process or as a subprocess.

``extract`` yields DocumentOpened, every Page in order (blank and failed pages included, each
with its reason), then ExtractionEnded, whose status is

* ``ok``: every page was read (blank pages and empty slides count as read);
* ``partial``: some text was read, but some pages were not (unreadable, image-only without OCR,
  cut at ``max_page_chars``, past the time limit) or the file was damaged;
* ``failed``: no text at all, with the reason.

``main`` is the same thing as a subprocess speaking JSON lines on stdout (see ``isolated``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.domain import DocumentOpened, ExtractionEnded, FileKind, Page
from services.errors import CorruptFile, FileTooLarge, InputRejected, UnsupportedFileType
from services.settings import LimitSettings

from .limits import check_file, check_upload
from .text import read_text
from .tokens import count_tokens

Event = DocumentOpened | Page | ExtractionEnded
BENIGN = ("blank", "empty")  # reasons for pages that had nothing to read, not pages we failed on


def page_label(kind: FileKind, number: int) -> str:
    return {"pptx": f"Slide {number}", "docx": f"≈{number}", "text": f"≈{number}"}.get(kind, str(number))


def _capped(page: Page, max_chars: int) -> Page:
    if len(page.text) <= max_chars:
        return replace(page, tokens=count_tokens(page.text))
    cut = page.text.rfind(" ", 0, max_chars + 1)
    text = page.text[: cut if cut > max_chars // 2 else max_chars].rstrip()
    return replace(page, text=text, tokens=count_tokens(text), reason=f"text cut at {max_chars} characters")


def _summary(pages: list[Page]) -> str:
    reason, _ = Counter(p.reason or "no text" for p in pages).most_common(1)[0]
    return f"{len(pages)} page{'s' if len(pages) != 1 else ''}: {reason}" if len(pages) > 1 else reason


def run(
    path: Path,
    limits: LimitSettings,
    *,
    filename: str,
    deadline: float,
    tables: bool = False,
    ocr_cache: Path | None = None,
) -> Iterator[Event]:
    """``extract`` with an explicit ``time.monotonic()`` deadline (the subprocess gets its parent's)."""
    kind = check_file(path, limits, filename=filename)  # read_pdf opens PDFs with check_upload's checks
    notes: list[str] = []
    source: Generator[DocumentOpened | Page, None, None]
    if kind == "pdf":  # parsers are imported on first use: a worker pays only for the one it needs
        from .pdf import read_pdf

        source = read_pdf(path, limits, notes, tables=tables, ocr_cache=ocr_cache)
    elif kind == "docx":
        from .docx import read_docx

        source = read_docx(path)
    elif kind == "pptx":
        from .pptx import read_pptx

        source = read_pptx(path)
    else:
        source = read_text(path, filename=filename)
    try:
        opened = next(source)
    except (InputRejected, MemoryError):
        raise
    except Exception as e:  # a parser that cannot even start on the file: the file is the problem
        raise CorruptFile(f"the file could not be read ({type(e).__name__}: {str(e)[:160]})") from e
    assert isinstance(opened, DocumentOpened)
    total = opened.pages_total or 0
    if total > limits.max_pages:
        raise FileTooLarge(f"the document has about {total} pages; the limit is {limits.max_pages}")
    yield opened
    seen: list[Page] = []
    why = None
    try:
        for item in source:
            assert isinstance(item, Page)
            seen.append(_capped(item, limits.max_page_chars))
            yield seen[-1]
            if time.monotonic() > deadline and len(seen) < total:
                why = f"not read: the document time limit of {limits.extract_timeout_s:g} s was reached"
                break
    except MemoryError:
        why = "not read: extraction exceeded the memory limit"
    except Exception as e:  # a reader bug or a parser blow-up mid-document: keep what was read
        why = f"unreadable: extraction stopped ({type(e).__name__}: {str(e)[:160]})"
    finally:
        source.close()
    if why is None and len(seen) < total:
        why = "unreadable: the reader stopped before this page"
    if why and len(seen) == total:
        notes.append(why)  # stopped after the last page: no page carries the reason
    for number in range(len(seen) + 1, total + 1 if why else 0):
        seen.append(Page(number, page_label(kind, number), (), "", "skipped", why))
        yield seen[-1]
    yield ledger_end(seen, notes)


def ledger_end(pages: list[Page], notes: list[str]) -> ExtractionEnded:
    """The closing status for a page ledger (see the module docstring)."""
    read = [p for p in pages if p.text.strip()]
    lost = [p for p in pages if p.reason and not p.reason.startswith(BENIGN)]
    if not read:
        why = _summary(pages) if pages else "the document has no pages"
        return ExtractionEnded("failed", len(pages), f"no text could be read ({why})")
    if lost or notes:
        missing = [f"{len(lost)} of {len(pages)} pages not fully read ({_summary(lost)})"] if lost else []
        return ExtractionEnded("partial", len(pages), "; ".join(notes + missing))
    return ExtractionEnded("ok", len(pages))


def extract(
    path: Path, limits: LimitSettings, *, filename: str, tables: bool = False, ocr_cache: Path | None = None
) -> Iterator[Event]:
    """In-process extraction; raises InputRejected subclasses for files refused as a whole."""
    deadline = time.monotonic() + limits.extract_timeout_s
    return run(path, limits, filename=filename, deadline=deadline, tables=tables, ocr_cache=ocr_cache)


def to_json(item: Event) -> str:
    tag = {DocumentOpened: "opened", Page: "page", ExtractionEnded: "ended"}[type(item)]
    return json.dumps({"t": tag, **dataclasses.asdict(item)}, ensure_ascii=False)


def near_memory_limit() -> bool:
    """Did this process come within 10% of its address-space limit (so a failure may be OOM)?"""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    peak = next((line.split()[1] for line in status.splitlines() if line.startswith("VmPeak:")), "0")
    return int(peak) * 1024 > 0.9 * limit


def main(argv: list[str] | None = None) -> int:
    """Subprocess entry: extract one file (or, with ``--check``, only check it; with ``--render``,
    only render one page), one JSON object per line on the original stdout."""
    parser = argparse.ArgumentParser(prog="python -m services.extraction.ledger")
    parser.add_argument("path", type=Path)
    parser.add_argument("--filename", required=True)
    parser.add_argument("--limits", default="{}", help="LimitSettings as JSON")
    parser.add_argument("--deadline", type=float, default=None, help="wall-clock (epoch) deadline")
    parser.add_argument("--tables", action="store_true")
    parser.add_argument("--ocr-cache", type=Path, default=None, help="a folder for this file's OCR results")
    parser.add_argument("--check", action="store_true", help="only check_upload: one 'checked' line")
    parser.add_argument("--render", type=int, default=None, help="only render this PDF page: 'rendered'")
    parser.add_argument("--width", type=int, default=1200, help="with --render: the image's width (px)")
    parser.add_argument("--png", type=Path, default=None, help="with --render: where the image goes")
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything C code prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def send(message: dict[str, Any] | str) -> None:
        out.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        out.flush()

    limits = LimitSettings.model_validate_json(args.limits)
    timeout = limits.extract_timeout_s if args.deadline is None else args.deadline - time.time()
    try:
        if args.check:
            send({"t": "checked", "kind": check_upload(args.path, limits, filename=args.filename)})
            return 0
        if args.render is not None:
            from .render import NoSuchPage, RenderJob, render_page

            if check_file(args.path, limits, filename=args.filename) != "pdf":  # MuPDF opens more
                raise UnsupportedFileType("only the pages of a PDF are rendered")
            try:
                rendered = render_page(args.path, limits, RenderJob(args.render, args.width, args.png))
            except NoSuchPage as e:
                send({"t": "no-page", "pages_total": e.pages_total})
                return 0
            send({"t": "rendered", **rendered.to_json()})
            return 0
        for item in run(
            args.path,
            limits,
            filename=args.filename,
            deadline=time.monotonic() + timeout,
            tables=args.tables,
            ocr_cache=args.ocr_cache,
        ):
            send(to_json(item))
    except InputRejected as e:
        if isinstance(e, CorruptFile) and near_memory_limit():  # libxml2/MuPDF report OOM as bad input
            send({"t": "error", "reason": "extraction exceeded the memory limit"})
            return 3
        send({"t": "rejected", "error": type(e).__name__, "reason": e.reason})
    except MemoryError:
        send({"t": "error", "reason": "extraction exceeded the memory limit"})
        return 3
    except Exception as e:
        send({"t": "error", "reason": f"extraction crashed: {type(e).__name__}: {str(e)[:200]}"})
        return 1
    return 0


_COLD = "import sys; from services.extraction.ledger import serve; sys.exit(serve())"
READY = b'{"t": "ready"}\n'  # a warm child's first line: its parsers are imported


def serve(*, warm: bool = False) -> int:
    """Subprocess entry used by ``isolated``: wait for one job on stdin (``main``'s arguments as a
    JSON list on one line), then run it. A warm child imports every parser first, while it waits."""
    if warm:
        try:
            from . import docx, pdf, pptx  # noqa: F401
        except Exception:  # MemoryError, or an ImportError from a library that could not map
            # The parsers do not all fit this child's memory limit. Start again cold: the limits
            # carry over exec, the job is still unread on stdin, and it imports only its parser.
            os.execv(sys.executable, [sys.executable, "-c", _COLD])
        os.write(1, READY)
    line = sys.stdin.readline()
    if not line:
        return 0  # the parent went away before giving us a job
    return main(json.loads(line))


if __name__ == "__main__":
    sys.exit(main())
