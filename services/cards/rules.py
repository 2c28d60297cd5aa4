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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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

_STOPWORDS = """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom whose why will
    with would you your yours text say says said called"""
STOPWORDS = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"[^\W_]+")
_CLOZE = re.compile(r"\{\{c\d+::(.*?)(?:::[^}]*)?\}\}")
_COPULA = re.compile(r"\s(?:is|are|was|were|means|refers to)\s", re.IGNORECASE)
_CHOICE = re.compile(r"\bor\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|none|nothing|neither|nor|without)\b|n't\b", re.IGNORECASE)
_WHAT_IS = re.compile(r"\s*(?:what|who|which)\s+(?:is|are|was|were)\b", re.IGNORECASE)
# What may open an answer on its own: a noun phrase, "to …", a name, a number, a symbol. Not
# "represented by \n, while …" (a passive or a comparison cut in two) nor "often used as …".
_ANSWER_START = re.compile(r"(?:a|an|the|to|one|its|their|his|her)\b|[^a-z]")
_COMPARES = re.compile(r"\b(?:between|differ\w*|compare\w*|contrast\w*|versus|vs)\b", re.IGNORECASE)
_YES_NO = re.compile(
    r"\s*(?:is|are|was|were|am|can|could|do|does|did|will|would|has|have|had|should|must|may|might)\b",
    re.IGNORECASE,
)
# "… presented in the text?", "What does the author argue?", "the code snippet provided", "…
# of `y` in the code snippet?", "… discussed in these slides?", "the following statement": the
# question only makes sense beside its source.
_SOURCE = (
    r"(?:text|passage|excerpt|extract|(?:code\s+)?snippet|article|author|slides?|chapter|section|document)"
)
_LEANS_ON_SOURCE = re.compile(
    rf"\b(?:the|this|that|these|those|above|following|given)\s+{_SOURCE}(?=\s*[?.,;:!]|\s*$|\s+(?:says?|states?|argues?|"
    r"describes?|mentions?|suggests?|explains?|discuss(?:es)?|defines?|claims?|provided|given|above|below|about)\b)"
    rf"|\b(?:in|on|from|according to)\s+(?:the|this|these)\s+{_SOURCE}\b"
    r"(?!\s+(?:of|box|file|field|editor|string|mode|area|store|database|type|object)\b)"
    r"|\b(?:code|example|snippet|passage|excerpt|program)\s+(?:provided|given|shown|above|below)\b"
    r"|\b(?:the|this|these)\s+(?:following|above)\b",
    re.IGNORECASE,
)
REPEATS_QUESTION = "the answer only repeats the question"
WEAK_SUPPORT = "only {:.0%} of the answer's key terms occur in the source text"
POINTS_AT_SOURCE = "the question points at its source, not at what it asks about"
# Review reasons without their figures, to count cards by reason in the deck's quality.
WEAK_SUPPORT_KIND = "some of the answer's key terms do not occur in the source text"
_WEAK_SUPPORT = re.compile(re.escape(WEAK_SUPPORT).replace(r"\{:\.0%\}", r"\d+%"))


