"""The rules a card must pass: a model's answer in, cited and grounded cards out.

    answer ─► parse ─► validate ─► ground ─► cite ─► Card*

Grounding is lexical: a card's key terms (content words of its answer, or of its cloze
deletions) must appear in the chunk. Below ``UNSUPPORTED`` of them found, the card is dropped;
below ``SUPPORTED`` it is kept with ``needs_review``. The cited page is the chunk segment with
most key-term hits, so every citation lies within the chunk's span.

Flashcards are read months later without the text, so a basic card's answer is the answer
alone: "The type of '17' is <class 'str'>." asked "What is the type of '17'?" keeps
"<class 'str'>.", and an answer with nothing the question does not already say is dropped. A
question that leans on the text ("What is the main argument presented in the text?") is kept
with ``needs_review``.

The words these rules read are the card's language's (``services/cards/lexicon.py``: English,
Spanish, French, German, Portuguese, a neutral fallback for the rest; English when no language
is given). Beyond shared words, ``services/cards/facts.py`` checks opposite terms, comparisons,
numbers and names. A card written in another language than its chunk (the upload asked for
one) cannot be grounded by shared words: only its numbers and names are checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.cards import facts
from services.cards.lexicon import ENGLISH, Lexicon, lexicon
from services.cards.prompting import RawCard, parse_json_cards, parse_qa_pairs
from services.domain import UNRECORDED, Card, CardType, Chunk, card_id, count_reasons
from services.errors import UnreadableOutput
from services.llm.client import Completion, Profile

SUPPORTED = 0.8  # share of key terms found in the chunk at which a card counts as grounded
UNSUPPORTED = 0.5  # below this share the card is dropped
MIN_FRONT_CHARS = 10
MAX_BACK_WORDS = 30
MIN_TRIMMED_WORDS = 6  # a long answer cut at a sentence end keeps at least this many words
NOT_SUPPORTED = "not supported by the text"

STOPWORDS = ENGLISH.stopwords
_CLOZE = re.compile(r"\{\{c\d+::(.*?)(?:::[^}]*)?\}\}")
_WORD = re.compile(r"[^\W_]+")
REPEATS_QUESTION = "the answer only repeats the question"
WEAK_SUPPORT = "only {:.0%} of the answer's key terms occur in the source text"
POINTS_AT_SOURCE = "the question points at its source, not at what it asks about"
# Review reasons without their figures, to count cards by reason in the deck's quality.
WEAK_SUPPORT_KIND = "some of the answer's key terms do not occur in the source text"
_KINDS = (
    (re.compile(re.escape(WEAK_SUPPORT).replace(r"\{:\.0%\}", r"\d+%")), WEAK_SUPPORT_KIND),
    *facts.KINDS,
)


@dataclass(slots=True)
class Retry:
    """The second, targeted attempt at a chunk whose cards were all dropped."""

    reasons: list[str]  # why they were, as its prompt names them: "not supported by the text (3)"
    key: str  # its part of the result cache's key (services/cards/cache.py::retry_key)
    answer: Completion | None = None  # its answer (None: it gave none usable)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # what it dropped in turn


@dataclass(slots=True)
class PageFollowUp:
    """One more attempt at each page of a chunk with substantial text that no kept card cites,
    asked with only its text."""

    pages: list[str]  # their labels
    # Their answers by their part of the result cache's key (services/cards/cache.py::pages_key).
    answers: dict[str, Completion] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # what they dropped in turn
    uncovered: dict[str, str] = field(default_factory=dict)  # page label -> why it still has no card


@dataclass(slots=True)
class ChunkCards:
    cards: list[Card] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (front, reason), every attempt's
    attempts: int = 0
    answer: Completion | None = None  # the model's answer the cards were read from (cached)
    retry: Retry | None = None  # the targeted retry, when the first cards were all dropped
    pages: PageFollowUp | None = None  # the follow-up for pages of the chunk left without a card

    def follow_up_answers(self) -> dict[str, Completion]:
        """The follow-ups' answers by their cache key (services/cards/cache.py): what to keep."""
        out = {self.retry.key: self.retry.answer} if self.retry and self.retry.answer is not None else {}
        return out | (self.pages.answers if self.pages is not None else {})


def key_terms(text: str, language: str | None = None) -> list[str]:
    """Content words of a text, stemmed, without stopwords, first occurrence first."""
    return lexicon(language).key_terms(text)


def empty_reason(dropped: Sequence[tuple[str, str]]) -> str:
    """Why a chunk gave no card, from what was dropped: "not supported by the text (3); …"."""
    if not dropped:
        return "the model returned no cards"
    counts = count_reasons(reason for _, reason in dropped)
    return "; ".join(f"{r} ({n})" if n > 1 else r for r, n in counts.items())


def dropped_reasons(dropped: Sequence[tuple[str, str]]) -> list[str]:
    """The reasons of the cards dropped, counted ("not supported by the text (3)"), most frequent
    first; what a retry prompt names. Empty when the model wrote no card to drop."""
    counts = count_reasons(reason for front, reason in dropped if front)
    return [f"{r} ({n})" if n > 1 else r for r, n in counts.items()]


