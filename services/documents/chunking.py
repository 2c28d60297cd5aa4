"""Pages in, bounded chunks out: the unit the card generator reads and cites.

``Chunker.add(page)`` takes pages as extraction streams them and returns the chunks completed so
far; ``finish()`` returns the last one. A chunk packs consecutive text (tiny slides merge until
the bound) and may span pages: it holds one ``Segment`` per page part, so every card can cite its
page label and section.

Rules, in order of preference:
* cut between paragraphs; a paragraph that does not fit is kept whole for the next chunk, unless
  the current chunk is less than half full, then it is split between sentences to fill it;
* a paragraph longer than a chunk is split between sentences (and lines); a sentence longer than
  a chunk is hard-split between tokens (a run of letters longer than a chunk, between characters);
* never more than ``max_tokens`` (``services.extraction.tokens.count_tokens``, which is additive
  over whitespace, so the sum of the parts bounds the whole);
* each chunk after the first starts with up to ``overlap_tokens`` of the previous chunk's tail
  (whole sentences when they fit, else the last words), as a segment of the page it came from.
  The overlap is capped at half of ``max_tokens`` so every chunk carries new text.
Pages without text are skipped; indices are dense from 0; same pages in, same chunks out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.domain import Chunk, Page, Segment
from services.extraction.tokens import count_tokens, token_spans

_PARAGRAPHS = re.compile(r"\n[ \t]*\n\s*")
_SENTENCES = re.compile(r"(?<=[.!?…])[ \t]+(?=\S)|[ \t]*\n\s*")
PARAGRAPH, SENTENCE, PIECE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Unit:
    page: Page
    text: str
    tokens: int
    sep: str  # whitespace that joins this unit to the previous unit of the same page


def _hard_split(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` tokens, cut between tokens (inside a too-long token if need be)."""
    pieces: list[str] = []
    start, used = 0, 0
    for begin, end, tokens in token_spans(text):
        if tokens > limit:  # one giant run of letters/digits: cut it into character slices
            if used:
                pieces.append(text[start:begin])
            step = limit  # a character is at most 4 bytes, so `limit` characters are <= `limit` tokens
            pieces.extend(text[i : min(i + step, end)] for i in range(begin, end, step))
            start, used = end, 0
            continue
        if used + tokens > limit:
            pieces.append(text[start:begin])
            start, used = begin, 0
        used += tokens
    if text[start:].strip():
        pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def _tail_start(text: str, budget: int) -> int:
    """Where the end of ``text`` worth at most ``budget`` tokens starts (between tokens)."""
    # Spans of the last few characters only (a paragraph can be long, the budget is small). The
    # window's first span may be a run cut in two; the walk back must stop before reaching it.
    for window in (budget * 16, len(text)):
        start = max(0, len(text) - window)
        spans = token_spans(text[start:])
        if start == 0 or sum(tokens for _b, _e, tokens in spans[1:]) > budget:
            break
    used, cut = 0, len(text)
    for begin, _end, tokens in reversed(spans):
        if used + tokens > budget:
            break
        used, cut = used + tokens, start + begin
    return cut


def _tail(text: str, budget: int) -> str:
    """The end of ``text`` worth at most ``budget`` tokens: whole sentences if any fit, else words."""
    cut = _tail_start(text, budget)
    tail = text[cut:]
    if cut > 0 and not text[:cut].rstrip().endswith((".", "!", "?", "…")):
        boundary = _SENTENCES.search(tail)
        if boundary and tail[boundary.end() :].strip():
            tail = tail[boundary.end() :]
    return tail.strip()


def _sentences(text: str) -> list[tuple[str, str]]:
    """(separator before, sentence) pairs; a line break counts as a sentence boundary."""
    out: list[tuple[str, str]] = []
    start, sep = 0, ""
    for m in _SENTENCES.finditer(text):
        if text[start : m.start()].strip():
            out.append((sep, text[start : m.start()]))
        start, sep = m.end(), "\n" if "\n" in m.group() else " "
    if text[start:].strip():
        out.append((sep, text[start:]))
    return out


