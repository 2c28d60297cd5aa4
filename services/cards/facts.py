"""Checks of what an answer claims, beyond sharing words with its source.

Grounding counts an answer's key terms in the chunk; an answer can share most of them and still
be wrong: "a uniform distribution is a discrete probability distribution" from a text that
calls it continuous has all its words in a handout that speaks of both kinds. So, per card:

- **opposite terms** (``Lexicon.opposites``: discrete/continuous, mutable/immutable…): the
  sentences of the chunk that speak most of what the card asks about (the question's key terms;
  the answer's when the question compares two things) must not say the opposite term without
  the answer's own. If they do, the card is dropped:
  ``CONTRADICTS``.
- **comparisons** ("X is larger than Y", "X, unlike Y, …", "X vs Y"): each side must have a key
  term in the chunk, else the card is dropped: ``COMPARES_UNKNOWN``.
- **numbers** and **names** (two or more capitalised words, "Project Gutenberg") in the answer
  must occur in the chunk, else the card is kept and marked to check, saying which.

Numbers and names are read the same in every language, so they are also checked on cards
written in another language than their source, where the other checks cannot be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from services.cards.lexicon import Lexicon, fold

CONTRADICTS = "the answer says the opposite of the text"
COMPARES_UNKNOWN = "the answer compares with something the text does not mention"
NUMBER_NOT_IN_TEXT = "the number {} in the answer is not in the text"
NAME_NOT_IN_TEXT = 'the name "{}" in the answer is not in the text'
# Review reasons without their figures, to count cards by reason in the deck's quality.
NUMBER_KIND = "a number in the answer is not in the text"
NAME_KIND = "a name in the answer is not in the text"
KINDS = (
    (re.compile(re.escape(NUMBER_NOT_IN_TEXT).replace(r"\{\}", r".+")), NUMBER_KIND),
    (re.compile(re.escape(NAME_NOT_IN_TEXT).replace(r"\{\}", r".+")), NAME_KIND),
)

_NUMBER = re.compile(r"(?<![\w.,])[-−]?\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"[^\W\d_][\w'’-]*")
# A sentence ends at ".", "!", "?" or ";" before a capital (not "fig. 14", "IX., are"), or a blank line.
_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[\"“«¿¡(]?[^\W\d_](?<=[A-ZÀ-ÖØ-Þ]))|\n\s*\n")
_CLAUSE_END = re.compile(r"[,.;:!?()]")


@dataclass(frozen=True, slots=True)
class Finding:
    reason: str
    drop: bool  # dropped, or kept and marked to check


def _number_forms(raw: str) -> set[str]:
    """One number as texts write it: "3,5" and "3.5", "1,000" and "1000", "−2" and "-2"."""
    plain = raw.replace("−", "-")
    return {plain, plain.replace(",", "."), re.sub(r"[.,]", "", plain)}


class Source:
    """A chunk's text as the checks read it, computed once per chunk and language."""

    def __init__(self, text: str, lex: Lexicon, terms: set[str] | None = None) -> None:
        self.text, self.lex = text, lex
        if terms is not None:  # the chunk's key terms, when the caller has them already
            self.__dict__["terms"] = terms

    @cached_property
    def numbers(self) -> set[str]:
        return {form for m in _NUMBER.finditer(self.text) for form in _number_forms(m.group())}

    @cached_property
    def words(self) -> set[str]:
        """Folded words and their stems."""
        words = set(self.lex.words(self.text))
        return words | {self.lex.stem(w) for w in words}

    @cached_property
    def terms(self) -> set[str]:
        return set(self.lex.key_terms(self.text))

    @cached_property
    def sentences(self) -> list[tuple[set[str], set[str]]]:
        """Each sentence's key terms and the stems of all its words."""
        out = []
        for sentence in _SENTENCE.split(self.text):
            stems = {self.lex.stem(w) for w in self.lex.words(sentence)}
            out.append((set(self.lex.key_terms(sentence)), stems))
        return out


def missing_numbers(answer: str, source: Source) -> list[str]:
    found = (m.group() for m in _NUMBER.finditer(answer))
    return list(dict.fromkeys(n for n in found if not _number_forms(n) & source.numbers))


