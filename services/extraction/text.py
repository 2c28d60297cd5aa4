"""Plain text, Markdown and subtitles (SRT/VTT), and the page estimator DOCX shares.

Decoding: a BOM wins (UTF-8, UTF-16 LE/BE, UTF-32); then UTF-16 without a BOM (NULs in every
other byte); then strict UTF-8; then windows-1252 when it reads cleanly (charset-normalizer's mess ratio
under 0.2: short German or French text is often misdetected as cp775/cp1250), else
charset-normalizer's detection. NUL bytes in anything that is not UTF-16,
or bytes no codec explains, mean a binary file: ``UnsupportedFileType``.

Pages: text has no stored page numbers, so ``paginate`` cuts an *estimated* page every
~``WORDS_PER_PAGE`` words at a block (paragraph) boundary, at explicit page breaks, and preferably
right before a heading once a page is more than half full. A page's section is the heading path
where its first body text sits. Labels read "≈3". Markdown ``#``
headings build the section path; subtitle index and timestamp lines are dropped.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import charset_normalizer
from charset_normalizer.md import mess_ratio

from services.domain import DocumentOpened, Page
from services.errors import UnsupportedFileType

from .cleanup import normalize_text

WORDS_PER_PAGE = 500
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_MD_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
_SUB_SUFFIXES = {".srt", ".vtt"}
_TIMESTAMP = re.compile(r"^\s*(\d{1,2}:)?\d{1,2}:\d{2}[,.]\d{3}\s*-->.*$")
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 without a BOM: NULs in the high byte of most characters, and few distinct high bytes
    (one script plus punctuation). A binary file with some UTF-16 inside (an Office lock file)
    fails the second test: its other bytes land on the high side too."""
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    for codec, high in (("utf-16-le", 1), ("utf-16-be", 0)):
        if sample[high::2].count(0) > 0.3 * pairs and sample[1 - high :: 2].count(0) < 0.05 * pairs:
            return codec if len(set(sample[high:1024:2])) <= 6 else None
    return None


def _single_byte_codec(data: bytes) -> str | None:
    """windows-1252 if it reads cleanly (charset-normalizer's mess ratio), else the detector's pick."""
    try:
        if mess_ratio(data[:65536].decode("cp1252"), 1.0) < 0.2:
            return "cp1252"
    except UnicodeDecodeError:
        pass
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        return None
    return "cp1252" if "cp1252" in best.could_be_from_charset else best.encoding


def looks_like_text(sample: bytes, *, complete: bool) -> str | None:
    """None if ``sample`` (the start of a file, or all of it) reads as text, else why not."""
    if sample.startswith(tuple(bom for bom, _ in _BOMS)) or _utf16_without_bom(sample):
        return None
    if b"\x00" in sample:
        return "binary data (NUL bytes) that is not UTF-16 text"
    if len(_CONTROL.findall(sample)) > 0.05 * len(sample):
        return "binary data, not text"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return None
    except UnicodeDecodeError:
        pass
    return None if _single_byte_codec(sample) else "could not determine the text encoding"


def decode_text(data: bytes) -> str:
    """Bytes to text following the module docstring; raises UnsupportedFileType for binary data."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    if (codec16 := _utf16_without_bom(data[:65536])) is not None:
        return data.decode(codec16, errors="replace")
    why_not = looks_like_text(data[:65536], complete=len(data) <= 65536)
    if why_not:
        raise UnsupportedFileType(why_not)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        detected = _single_byte_codec(data)
        if detected is None:
            raise UnsupportedFileType("could not determine the text encoding") from None
        return data.decode(detected, errors="replace")


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph-like unit for ``paginate``."""

    text: str
    heading: int | None = None  # heading level (0 = document title) or None for body text
    page_break: bool = False  # an explicit page break comes right before this block


