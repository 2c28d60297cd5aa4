"""Text clean-up shared by the readers: whitespace, hyphenation, repeated headers and footers.

Everything here is pure and deterministic, and never drops a letter it was not asked to drop:
``normalize_text`` only rewrites whitespace and invisible characters, ``join_hyphenated`` only removes
the hyphen (and line break) of a word split across two lines, and ``RepeatedEdgeFilter`` removes
lines only when the same short text (page numbers normalised away) sits at the same edge of nearby
pages. All of it works on whole texts with compiled regexes: it runs on every page.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b\u2060\ufeff\ufffd]")
_LIGATURES = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
_SPACES = "\t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
_TABLE = str.maketrans({**_LIGATURES, **dict.fromkeys(_SPACES, " ")})
_ODD = re.compile(f"[{''.join(_LIGATURES)}{_SPACES}]")
_INNER_SPACES = re.compile(r"(\S)  +")
_TRAILING_SPACES = re.compile(r" +$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
_HYPHEN_BREAK = re.compile(r"[-\u2010] *\n(?: *\n)? *(\S+)(?: +|(?=\n)|$)")  # starts with a literal: fast


def normalize_text(text: str) -> str:
    """Drop control/invisible characters, expand ligatures, make every space a plain one and squeeze
    runs of them (leading indentation is kept: it carries structure in code and nested lists),
    strip line ends, keep at most one blank line in a row, and no blank lines at either end.

    Each step is one compiled-regex scan, skipped when a cheap search says it has nothing to do:
    this runs on every page."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if _ODD.search(text):
        text = text.translate(_TABLE)
    if "  " in text:
        text = _INNER_SPACES.sub(r"\1 ", text)
    if " \n" in text or text.endswith(" "):
        text = _TRAILING_SPACES.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def join_hyphenated(text: str) -> str:
    """Join words hyphenated across a line end: ``"infor-\nmation is"`` -> ``"information\nis"``.

    Only when the hyphen follows a letter and the next line (or the first line of the next block,
    for a word split around a figure) starts with a lowercase letter, so ``"well-\nKnown"`` and
    list dashes stay as they are. The rejoined word moves up; the rest of its line stays put."""

    def rejoin(m: re.Match[str]) -> str:
        start, word = m.start(), m.group(1)
        if start == 0 or not text[start - 1].isalpha() or not word[0].islower():
            return m.group(0)
        return word + ("\n" if m.group(0).endswith(" ") else "")

    return _HYPHEN_BREAK.sub(rejoin, text)


_NUMBER = re.compile(r"\d+(?![.)\d])")
_ROMAN_EDGE = re.compile(r"^[ivxlcdm]+\b|\b[ivxlcdm]+$")


def edge_key(line: str) -> str:
    """What a running header/footer line looks like with its page number taken out.

    Numbers become ``#`` unless they read like numbering (``2.``, ``3)``), so ``Exemple 2.`` and
    ``Exemple 5.`` stay different; roman numerals only at the start or end of the line."""
    text = " ".join(line.lower().split())
    return _ROMAN_EDGE.sub("#", _NUMBER.sub("#", text))


T = TypeVar("T")
Edge = tuple[float, float, Sequence[str]]  # y0, y1, lines of one block
Spot = tuple[int, int]  # (block index, line index)


@dataclass(slots=True)
class _Pending(Generic[T]):
    item: T
    keys: dict[Spot, str]


class RepeatedEdgeFilter(Generic[T]):
    """Drops running header/footer lines that repeat at the same edge on nearby pages.

    Pages stream through a window: page *i* is decided once pages *i-window .. i+window* have
    been seen, so output lags input by ``window`` pages and memory stays bounded. Candidates are
    the lines of the first/last ``per_edge`` blocks lying wholly in the top/bottom ``band`` of the
    page, and only short lines (running heads are a few words, not a sentence of body text); a
    line is dropped when its ``edge_key`` appears at the same edge on at least ``min_repeats``
    other pages of the window.
    """

    max_chars, max_words = 90, 12

    def __init__(self, window: int = 6, min_repeats: int = 2, band: float = 0.15, per_edge: int = 2):
        self.window, self.min_repeats, self.band, self.per_edge = window, min_repeats, band, per_edge
        self._pages: deque[_Pending[T]] = deque()
        self._counts: Counter[str] = Counter()
        self._next = 0  # index (within _pages) of the next page to decide

    def candidates(self, blocks: Sequence[Edge], height: float) -> dict[Spot, str]:
        keys: dict[Spot, str] = {}
        bottom = range(max(len(blocks) - self.per_edge, 0), len(blocks))
        for b in [*range(min(self.per_edge, len(blocks))), *bottom]:
            y0, y1, lines = blocks[b]
            edge = "t:" if y1 <= self.band * height else "b:" if y0 >= (1 - self.band) * height else ""
            for i, line in enumerate(lines):
                short = 0 < len(line.strip()) <= self.max_chars and len(line.split()) <= self.max_words
                if edge and short and (b, i) not in keys:
                    keys[b, i] = edge + edge_key(line)
        return keys

    def push(self, item: T, blocks: Sequence[Edge], height: float) -> Iterator[tuple[T, set[Spot]]]:
        """Add a page; yield (item, (block, line) spots to drop) for every page now decided."""
        keys = self.candidates(blocks, height)
        self._pages.append(_Pending(item, keys))
        self._counts.update(set(keys.values()))
        while self._next < len(self._pages) and len(self._pages) - 1 - self._next >= self.window:
            yield self._decide()

    def flush(self) -> Iterator[tuple[T, set[Spot]]]:
        while self._next < len(self._pages):
            yield self._decide()

    def _decide(self) -> tuple[T, set[Spot]]:
        page = self._pages[self._next]
        drop = {spot for spot, key in page.keys.items() if self._counts[key] - 1 >= self.min_repeats}
        self._next += 1
        while self._next > self.window:  # forget pages that left the window behind
            old = self._pages.popleft()
            self._counts.subtract(set(old.keys.values()))
            self._next -= 1
        return page.item, drop
