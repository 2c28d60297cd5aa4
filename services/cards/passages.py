"""Which passage of its page supports a card, and where it sits on the page image.

Cards paraphrase: a small model rewords the question and often the answer, and a PDF's words
are cut by line breaks and hyphens, so an exact phrase search (``search_for``) finds nothing
for most cards. The passage is found by the key terms the grounding check already counts
(``rules.key_terms``: content words, stemmed, no stopwords):

1. The page's words are cut into sentences: at a word ending in ``.``, ``!`` or ``?``, at a new
   text block (a new paragraph in extracted text) unless it goes on in lower case, and at
   ``MAX_SENTENCE_WORDS`` words.
2. Each sentence, and each pair of neighbouring sentences, scores two points per key term of the
   answer it holds and one per other key term of the question. For a cloze card the answer is
   the hidden terms and the question the rest of its sentence.
3. The best scoring wins, the shorter on a tie; it must hold at least half of the answer's key
   terms (the question's when the answer has none), as the grounding check asks of the chunk.
   Below that nothing is highlighted: a wrong highlight is worse than none.

Words are read in the page's language (detected from its words; English when it cannot be told,
as before languages came), with that language's stopwords and stems.

Highlights are the words of the winning sentences, merged per line into rectangles (0..1 of
the page image's width and height). Extracted text (DOCX, PPTX, plain text) has no boxes: the
passage's text is still found, with no rectangles.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.cards.language import detect
from services.cards.lexicon import NEUTRAL, Lexicon, lexicon

MAX_SENTENCE_WORDS = 60
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in 0..1 of the page
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*$")
_CLOZE = re.compile(r"\{\{c\d+::(.*?)(?:::[^}]*)?\}\}", re.DOTALL)
BLOCK = 10_000  # a word's line key is block · BLOCK + line


@dataclass(frozen=True, slots=True)
class PageWord:
    text: str
    line: int  # block · BLOCK + line: words of one line share it
    box: Box | None = None


@dataclass(frozen=True, slots=True)
class Passage:
    text: str  # the supporting sentences as they read on the page
    rects: list[Box]  # one per line, empty for a page without word boxes
    terms: list[str]  # the card's key terms found there


def text_words(text: str) -> list[PageWord]:
    """Words of extracted text: paragraphs (blank-line separated) are blocks."""
    out: list[PageWord] = []
    for b, paragraph in enumerate(re.split(r"\n\s*\n", text)):
        for n, line in enumerate(paragraph.splitlines()):
            out += [PageWord(w, b * BLOCK + n) for w in line.split()]
    return out


def card_terms(
    card_type: str, front: str, back: str, lex: Lexicon | None = None
) -> tuple[list[str], list[str]]:
    """The answer's key terms, and the question's other key terms."""
    key_terms = (lex or lexicon(None)).key_terms
    hidden = _CLOZE.findall(front)
    if card_type == "cloze" and hidden:
        answer = key_terms(" ".join(hidden))
        asked = key_terms(_CLOZE.sub(lambda m: m.group(1), front))
    else:
        answer, asked = key_terms(back), key_terms(front)
    return answer, [t for t in asked if t not in answer]


def sentences(words: Sequence[PageWord]) -> list[range]:
    spans: list[range] = []
    start = 0
    for i, word in enumerate(words):
        last = i + 1 == len(words)
        following = words[i + 1].text if not last else ""
        # A new block ends a sentence unless it carries on in lower case (a wrapped comment, a column).
        new_block = (
            not last and words[i + 1].line // BLOCK != word.line // BLOCK and not following[:1].islower()
        )
        if last or new_block or _SENTENCE_END.search(word.text) or i + 1 - start >= MAX_SENTENCE_WORDS:
            spans.append(range(start, i + 1))
            start = i + 1
    return spans


def line_rects(words: Sequence[PageWord]) -> list[Box]:
    """The words' boxes merged per line, in reading order."""
    lines: dict[int, Box] = {}
    for w in words:
        if w.box is None:
            continue
        x0, y0, x1, y1 = w.box
        if w.line in lines:
            a, b, c, d = lines[w.line]
            lines[w.line] = (min(a, x0), min(b, y0), max(c, x1), max(d, y1))
        else:
            lines[w.line] = w.box
    return [(_clip(a), _clip(b), _clip(c), _clip(d)) for a, b, c, d in lines.values()]


def _clip(v: float) -> float:
    return round(min(max(v, 0.0), 1.0), 5)  # a word may overhang the page's crop box


def word_terms(words: Sequence[PageWord], lex: Lexicon | None = None) -> list[set[str]]:
    """Each word's key terms; a word hyphenated across a line break is read whole ("photo-" and
    "synthesis" on the next line: "photosynthesis")."""
    key_terms = (lex or lexicon(None)).key_terms
    out = []
    for i, w in enumerate(words):
        text = w.text
        if text.endswith(("-", "\u2010")) and i + 1 < len(words) and words[i + 1].line != w.line:
            text = text[:-1] + words[i + 1].text
        out.append(set(key_terms(text)))
    return out


def page_lexicon(words: Sequence[PageWord]) -> Lexicon:
    """The page's language's words; English when it cannot be told."""
    code = detect(" ".join(w.text for w in words)).code
    return lexicon(None if code == NEUTRAL else code)


def find_passage(words: Sequence[PageWord], card_type: str, front: str, back: str) -> Passage | None:
    """The passage of the page that supports the card (module docstring), or None."""
    lex = page_lexicon(words)
    answer, asked = card_terms(card_type, front, back, lex)
    needed = answer or asked
    if not needed or not words:
        return None
    wanted = set(answer) | set(asked)
    terms = [found & wanted for found in word_terms(words, lex)]
    spans = sentences(words)
    found = [set().union(*(terms[i] for i in span)) for span in spans]
    windows = [(k, k) for k in range(len(spans))] + [(k, k + 1) for k in range(len(spans) - 1)]
    best: tuple[int, int, int, int] | None = None  # score, -words, first, last
    for first, last in windows:
        held = found[first] | found[last]
        if 2 * len(held & set(needed)) < len(needed):
            continue
        score = 2 * len(held & set(answer)) + len(held & set(asked))
        size = spans[last].stop - spans[first].start
        if best is None or (score, -size) > best[:2]:
            best = (score, -size, first, last)
    if best is None:
        return None
    chosen = words[spans[best[2]].start : spans[best[3]].stop]
    held = found[best[2]] | found[best[3]]
    return Passage(
        text=" ".join(w.text for w in chosen),
        rects=line_rects(chosen),
        terms=[t for t in [*answer, *asked] if t in held],
    )