def _weight(text: str) -> int:
    return max(len(text.split()), len(text) // 10)


def _pieces(text: str, limit: int) -> Iterator[str]:
    """Lines of ``text`` cut into runs of at most ~``limit`` words (giant words cut by characters)."""
    step = limit * 10
    for line in text.split("\n"):
        run: list[str] = []
        size = 0
        for word in line.split(" "):
            cost = max(1, len(word) // 10)
            if run and size + cost > limit:
                yield " ".join(run)
                run, size = [], 0
            if len(word) > step:
                yield from (word[i : i + step] for i in range(0, len(word), step))
                continue
            run.append(word)
            size += cost
        if run:
            yield " ".join(run)


def _split_oversized(blocks: Iterable[Block], words_per_page: int) -> Iterator[Block]:
    """Cut blocks far larger than a page at line, then word, then character boundaries."""
    for block in blocks:
        if block.heading is not None or _weight(block.text) <= words_per_page * 3 // 2:
            yield block
            continue
        first, parts, size = True, list[str](), 0
        for piece in _pieces(block.text, words_per_page):
            if parts and size + _weight(piece) > words_per_page:
                yield Block("\n".join(parts), page_break=block.page_break and first)
                first, parts, size = False, [], 0
            parts.append(piece)
            size += _weight(piece)
        if parts:
            yield Block("\n".join(parts), page_break=block.page_break and first)


def paginate(
    blocks: Iterable[Block], words_per_page: int = WORDS_PER_PAGE
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(section path, page text) for each estimated page; see the module docstring."""
    path: list[tuple[int, str]] = []
    parts: list[str] = []
    section: tuple[str, ...] = ()
    words, has_body = 0, False
    for block in _split_oversized(blocks, words_per_page):
        heading_cut = block.heading is not None and words >= words_per_page * 0.6
        if parts and (block.page_break or words >= words_per_page or heading_cut):
            yield section, "\n\n".join(parts)
            parts, words = [], 0
        if block.heading is not None and block.text.strip():
            while path and path[-1][0] >= block.heading:
                path.pop()
            path.append((block.heading, " ".join(block.text.split())[:200]))
        if not block.text.strip():
            continue
        if not parts or (block.heading is None and not has_body):
            section = tuple(title for _, title in path)  # where the page's first body text sits
        has_body = (has_body and bool(parts)) or block.heading is None
        parts.append(block.text)
        words += _weight(block.text)
    if parts:
        yield section, "\n\n".join(parts)


def _strip_subtitles(text: str) -> str:
    lines = text.split("\n")
    keep: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _TIMESTAMP.match(line) or (line.strip().isdigit() and _TIMESTAMP.match(nxt)):
            continue
        if i == 0 and line.strip().startswith("WEBVTT"):
            continue
        keep.append(line)
    return "\n".join(keep)


def _markdown_blocks(text: str) -> Iterator[Block]:
    para: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _ATX.match(line)
        if heading or (not fenced and not line.strip()):
            if para:
                yield Block("\n".join(para))
                para = []
            if heading:
                yield Block(heading.group(2), heading=len(heading.group(1)))
            continue
        para.append(line)
    if para:
        yield Block("\n".join(para))


def _plain_blocks(text: str) -> Iterator[Block]:
    for para in re.split(r"\n[ \t]*\n", text):
        if para.strip():
            yield Block(para)


def read_text(path: Path, *, filename: str) -> Generator[DocumentOpened | Page, None, None]:
    """Text, Markdown or subtitles as estimated pages."""
    text = decode_text(path.read_bytes()).replace("\r\n", "\n").replace("\r", "\n")
    suffix = PurePath(filename).suffix.lower()
    if suffix in _SUB_SUFFIXES or any(_TIMESTAMP.match(line) for line in text.split("\n", 8)[:8]):
        text = _strip_subtitles(text)
    blocks = _markdown_blocks(text) if suffix in _MD_SUFFIXES else _plain_blocks(text)
    pages = [(section, text) for section, body in paginate(blocks) if (text := normalize_text(body))]
    yield DocumentOpened("text", max(len(pages), 1))
    if not pages:
        yield Page(1, "≈1", (), "", "skipped", "empty: the file contains no text")
    for number, (section, body) in enumerate(pages, start=1):
        yield Page(number, f"≈{number}", section, body, "text")