@dataclass(slots=True)
class ChunkCards:
    cards: list[Card] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (front, reason)
    attempts: int = 0
    answer: Completion | None = None  # the model's answer the cards were read from (cached)


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """Words repeat across a book's chunks: each is stemmed once."""
    for suffix in ("ing", "ed", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
    return word


def key_terms(text: str) -> list[str]:
    """Content words of a text, stemmed, without stopwords, first occurrence first."""
    words = (w for w in _WORD.findall(text.lower()) if w not in STOPWORDS)
    return list(dict.fromkeys(_stem(w) for w in words if len(w) > 1 or w.isdigit()))


def empty_reason(dropped: Sequence[tuple[str, str]]) -> str:
    """Why a chunk gave no card, from what was dropped: "not supported by the text (3); …"."""
    if not dropped:
        return "the model returned no cards"
    counts = count_reasons(reason for _, reason in dropped)
    return "; ".join(f"{r} ({n})" if n > 1 else r for r, n in counts.items())


def review_kinds(card: Card) -> list[str]:
    """Why a card needs review, without figures: "only 75% of …" counts as WEAK_SUPPORT_KIND."""
    if not card.needs_review:
        return []
    if not card.review:
        return [UNRECORDED]
    return [WEAK_SUPPORT_KIND if _WEAK_SUPPORT.fullmatch(r) else r for r in card.review.split("; ")]


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


def answer_only(front: str, back: str) -> str:
    """The answer without a restatement of the question before it: asked "What is the goal of
    the course?", "The goal of our course is to help you…" becomes "to help you…". Only for
    "what is" questions, which such an answer mirrors."""
    copula = _COPULA.search(back)
    if copula is None or not _WHAT_IS.match(front) or _COMPARES.search(front):
        return back  # "What do we know about X?" "X is…"; "the difference between A and B"
    asked, head = set(key_terms(front)), set(key_terms(back[: copula.start()]))
    rest = back[copula.end() :].strip()
    if _restates(head, asked) and key_terms(rest) and _ANSWER_START.match(rest):
        return rest
    return back


def _repeats_question(front: str, back: str) -> bool:
    """An answer that says the question again and nothing more: its terms are the question's,
    and most of them ("What does append add to a list?" "Append adds to a list.").

    Not an answer that picks one thing the question names ("What is the value of a after
    (a, b) = (99, 98)?" "99"; "Which function sorts a sequence?" "sorted"), one that denies
    ("Tuples do not have a reverse() method, while lists do."), nor the answer to a yes or no
    question or to a choice ("Which is larger, the Sun or the Moon?").
    """
    terms = set(key_terms(back))
    if not terms or _YES_NO.match(front) or _CHOICE.search(front):
        return False
    if _NEGATION.search(back) and not _NEGATION.search(front):
        return False
    return _restates(terms, set(key_terms(front)))


def leans_on_source(front: str) -> bool:
    return _LEANS_ON_SOURCE.search(front) is not None


def _check(raw: RawCard, card_types: Sequence[str]) -> tuple[RawCard | None, str]:
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
        back = answer_only(front, back)
        if _repeats_question(front, back):
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
    completion: Completion, profile: Profile, card_types: Sequence[str]
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
        clean, reason = _check(card, card_types)
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
) -> tuple[list[Card], list[tuple[str, str]]]:
    chunk_terms = set().union(*segment_terms)  # the chunk's text is its segments, one per line
    kept: list[Card] = []
    dropped: list[tuple[str, str]] = []
    for raw in cards:
        answer = " ".join(_CLOZE.findall(raw.front)) if raw.type == "cloze" else raw.back
        terms = key_terms(answer) or key_terms(raw.front)
        support = sum(t in chunk_terms for t in terms) / len(terms) if terms else 0.0
        if support < UNSUPPORTED:
            dropped.append((raw.front, NOT_SUPPORTED))
            continue
        review = [WEAK_SUPPORT.format(support)] if support < SUPPORTED else []
        review += [POINTS_AT_SOURCE] if leans_on_source(raw.front) else []
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


def _segment_terms(chunk: Chunk) -> list[set[str]]:
    return [set(key_terms(segment.text)) for segment in chunk.segments]


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
) -> ChunkCards:
    """The cards in a model's answer under today's rules: parsed, validated, grounded, cited.

    The result cache keeps answers, not cards, and reads a hit through here again: a change
    of these rules applies to cached chunks without a new LLM call. Raises UnreadableOutput
    when the answer holds no usable card.
    """
    valid, rejected = _read(answer, profile, card_types)

    def ids(i: int) -> str:
        return card_id(document_id, generation, chunk.index, i)

    terms = segment_terms if segment_terms is not None else _segment_terms(chunk)
    cards, unsupported = _ground(valid, chunk, terms, ids, version, filename)
    return ChunkCards(cards=cards, dropped=rejected + unsupported, answer=answer)