def why_empty(result: ChunkCards) -> str | None:
    """Why a chunk ends without a card, for the deck's ledger; None when it has cards."""
    if result.cards:
        return None
    if result.retry is None:
        return empty_reason(result.dropped)
    first = result.dropped[: len(result.dropped) - len(result.retry.dropped)]
    return f"{empty_reason(first)}; asked again naming why: {empty_reason(result.retry.dropped)}"


def review_kinds(card: Card) -> list[str]:
    """Why a card needs review, without figures: "only 75% of …" counts as WEAK_SUPPORT_KIND."""
    if not card.needs_review:
        return []
    if not card.review:
        return [UNRECORDED]
    return [next((kind for p, kind in _KINDS if p.fullmatch(r)), r) for r in card.review.split("; ")]


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def _ends_sentence(word: str, following: str) -> bool:
    """Whether a sentence ends at word: "objectives." before "These", not "e.g." or "Fig."."""
    stem = word.rstrip("\"')]")
    if stem[-1:] not in (".", "!", "?") or not following.lstrip("\"'([")[:1].isupper():
        return False
    return stem[-1] != "." or ("." not in stem[:-1] and len(stem) > 4)


def _trim(back: str) -> str:
    """A long answer cut to MAX_BACK_WORDS words: at the last sentence that ends within them
    when that leaves a real answer, otherwise mid-sentence with an ellipsis."""
    words = back.split()
    if len(words) <= MAX_BACK_WORDS:
        return back
    for n in range(MAX_BACK_WORDS, MIN_TRIMMED_WORDS - 1, -1):
        if _ends_sentence(words[n - 1], words[n]):
            return " ".join(words[:n])
    return " ".join(words[:MAX_BACK_WORDS]) + "…"


def _restates(part: set[str], asked: set[str]) -> bool:
    """Whether a part of an answer says the question again: its terms are the question's, and
    most of them."""
    return part <= asked and 2 * len(part) >= len(asked)


def answer_only(front: str, back: str, language: str | None = None) -> str:
    """The answer without a restatement of the question before it: asked "What is the goal of
    the course?", "The goal of our course is to help you…" becomes "to help you…". Only for
    "what is" questions, which such an answer mirrors."""
    lex = lexicon(language)
    if lex.copula is None or lex.what_is is None or lex.answer_start is None:
        return back  # the neutral fallback: no words to read the question by
    copula = lex.copula.search(back)
    if copula is None or not lex.what_is.match(front) or (lex.compares and lex.compares.search(front)):
        return back  # "What do we know about X?" "X is…"; "the difference between A and B"
    asked, head = set(lex.key_terms(front)), set(lex.key_terms(back[: copula.start()]))
    rest = back[copula.end() :].strip()
    if _restates(head, asked) and lex.key_terms(rest) and lex.answer_start.match(rest):
        return rest
    return back


def _repeats_question(front: str, back: str, lex: Lexicon) -> bool:
    """An answer that says the question again and nothing more: its terms are the question's,
    and most of them ("What does append add to a list?" "Append adds to a list.").

    Not an answer that picks one thing the question names ("What is the value of a after
    (a, b) = (99, 98)?" "99"; "Which function sorts a sequence?" "sorted"), one that denies
    ("Tuples do not have a reverse() method, while lists do."), nor the answer to a yes or no
    question or to a choice ("Which is larger, the Sun or the Moon?").
    """
    terms = set(lex.key_terms(back))
    if not terms or lex.yes_no is None or lex.choice is None or lex.negation is None:
        return False  # the neutral fallback cannot tell a yes-or-no question: keep the card
    if lex.yes_no.match(front) or lex.choice.search(front):
        return False
    if lex.negation.search(back) and not lex.negation.search(front):
        return False
    return _restates(terms, set(lex.key_terms(front)))


def leans_on_source(front: str, language: str | None = None) -> bool:
    pattern = lexicon(language).leans_on_source
    return pattern is not None and pattern.search(front) is not None


def _check(raw: RawCard, card_types: Sequence[str], lex: Lexicon) -> tuple[RawCard | None, str]:
    """The cleaned card, or None and why it was rejected."""
    front, back = raw.front.strip(), raw.back.strip()
    if raw.type not in card_types:
        return None, f"card type {raw.type!r} not requested"
    if raw.type == "cloze":
        answers = [a.strip() for a in _CLOZE.findall(front)]
        rest = _CLOZE.sub("", front)
        if not answers or not all(answers) or "{{" in rest or "}}" in rest:
            return None, "invalid cloze syntax"
        back = back or "; ".join(answers)
    elif "{{" in front:
        return None, "cloze syntax on a basic card"
    else:
        back = answer_only(front, back, lex.code)
        if _repeats_question(front, back, lex):
            return None, REPEATS_QUESTION
    if not front or not back:
        return None, "empty front or back"
    if back.endswith(":"):
        return None, "answer cut short"
    if len(front) < MIN_FRONT_CHARS:
        return None, f"front shorter than {MIN_FRONT_CHARS} characters"
    return RawCard(raw.type, front, _trim(back)), ""


