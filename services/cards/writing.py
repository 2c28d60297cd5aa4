"""Write one chunk's cards with the LLM: the call, its retries, one repair and two follow-ups.

    render prompt ─► LLM ─► cards_from_answer (services.cards.rules) ─► Card*
                              ├─ all dropped ─► retry prompt naming why ─► LLM ─► Card*
                              └─ pages without a card ─► pages prompt on their text ─► LLM ─► Card*

Retries: a ``RetryableError`` gets full-jitter exponential backoff (honouring the server's
Retry-After up to the cap); an answer with no usable cards gets one repair retry, then
``BadModelOutput``. At most ``max_attempts`` calls in all. Each call is reported to ``on_call``
(latency, tokens, outcome): the figures analytics keep.

When the checks drop every card of an answer, the chunk is asked once more, with the prompt
version's ``retry`` prompt naming the reasons (v3 on; older versions do not retry). Its answer
has its own seed and its own place in the result cache (``cache.retry_key``); the deck counts
what both attempts dropped, and a chunk still without a card says so in its ledger reason.

When the chunk kept cards but a page with substantial text in it (``pages_without_cards``) has
none, each such page is asked about once more with only its text (the version's ``pages``
prompt), so a multi-slide chunk does not end with cards about its first slide alone. Its cards
are grounded in and cite that page; a page still without a card says why
(``PageFollowUp.uncovered``), which the deck's quality reports. Each answer is cached under
``cache.pages_key``. ``cover_pages=False`` (``DECKSTREAM_CARDS_COVER_PAGES``) turns it off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from services.cards.cache import pages_key, retry_key
from services.cards.lexicon import NEUTRAL
from services.cards.prompting import RenderedPrompt, can_cover, can_retry, render_prompt
from services.cards.prompting import prompt_version as versioned
from services.cards.quality import SUBSTANTIAL_CHARS
from services.cards.rules import (
    ChunkCards,
    PageFollowUp,
    Retry,
    cards_from_answer,
    dropped_reasons,
    empty_reason,
    segment_key_terms,
)
from services.domain import Card, Chunk
from services.errors import BadModelOutput, RepairNeeded, RetryableError, UnreadableOutput
from services.llm.client import Completion, LLMClient, Profile

# The n-th page follow-up's cards are numbered from n times this (card ids): no answer holds 100.
FOLLOW_UP_FIRST = 100


@dataclasses.dataclass(frozen=True, slots=True)
class CallMeasured:
    """One call to the LLM: which attempt, how long, what came back."""

    attempt: int
    latency_s: float
    completion: Completion | None  # None: the call failed
    outcome: str  # ok, unreadable, or the error's code
    error: str | None = None


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "code", "") or type(exc).__name__)


def _backoff(base: float, cap: float, rng: random.Random) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RepairNeeded):
            return 0.0  # a repair retry goes at once
        delay = rng.uniform(0.0, min(cap, base * 2 ** (state.attempt_number - 1)))
        if isinstance(error, RetryableError) and error.retry_after:
            delay = max(delay, min(error.retry_after, cap))
        return delay

    return wait


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """How a chunk's answers are read: what ``cards_from_answer`` needs besides the answer."""

    chunk: Chunk
    profile: Profile
    card_types: Sequence[str]
    version: str  # e.g. "cards-chat-v3"
    document_id: str
    generation: int
    filename: str
    language: str | None  # the cards' (None: English rules, as before languages)
    translated: bool  # asked in another language than the chunk's
    segment_terms: list[set[str]]
    first_index: int = 0  # the first card's number in the chunk (a page follow-up's: FOLLOW_UP_FIRST)

    def cards(self, answer: Completion) -> ChunkCards:
        """Raises UnreadableOutput when the answer holds no usable card."""
        return cards_from_answer(
            self.chunk,
            answer,
            profile=self.profile,
            card_types=self.card_types,
            version=self.version,
            document_id=self.document_id,
            generation=self.generation,
            filename=self.filename,
            segment_terms=self.segment_terms,
            language=self.language,
            translated=self.translated,
            first_index=self.first_index,
        )


