"""PDF pages with PyMuPDF: text in reading order, sections, labels, OCR for scanned pages.

* Opening: encrypted files that need a password are refused (no guessing; an empty user password
  is tried by MuPDF itself). A file MuPDF cannot open, or opens with no pages, is often a cut-off
  download: ``_salvage`` appends a fresh page tree over the ``/Type /Page`` objects still in it.
* Sections: from the outline (TOC) when there is one, else from font sizes notably larger than
  the body size (sampled on up to 12 pages). Labels: the PDF's page labels, else the number.
* Text: text blocks sorted top-to-bottom then left-to-right, hyphenation at line ends joined,
  running headers/footers dropped (``cleanup.RepeatedEdgeFilter``). Images are never decoded for
  text extraction; ``find_tables`` runs only when ``tables=True`` (it costs 10-100x per page).
* Pages without text but with images are OCRed with Tesseract (MuPDF's built-in, language data
  from tessdata) when allowed and within the pixel budget; otherwise skipped with the reason.
  OCR costs 1-2 s a page. Given an ``ocr_cache`` folder (one per file: the worker names it by
  the upload's SHA-256), each page's OCR result is kept there and read back by the next
  extraction of the same file: a scanned book handed to another worker mid-way, or replayed,
  is OCRed once. The file name holds the page, DPI, language and ``OCR_CACHE_VERSION``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from collections import Counter
from collections.abc import Generator
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pymupdf

from services.domain import DocumentOpened, Page, PageMethod
from services.errors import CorruptFile, EmptyFile, FileTooLarge, PasswordProtected
from services.settings import LimitSettings

from .cleanup import RepeatedEdgeFilter, join_hyphenated, normalize_text

fitz: Any = pymupdf  # PyMuPDF's methods are untyped (*args, **kwargs); keep that in one place
FLAGS = fitz.TEXT_PRESERVE_WHITESPACE | fitz.TEXT_MEDIABOX_CLIP  # no images, ligatures expanded
OCR_DPI = 300
OCR_CACHE_VERSION = "ocr1"  # change it when _ocr's output changes for the same page
TESSDATA_GLOBS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata")
_PAGE_OBJ = re.compile(rb"(\d+)\s+0\s+obj\s*<<\s*/Type\s*/Page(?![a-zA-Z])")
_OBJ = re.compile(rb"(\d+)\s+\d+\s+obj\b")


class Block(NamedTuple):
    y0: float
    y1: float
    x0: float
    lines: list[str]
    level: int | None  # heading level from font size (no-TOC documents only)


@cache
def find_tessdata(language: str) -> str | None:
    """A tessdata directory holding every ``+``-joined language, or None (OCR unavailable)."""
    found = sorted((path for pattern in TESSDATA_GLOBS for path in glob.glob(pattern)), reverse=True)
    for folder in filter(None, [os.environ.get("TESSDATA_PREFIX", ""), *found]):
        if all(os.path.isfile(os.path.join(folder, f"{lang}.traineddata")) for lang in language.split("+")):
            return folder
    return None


def _salvage(path: Path) -> Any | None:
    """Rebuild the page tree of a damaged/truncated PDF from the page objects left in it."""
    data = path.read_bytes()
    ids = list(dict.fromkeys(int(m.group(1)) for m in _PAGE_OBJ.finditer(data)))
    last = data.rfind(b"endobj")
    if not ids or last < 0:
        return None
    top = max(int(m.group(1)) for m in _OBJ.finditer(data)) + 1
    kids = " ".join(f"{i} 0 R" for i in ids)
    tail = (
        f"\n{top} 0 obj\n<</Type/Pages/Kids[{kids}]/Count {len(ids)}>>\nendobj\n"
        f"{top + 1} 0 obj\n<</Type/Catalog/Pages {top} 0 R>>\nendobj\n"
        f"trailer\n<</Size {top + 2}/Root {top + 1} 0 R>>\n%%EOF\n"
    )
    try:
        doc = fitz.open(stream=data[: last + 6] + tail.encode(), filetype="pdf")
    except Exception:
        return None
    return doc if doc.page_count > 0 else None


def open_pdf(path: Path, limits: LimitSettings, *, notes: list[str] | None = None) -> Any:
    """An open ``pymupdf.Document`` with at least one page, or an InputRejected error."""
    fitz.TOOLS.mupdf_display_errors(False)
    try:
        doc = fitz.open(path, filetype="pdf")
    except fitz.EmptyFileError as e:
        raise EmptyFile("the file is empty (0 bytes)") from e
    except Exception:
        doc = None
    if doc is not None and doc.needs_pass:
        doc.close()
        raise PasswordProtected("password protected")
    if doc is None or doc.page_count == 0:
        if doc is not None:
            doc.close()
        doc = _salvage(path)
        if doc is None:
            raise CorruptFile("the PDF is damaged: no readable pages")
        if notes is not None:
            notes.append("the PDF is damaged or truncated; its pages were recovered from what is left")
    if (count := doc.page_count) > limits.max_pages:
        doc.close()
        raise FileTooLarge(f"the document has {count} pages; the limit is {limits.max_pages}")
    return doc


def toc_sections(toc: list[list[Any]], pages: int) -> list[tuple[str, ...]] | None:
    """Heading path of every page from the outline: the last entry starting on or before it."""
    events: list[tuple[int, tuple[str, ...]]] = []
    stack: list[str] = []
    for entry in toc[: 20 * pages + 1000]:
        level, title, number = int(entry[0]), " ".join(str(entry[1]).split())[:200], int(entry[2])
        del stack[max(0, min(level, len(stack) + 1) - 1) :]
        stack.append(title)
        if 1 <= number <= pages:
            events.append((number, tuple(stack)))
    if not events:
        return None
    events.sort(key=lambda event: event[0])
    sections: list[tuple[str, ...]] = []
    current: tuple[str, ...] = ()
    k = 0
    for number in range(1, pages + 1):
        while k < len(events) and events[k][0] <= number:
            current, k = events[k][1], k + 1
        sections.append(current)
    return sections


class FontLevels:
    """Heading levels from font size: notably (20%+) larger than the body size, biggest first."""

    def __init__(self, doc: Any) -> None:
        sizes: Counter[float] = Counter()
        step = max(1, doc.page_count // 12)
        for number in range(0, doc.page_count, step):
            try:
                for block in doc[number].get_text("dict", flags=FLAGS)["blocks"]:
                    for line in block.get("lines", ()):
                        for span in line["spans"]:
                            sizes[round(span["size"] * 2) / 2] += len(span["text"].strip())
            except Exception:
                continue
        self.body = max(sizes, key=lambda s: (sizes[s], -s)) if sizes else 0.0
        self.levels = sorted((s for s in sizes if s >= self.body * 1.2), reverse=True)[:4]

    def level(self, size: float) -> int | None:
        if not self.body or size < self.body * 1.2:
            return None
        return 1 + sum(1 for s in self.levels if s > size + 0.25) if self.levels else 1


def _reading_order(block: Block) -> tuple[int, float]:
    return round(block.y0 / 3), block.x0  # top to bottom (same line within 3 pt), then left to right


def _blocks(page: Any, fonts: FontLevels | None, textpage: Any = None) -> list[Block]:
    found: list[Block] = []
    if fonts is None:
        raw = page.get_text("blocks", flags=FLAGS, textpage=textpage)
        found = [Block(b[1], b[3], b[0], b[4].split("\n"), None) for b in raw if b[6] == 0 and b[4].strip()]
        return sorted(found, key=_reading_order)
    for b in page.get_text("dict", flags=FLAGS)["blocks"]:  # font sizes: only without an outline
        lines = ["".join(s["text"] for s in line["spans"]) for line in b.get("lines", ())]
        spans = [s for line in b.get("lines", ()) for s in line["spans"] if s["text"].strip()]
        chars = sum(len(s["text"]) for s in spans)
        size = sum(s["size"] * len(s["text"]) for s in spans) / chars if chars else 0.0
        short = len(lines) <= 3 and chars <= 150 and any(c.isalpha() for c in "".join(lines))
        if chars:
            level = fonts.level(size) if short else None
            found.append(Block(b["bbox"][1], b["bbox"][3], b["bbox"][0], lines, level))
    return sorted(found, key=_reading_order)


def _table_blocks(page: Any, blocks: list[Block]) -> list[Block]:
    """Opt-in: tables as rows ``cell | cell``, replacing the text blocks they cover."""
    tables = page.find_tables().tables
    if not tables:
        return blocks
    boxes = [t.bbox for t in tables]
    kept = [
        b
        for b in blocks
        if not any(x0 <= b.x0 + 1 and y0 <= b.y0 + 1 and b.y1 <= y1 + 1 for x0, y0, _x1, y1 in boxes)
    ]
    for table, (x0, y0, _x1, y1) in zip(tables, boxes, strict=True):
        rows = [" | ".join(" ".join(str(c or "").split()) for c in row) for row in table.extract()]
        kept.append(Block(y0, y1, x0, [r for r in rows if r.strip(" |")], None))
    return sorted(kept, key=_reading_order)


def _ocr(page: Any, limits: LimitSettings, cache: Path | None) -> tuple[list[Block], PageMethod, str | None]:
    if not limits.ocr:
        return [], "skipped", "image-only page; OCR disabled"
    for image in page.get_images(full=True):
        if image[2] * image[3] > limits.max_image_pixels:
            return [], "skipped", f"image-only page; image too large to OCR ({image[2]}x{image[3]} pixels)"
    area = page.rect.width * page.rect.height / 72 / 72  # square inches
    dpi = min(OCR_DPI, int(math.sqrt(limits.max_image_pixels / max(area, 1e-6))))
    if dpi < 72:
        return [], "skipped", "image-only page; page too large to OCR"
    name = f"{OCR_CACHE_VERSION}-{page.number + 1}-{dpi}-{limits.ocr_language}.json"
    saved = cache / name if cache else None
    blocks = _cached_ocr(saved)
    if blocks is None:
        tessdata = find_tessdata(limits.ocr_language)
        if tessdata is None:
            return [], "skipped", "image-only page; OCR unavailable"
        os.environ.setdefault("TESSDATA_PREFIX", tessdata)
        textpage = page.get_textpage_ocr(language=limits.ocr_language, dpi=dpi, full=True, tessdata=tessdata)
        blocks = _blocks(page, None, textpage)
        _save_ocr(saved, blocks)
    if not blocks:
        return [], "skipped", "image-only page; OCR found no text"
    return blocks, "ocr", None


def _cached_ocr(saved: Path | None) -> list[Block] | None:
    """A page's OCR blocks from an earlier extraction of the same file, or None."""
    if saved is None:
        return None
    try:
        return [Block(*b) for b in json.loads(saved.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):  # not there yet, or cut short: OCR it again
        return None


def _save_ocr(saved: Path | None, blocks: list[Block]) -> None:
    if saved is None:
        return
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(f".{saved.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(blocks, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, saved)
    except OSError:  # a cache: extraction goes on without it
        pass


def _label(index: int, rules: list[dict[str, Any]]) -> str:
    """The printed label of page ``index`` from ``Document.get_page_labels()`` rules, or ""."""
    rule = next((r for r in reversed(rules) if r.get("startpage", 0) <= index), None)
    if rule is None:
        return ""
    style, start, first = rule.get("style", ""), rule.get("startpage", 0), rule.get("firstpagenum", 1)
    number = index - start + first - (1 if style in ("a", "A") else 0)  # letter labels count from 0
    try:
        return str(fitz.utils.construct_label(style, rule.get("prefix", ""), number))
    except Exception:
        return ""


class _Raw(NamedTuple):
    number: int
    label: str
    blocks: list[Block]
    method: PageMethod
    reason: str | None
    height: float = 1.0


def _read_page(
    doc: Any,
    index: int,
    labels: list[Any],
    limits: LimitSettings,
    fonts: FontLevels | None,
    tables: bool,
    ocr_cache: Path | None,
) -> _Raw:
    number = index + 1
    label = _label(index, labels) or str(number)
    try:
        page = doc.load_page(index)
        blocks = _blocks(page, fonts)
        if blocks and tables:
            blocks = _table_blocks(page, blocks)
        method: PageMethod = "text"
        reason = None
        if not blocks:
            blocks, method, reason = (
                _ocr(page, limits, ocr_cache) if page.get_images(full=True) else ([], "skipped", "blank page")
            )
        return _Raw(number, label, blocks, method, reason, page.rect.height or 1.0)
    except MemoryError:
        return _Raw(number, label, [], "skipped", "unreadable page: needs more memory than allowed")
    except Exception as e:
        return _Raw(number, label, [], "skipped", f"unreadable page: {str(e)[:160] or type(e).__name__}")


def read_pdf(
    path: Path,
    limits: LimitSettings,
    notes: list[str],
    *,
    tables: bool = False,
    ocr_cache: Path | None = None,
) -> Generator[DocumentOpened | Page, None, None]:
    """DocumentOpened, then one Page per PDF page in order (see the module docstring).
    ``ocr_cache``: a folder for this file's OCR results (see the module docstring)."""
    doc = open_pdf(path, limits, notes=notes)
    try:
        pages = doc.page_count
        title = (doc.metadata or {}).get("title") or None
        yield DocumentOpened("pdf", pages, " ".join(title.split())[:300] if title else None)
        try:
            sections = toc_sections(doc.get_toc(simple=True), pages)
            labels = sorted(doc.get_page_labels(), key=lambda rule: rule.get("startpage", 0))
        except Exception:
            sections, labels = None, []
        fonts = None if sections else FontLevels(doc)
        edges: RepeatedEdgeFilter[_Raw] = RepeatedEdgeFilter()
        path_now: list[tuple[int, str]] = []

        def finish(raw: _Raw, drop: set[tuple[int, int]]) -> Page:
            kept = [
                [line for i, line in enumerate(b.lines) if (k, i) not in drop]
                for k, b in enumerate(raw.blocks)
            ]
            for block, lines in zip(raw.blocks, kept, strict=True):
                if block.level is not None and any(line.strip() for line in lines):
                    while path_now and path_now[-1][0] >= block.level:
                        path_now.pop()
                    path_now.append((block.level, " ".join(" ".join(lines).split())[:200]))
            section = sections[raw.number - 1] if sections else tuple(t for _, t in path_now)
            text = join_hyphenated(normalize_text("\n\n".join("\n".join(lines) for lines in kept if lines)))
            if raw.method != "skipped" and not text:
                return Page(
                    raw.number, raw.label, section, "", "skipped", "blank page (only a header/footer)"
                )
            return Page(raw.number, raw.label, section, text, raw.method, raw.reason)

        try:
            for index in range(pages):
                raw = _read_page(doc, index, labels, limits, fonts, tables, ocr_cache)
                boxes = [(b.y0, b.y1, b.lines) for b in raw.blocks]
                yield from (finish(*decided) for decided in edges.push(raw, boxes, raw.height))
        except Exception:  # hand over the pages already read (the filter holds a few back), then fail
            yield from (finish(*decided) for decided in edges.flush())
            raise
        yield from (finish(*decided) for decided in edges.flush())
    finally:
        doc.close()