def _duplicate_keys(card: RawCard) -> set[str]:
    """Same question, or the same answer of three words or more: the same fact twice."""
    back = normalise(card.back)
    return {"front:" + normalise(card.front)} | ({"back:" + back} if len(back.split()) >= 3 else set())


def _read(
    completion: Completion, profile: Profile, card_types: Sequence[str], lex: Lexicon
) -> tuple[list[RawCard], list[tuple[str, str]]]:
    """Parse and validate; raises UnreadableOutput when nothing usable came back."""
    truncated = completion.finish_reason == "length"
    try:
        if profile == "chat":
            raw = parse_json_cards(completion.text)
        else:
            raw = parse_qa_pairs(completion.text, truncated=truncated)
    except UnreadableOutput as exc:
        raise UnreadableOutput(exc.reason + (" (cut at the token limit)" if truncated else "")) from None
    if not raw:
        return [], [("", "the model found nothing in the text worth a card")]
    valid: list[RawCard] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for card in raw:
        clean, reason = _check(card, card_types, lex)
        keys = _duplicate_keys(clean) if clean is not None else set()
        if keys & seen:
            clean, reason = None, "duplicate card"
        if clean is None:
            dropped.append((card.front, reason))
        else:
            seen |= keys
            valid.append(clean)
    if not valid:
        raise UnreadableOutput("no valid cards: " + "; ".join(sorted({r for _, r in dropped})))
    return valid, dropped


def _ground(
    cards: list[RawCard],
    chunk: Chunk,
    segment_terms: list[set[str]],
    ids: Callable[[int], str],
    version: str,
    filename: str,
    lex: Lexicon,
    translated: bool,
) -> tuple[list[Card], list[tuple[str, str]]]:
    chunk_terms = set().union(*segment_terms)  # the chunk's text is its segments, one per line
    source = facts.Source(chunk.text, lex, chunk_terms)
    kept: list[Card] = []
    dropped: list[tuple[str, str]] = []
    for raw in cards:
        answer = " ".join(_CLOZE.findall(raw.front)) if raw.type == "cloze" else raw.back
        terms = lex.key_terms(answer) or lex.key_terms(raw.front)
        support = sum(t in chunk_terms for t in terms) / len(terms) if terms else 0.0
        if translated:  # other words than the source's: shared words cannot tell
            support = 1.0
        if support < UNSUPPORTED:
            dropped.append((raw.front, NOT_SUPPORTED))
            continue
        findings = facts.check(raw.front, answer, source, same_language=not translated)
        if wrong := [f.reason for f in findings if f.drop]:
            dropped.append((raw.front, wrong[0]))
            continue
        review = [WEAK_SUPPORT.format(support)] if support < SUPPORTED else []
        review += [POINTS_AT_SOURCE] if lex.leans_on_source and lex.leans_on_source.search(raw.front) else []
        review += [f.reason for f in findings]
        hits = [sum(t in seg for t in terms) for seg in segment_terms]
        segment = chunk.segments[hits.index(max(hits))]
        kind: CardType = "cloze" if raw.type == "cloze" else "basic"
        kept.append(
            Card(
                card_id=ids(len(kept)),
                type=kind,
                front=raw.front,
                back=raw.back,
                file=filename,
                page=segment.page,
                page_label=segment.label,
                section=segment.section,
                chunk_index=chunk.index,
                prompt_version=version,
                support=round(support, 3),
                needs_review=bool(review),
                review="; ".join(review) or None,
            )
        )
    return kept, dropped


def segment_key_terms(chunk: Chunk, language: str | None = None) -> list[set[str]]:
    """Each segment's key terms, read in the chunk's language."""
    lex = lexicon(language)
    return [set(lex.key_terms(segment.text)) for segment in chunk.segments]


def cards_from_answer(
    chunk: Chunk,
    answer: Completion,
    *,
    profile: Profile,
    card_types: Sequence[str],
    version: str,
    document_id: str,
    generation: int,
    filename: str,
    segment_terms: list[set[str]] | None = None,
    language: str | None = None,
    translated: bool = False,
    first_index: int = 0,
) -> ChunkCards:
    """The cards in a model's answer under today's rules: parsed, validated, grounded, cited.

    ``language`` is the cards' (None: English, the rules before languages came); ``translated``
    says they were asked in another language than the chunk's. The result cache keeps answers,
    not cards, and reads a hit through here again: a change of these rules applies to cached
    chunks without a new LLM call. Raises UnreadableOutput when the answer holds no usable card.
    ``first_index``: the first card's number within the chunk (its id), so a page follow-up's
    cards do not take the ids of the first answer's.
    """
    lex = lexicon(language)
    valid, rejected = _read(answer, profile, card_types, lex)

    def ids(i: int) -> str:
        return card_id(document_id, generation, chunk.index, first_index + i)

    terms = segment_terms if segment_terms is not None else segment_key_terms(chunk, language)
    cards, unsupported = _ground(valid, chunk, terms, ids, version, filename, lex, translated)
    return ChunkCards(cards=cards, dropped=rejected + unsupported, answer=answer)