def reading(
    chunk: Chunk,
    *,
    profile: Profile,
    card_types: Sequence[str],
    prompt_version: str,
    document_id: str,
    generation: int,
    filename: str,
    language: str | None = None,
    source_language: str | None = None,
) -> Reading:
    translated = language is not None and source_language not in (None, NEUTRAL, language)
    # A translated card's words are the card language's; the chunk is read in its own.
    terms = segment_key_terms(chunk, source_language if translated else language)
    return Reading(
        chunk,
        profile,
        tuple(card_types),
        versioned(profile, prompt_version),
        document_id,
        generation,
        filename,
        language,
        translated,
        terms,
    )


def retry_needed(result: ChunkCards, profile: Profile, prompt_version: str) -> list[str]:
    """The reasons a retry names, when the chunk's cards were all dropped and the prompt
    version has a retry prompt; empty otherwise (a card kept, or none written)."""
    if result.cards or result.retry is not None or not can_retry(profile, prompt_version):
        return []
    return dropped_reasons(result.dropped)


def pages_without_cards(chunk: Chunk, cards: Sequence[Card]) -> dict[int, str]:
    """The pages with substantial text in this chunk that no card cites: page -> label.

    Substantial: ``SUBSTANTIAL_CHARS`` of its text here (so the previous chunk's overlap, at most
    a few sentences, never counts), or half of that for the chunk's last page, which may run on
    into the next chunk (a slide of 298 characters cut after 210 would count in neither).
    """
    chars: dict[int, int] = {}
    labels: dict[int, str] = {}
    for segment in chunk.segments:
        chars[segment.page] = chars.get(segment.page, 0) + len(segment.text.strip())
        labels.setdefault(segment.page, segment.label)
    last = chunk.segments[-1].page
    cited = {card.page for card in cards}
    return {
        page: labels[page]
        for page, n in chars.items()
        if page not in cited and n >= (SUBSTANTIAL_CHARS // 2 if page == last else SUBSTANTIAL_CHARS)
    }


def pages_reading(read: Reading, pages: Collection[int], first_index: int) -> Reading:
    """How a page follow-up's answer is read: only those pages' text grounds and cites it, and
    its cards are numbered from ``first_index``, after any earlier answer's."""
    kept = [i for i, segment in enumerate(read.chunk.segments) if segment.page in pages]
    chunk = dataclasses.replace(read.chunk, segments=tuple(read.chunk.segments[i] for i in kept))
    return dataclasses.replace(
        read, chunk=chunk, segment_terms=[read.segment_terms[i] for i in kept], first_index=first_index
    )


def with_retry(first: ChunkCards, retry: Retry, second: ChunkCards | None) -> ChunkCards:
    """The chunk's result after its retry: the retry's cards, both attempts' drops."""
    dropped = second.dropped if second is not None else retry.dropped
    retry.dropped = list(dropped)
    return ChunkCards(
        cards=second.cards if second is not None else [],
        dropped=first.dropped + retry.dropped,
        attempts=first.attempts + (second.attempts if second is not None else 0),
        answer=first.answer,
        retry=retry,
    )


class _Uncached(Exception):
    """A replay needs an answer the cache does not hold: the chunk must be asked."""


# What asks the LLM for a follow-up: the reasons of a retry, or the page of a follow-up; how its
# answer is read; its cache key. The cards, or BadModelOutput when none is usable.
Ask = Callable[[Sequence[str], Mapping[int, str], Reading, str], Awaitable[ChunkCards]]


async def follow_up(
    read: Reading,
    first: ChunkCards,
    *,
    prompt_version: str,
    cover_pages: bool,
    known: Mapping[str, Completion],
    ask: Ask,
) -> ChunkCards:
    """A chunk's result after its follow-ups, each read from ``known`` (cached answers by key)
    when there, else asked: the retry when every card was dropped, then the page follow-up
    when the chunk kept cards but some of its substantial pages have none."""
    result = first
    reasons = retry_needed(first, read.profile, prompt_version)
    if reasons:
        key = retry_key(read.version, reasons)
        retry = Retry(reasons, key)
        try:
            second = await _answer(read, key, known, lambda: ask(reasons, {}, read, key))
        except BadModelOutput as exc:  # the first answer stands; the ledger says the retry gave none
            retry.answer = known.get(key)
            retry.dropped = [("", f"the answer was unusable: {exc.reason}")]
            result = with_retry(first, retry, None)
        else:
            retry.answer = second.answer
            result = with_retry(first, retry, second)
    missing = pages_without_cards(read.chunk, result.cards) if result.cards else {}
    if not missing:
        return result
    if not (cover_pages and can_cover(read.profile, prompt_version)):
        uncovered = dict.fromkeys(missing.values(), "its chunk's cards cite other pages")
        return dataclasses.replace(result, pages=PageFollowUp([], uncovered=uncovered))
    follow = PageFollowUp(list(missing.values()))
    cards, attempts = list(result.cards), result.attempts
    for n, (page, label) in enumerate(missing.items(), start=1):
        # One page at a time: its cards can only cite it.
        one, key = {page: label}, pages_key(read.version, label)
        how = pages_reading(read, one, FOLLOW_UP_FIRST * n)
        try:
            second = await _answer(how, key, known, functools.partial(ask, (), one, how, key))
        except BadModelOutput as exc:
            if key in known:
                follow.answers[key] = known[key]
            second = ChunkCards(dropped=[("", f"the answer was unusable: {exc.reason}")])
        if second.answer is not None:
            follow.answers[key] = second.answer
        follow.dropped += second.dropped
        cards += second.cards
        attempts += second.attempts
        if not second.cards:
            follow.uncovered[label] = f"asked again with only its text: {empty_reason(second.dropped)}"
    return dataclasses.replace(
        result, cards=cards, dropped=result.dropped + follow.dropped, attempts=attempts, pages=follow
    )


async def _answer(
    read: Reading, key: str, known: Mapping[str, Completion], ask: Callable[[], Awaitable[ChunkCards]]
) -> ChunkCards:
    cached = known.get(key)
    if cached is None:
        return await ask()
    try:
        return read.cards(cached)
    except UnreadableOutput as exc:
        raise BadModelOutput(exc.reason) from None


async def replay_cached(
    read: Reading,
    answer: Completion,
    known: Mapping[str, Completion],
    prompt_version: str,
    *,
    cover_pages: bool,
) -> ChunkCards | None:
    """A cached answer and its follow-ups' read under today's rules; None when today's rules
    need a follow-up the entry does not hold (the chunk must be asked). Raises UnreadableOutput
    when the cached answer holds no usable card."""

    async def uncached(*_: object) -> ChunkCards:
        raise _Uncached

    try:
        return await follow_up(
            read,
            read.cards(answer),
            prompt_version=prompt_version,
            cover_pages=cover_pages,
            known=known,
            ask=uncached,
        )
    except _Uncached:
        return None


async def write_cards(
    chunk: Chunk,
    *,
    llm: LLMClient,
    profile: Profile,
    document_id: str,
    generation: int,
    filename: str,
    card_types: Sequence[str],
    per_chunk: int,
    max_attempts: int = 3,
    backoff_base_s: float = 1.0,
    backoff_cap_s: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    prompt_version: str = "v1",
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    rng: random.Random | None = None,
    seed: int | None = None,
    on_call: Callable[[CallMeasured], None] | None = None,
    language: str | None = None,
    source_language: str | None = None,
    cover_pages: bool = True,
    first_answer: Completion | None = None,
    known: Mapping[str, Completion] | None = None,
    on_answers: Callable[[Completion, dict[str, Completion]], None] | None = None,
) -> ChunkCards:
    """A chunk's cards. ``language``: the cards' (None: the prompt names none, English rules);
    ``source_language``: the chunk's. ``cover_pages``: ask again about pages left without a card.
    ``first_answer``: a cached answer, and ``known`` its cached follow-ups' by key: only what
    they lack is asked. ``on_answers`` gets the first answer and the follow-ups' so far before
    each follow-up is asked: cached, one that fails does not cost the calls before it again."""
    read = reading(
        chunk,
        profile=profile,
        card_types=card_types,
        prompt_version=prompt_version,
        document_id=document_id,
        generation=generation,
        filename=filename,
        language=language,
        source_language=source_language,
    )
    if not any(read.segment_terms):
        return ChunkCards(dropped=[("", "the chunk has no text to ask about")])

    def render(part: Chunk, n: int, reasons: Sequence[str] = (), pages: bool = False) -> RenderedPrompt:
        rendered = render_prompt(
            part,
            profile=profile,
            card_types=card_types,
            per_chunk=n,
            version=prompt_version,
            max_tokens=max_tokens,
            temperature=temperature,
            language=language or NEUTRAL,
            source_language=source_language or NEUTRAL,
            retry_reasons=reasons,
            pages=pages,
        )
        if model is not None:  # the client's own model otherwise
            rendered = dataclasses.replace(rendered, prompt=dataclasses.replace(rendered.prompt, model=model))
        return rendered

    calls = 0

    async def ask(rendered: RenderedPrompt, first_seed: int | None, how: Reading) -> ChunkCards:
        """One prompt's cards: its attempts, backoff and one repair (module docstring)."""
        nonlocal calls
        repaired = False
        result = ChunkCards()
        asked = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts),
            wait=_backoff(backoff_base_s, backoff_cap_s, rng or random.Random()),
            retry=retry_if_exception_type((RetryableError, RepairNeeded)),
            sleep=sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    calls += 1
                    asked += 1
                    prompt = rendered.prompt
                    if first_seed is not None:  # each attempt samples anew, and the same way on every run
                        prompt = dataclasses.replace(prompt, seed=(first_seed + asked - 1) % 2**31)
                    started = time.monotonic()
                    try:
                        completion = await llm.generate(prompt)
                    except Exception as exc:
                        if on_call is not None:
                            reason = getattr(exc, "reason", None) or str(exc)
                            on_call(CallMeasured(calls, time.monotonic() - started, None, _code(exc), reason))
                        raise
                    took = time.monotonic() - started
                    try:
                        result = how.cards(completion)
                    except UnreadableOutput as exc:
                        if on_call is not None:
                            on_call(CallMeasured(calls, took, completion, "unreadable", exc.reason))
                        if repaired:
                            raise BadModelOutput(exc.reason) from None
                        repaired = True
                        raise RepairNeeded(exc.reason) from None
                    if on_call is not None:
                        on_call(CallMeasured(calls, took, completion, "ok"))
        except RepairNeeded as exc:  # the repair retry was the last attempt allowed
            raise BadModelOutput(exc.reason) from None
        result.attempts = asked
        return result

    first = (
        read.cards(first_answer)
        if first_answer is not None
        else await ask(render(chunk, per_chunk), seed, read)
    )
    answers = dict(known or {})

    async def ask_again(
        reasons: Sequence[str], pages: Mapping[int, str], how: Reading, key: str
    ) -> ChunkCards:
        if on_answers is not None and first.answer is not None:
            on_answers(first.answer, dict(answers))
        # Two cards a page, within what the chunk may have.
        n = min(per_chunk, 2) if pages else per_chunk
        rendered = render(how.chunk, n, reasons, pages=bool(pages))
        # Its own seed, from its key: the same on every run, and not the first call's.
        second = await ask(rendered, int(key[:8], 16) if seed is not None else None, how)
        if second.answer is not None:
            answers[key] = second.answer
        return second

    return await follow_up(
        read, first, prompt_version=prompt_version, cover_pages=cover_pages, known=answers, ask=ask_again
    )