def names(answer: str, lex: Lexicon) -> list[str]:
    """Runs of two or more capitalised words ("Charles Severance", "Banco de España"), without
    function words at either end ("The", "La", "Die"): what reads as a name in most languages.
    Punctuation ends a run: "e.g. Numbers. A list" holds no name."""
    runs: list[list[str]] = [[]]
    tokens = list(_TOKEN.finditer(answer))
    for i, match in enumerate(tokens):
        token = match.group()
        joined = i > 0 and not answer[tokens[i - 1].end() : match.start()].strip()
        if not joined:
            runs.append([])
        following = tokens[i + 1].group() if i + 1 < len(tokens) else ""
        if token[0].isupper() or (runs[-1] and token in lex.name_joiners and following[:1].isupper()):
            runs[-1].append(token)
        else:
            runs.append([])
    out = []
    for run in runs:
        while run and (fold(run[0]) in lex.stopwords or run[0] in lex.name_joiners):
            run = run[1:]
        while run and (fold(run[-1]) in lex.stopwords or run[-1] in lex.name_joiners):
            run = run[:-1]
        if sum(t[0].isupper() for t in run) >= 2:
            out.append(" ".join(run))
    return list(dict.fromkeys(out))


def missing_names(answer: str, source: Source) -> list[str]:
    lex = source.lex
    out = []
    for found in names(answer, lex):
        words = [w for w in lex.words(found) if w not in lex.name_joiners]
        if not all(w in source.words or lex.stem(w) in source.words for w in words):
            out.append(found)
    return out


def contradicts(front: str, answer: str, source: Source) -> bool:
    """Whether the sentences about what the card asks say the opposite of a term of the answer."""
    lex = source.lex
    if not lex.opposites or (lex.negation is not None and lex.negation.search(answer)):
        return False
    said = {lex.stem(w) for w in lex.words(answer)}
    for a, b in lex.opposites:
        sa, sb = lex.stem(fold(a)), lex.stem(fold(b))
        if (sa in said) == (sb in said):
            continue  # neither, or both ("discrete or continuous")
        term, other = (sa, sb) if sa in said else (sb, sa)
        # What the claim is about: the question's terms ("What is a uniform distribution?"), not
        # the answer's generic ones ("a … probability distribution"). A question about two things
        # ("How do lists and tuples differ?") is read by its answer ("Lists are mutable").
        asked = set() if lex.compares and lex.compares.search(front) else set(lex.key_terms(front))
        subject = (asked or set(lex.key_terms(answer))) - {sa, sb}
        scores = [len(subject & terms) for terms, _ in source.sentences]
        best = max(scores, default=0)
        if best == 0:
            continue
        said_by = [stems for (_, stems), score in zip(source.sentences, scores, strict=True) if score == best]
        if any(other in s for s in said_by) and not any(term in s for s in said_by):
            return True
    return False


def compares_unknown(front: str, answer: str, source: Source) -> bool:
    """Whether one side of a comparison in the answer has no key term in the chunk."""
    lex = source.lex
    if lex.comparison is None:
        return False
    for match in lex.comparison.finditer(answer):
        left = answer[: match.start()]
        right = _CLAUSE_END.split(answer[match.end() :], maxsplit=1)[0]
        if not lex.key_terms(left):  # "Unlike tuples, lists …" or "Larger than Y": the rest, the question
            after = _CLAUSE_END.split(answer[match.end() :], maxsplit=1)
            left = after[1] if len(after) > 1 and lex.key_terms(after[1]) else front
        for side in (left, right):
            terms = lex.key_terms(side)
            if terms and not any(t in source.terms for t in terms):
                return True
    return False


def check(front: str, answer: str, source: Source, *, same_language: bool = True) -> list[Finding]:
    """What is wrong with an answer's claims, against its chunk (module docstring)."""
    findings: list[Finding] = []
    if same_language:
        if contradicts(front, answer, source):
            findings.append(Finding(CONTRADICTS, drop=True))
        if compares_unknown(front, answer, source):
            findings.append(Finding(COMPARES_UNKNOWN, drop=True))
    findings += [Finding(NUMBER_NOT_IN_TEXT.format(n), drop=False) for n in missing_numbers(answer, source)]
    findings += [Finding(NAME_NOT_IN_TEXT.format(n), drop=False) for n in missing_names(answer, source)]
    return findings