class Chunker:
    """Incremental chunker; see the module docstring for the rules."""

    def __init__(self, max_tokens: int, overlap_tokens: int) -> None:
        if max_tokens < 2:
            raise ValueError("max_tokens must be at least 2")
        self.max_tokens = max_tokens
        self.overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
        self._units: list[_Unit] = []
        self._carried = 0  # how many leading units are overlap from the previous chunk
        self._tokens = 0
        self._index = 0

    def add(self, page: Page) -> list[Chunk]:
        """Feed one page; returns the chunks it completed (possibly none)."""
        out: list[Chunk] = []
        if not page.text.strip():
            return out
        for n, paragraph in enumerate(p for p in _PARAGRAPHS.split(page.text.strip()) if p.strip()):
            self._push(page, paragraph.strip(), PARAGRAPH, "\n\n" if n else "", out)
        return out

    def finish(self) -> list[Chunk]:
        """The last chunk, if any new text is pending."""
        return [self._emit()] if len(self._units) > self._carried else []

    def _push(self, page: Page, text: str, level: int, sep: str, out: list[Chunk]) -> None:
        tokens = count_tokens(text)
        unit_limit = self.max_tokens - self.overlap_tokens
        free = self.max_tokens - self._tokens
        new_tokens = sum(u.tokens for u in self._units[self._carried :])
        fill = level == PARAGRAPH and tokens > free and new_tokens < unit_limit // 2
        if level < PIECE and (tokens > unit_limit or fill):
            if level == PARAGRAPH:
                parts = _sentences(text)
            else:
                parts = [(" ", piece) for piece in _hard_split(text, unit_limit)]
            if len(parts) > 1 or tokens > unit_limit:
                for i, (part_sep, part) in enumerate(parts):
                    self._push(page, part.strip(), level + 1, sep if i == 0 else part_sep, out)
                return
        if tokens > free and len(self._units) > self._carried:
            out.append(self._emit())
        self._units.append(_Unit(page, text, tokens, sep))
        self._tokens += tokens

    def _emit(self) -> Chunk:
        segments: list[Segment] = []
        page: Page | None = None
        parts: list[str] = []
        for unit in self._units:
            if page is not None and unit.page.number == page.number:
                parts.append((unit.sep or " ") + unit.text)
                continue
            if page is not None:
                segments.append(Segment(page.number, page.label, page.section, "".join(parts)))
            page, parts = unit.page, [unit.text]
        assert page is not None
        segments.append(Segment(page.number, page.label, page.section, "".join(parts)))
        # Units are joined by whitespace, which costs no token: the count adds up exactly.
        chunk = Chunk(self._index, tuple(segments), sum(unit.tokens for unit in self._units))
        self._index += 1
        self._carry_overlap()
        return chunk

    def _carry_overlap(self) -> None:
        budget, carried = self.overlap_tokens, list[_Unit]()
        for unit in reversed(self._units):
            if budget <= 0 or (carried and unit.tokens > budget):
                break  # whole units only, once one is carried: no dangling half sentence up front
            text = unit.text if unit.tokens <= budget else _tail(unit.text, budget)
            if not text:
                break
            tokens = count_tokens(text)
            carried.append(_Unit(unit.page, text, tokens, unit.sep if text == unit.text else ""))
            budget -= tokens
            if text != unit.text:
                break
        self._units = carried[::-1]
        self._carried = len(self._units)
        self._tokens = sum(u.tokens for u in self._units)


def chunk_pages(pages: Iterable[Page], max_tokens: int, overlap_tokens: int) -> list[Chunk]:
    """Every chunk of a whole document at once (the splitter feeds a Chunker page by page)."""
    chunker = Chunker(max_tokens, overlap_tokens)
    made = [chunk for page in pages for chunk in chunker.add(page)]
    return made + chunker.finish()
