"""Write one chunk's cards with the LLM: the call, its retries, one repair and one targeted retry.

    render prompt ─► LLM ─► cards_from_answer (services.cards.rules) ─► Card*
                              └─ all dropped ─► retry prompt naming why ─► LLM ─► Card*

Retries: a ``RetryableError`` gets full-jitter exponential backoff (honouring the server's
Retry-After up to the cap); an answer with no usable cards gets one repair retry, then
``BadModelOutput``. At most ``max_attempts`` calls in all. Each call is reported to ``on_call``
(latency, tokens, outcome): the figures analytics keep.

When the checks drop every card of an answer, the chunk is asked once more, with the prompt
version's ``retry`` prompt naming the reasons (v3 on; older versions do not retry). Its answer
has its own seed and its own place in the result cache (``cache.retry_key``); the deck counts
what both attempts dropped, and a chunk still without a card says so in its ledger reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from services.cards.cache import retry_key
from services.cards.lexicon import NEUTRAL
from services.cards.prompting import RenderedPrompt, can_retry, render_prompt
from services.cards.prompting import prompt_version as versioned
from services.cards.rules import ChunkCards, Retry, cards_from_answer, dropped_reasons, segment_key_terms
from services.domain import Chunk
from services.errors import BadModelOutput, RepairNeeded, RetryableError, UnreadableOutput
from services.llm.client import Completion, LLMClient, Profile


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


def replay_cached(
    read: Reading, answer: Completion, retries: dict[str, Completion], prompt_version: str
) -> tuple[ChunkCards, list[str]]:
    """A cached answer (and its retry's, when the rules drop its cards for the same reasons)
    read under today's rules; and the reasons of a retry still to ask (empty: done). Raises
    UnreadableOutput when the cached answer holds no usable card."""
    first = read.cards(answer)
    reasons = retry_needed(first, read.profile, prompt_version)
    if not reasons:
        return first, []
    key = retry_key(read.version, reasons)
    cached = retries.get(key)
    if cached is None:
        return first, reasons
    try:
        second = read.cards(cached)
    except UnreadableOutput as exc:
        unusable = [("", f"the answer was unusable: {exc.reason}")]
        return with_retry(first, Retry(reasons, key, cached, unusable), None), []
    return with_retry(first, Retry(reasons, key, cached), second), []


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
    first_answer: Completion | None = None,
    on_first_answer: Callable[[Completion], None] | None = None,
) -> ChunkCards:
    """A chunk's cards. ``language``: the cards' (None: the prompt names none, English rules);
    ``source_language``: the chunk's. ``first_answer``: a cached answer whose cards were all
    dropped; only the retry is asked. ``on_first_answer`` gets a new first answer before a retry
    is asked: cached, a retry that fails does not cost the first call again."""
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

    def render(reasons: Sequence[str] = ()) -> RenderedPrompt:
        rendered = render_prompt(
            chunk,
            profile=profile,
            card_types=card_types,
            per_chunk=per_chunk,
            version=prompt_version,
            max_tokens=max_tokens,
            temperature=temperature,
            language=language or NEUTRAL,
            source_language=source_language or NEUTRAL,
            retry_reasons=reasons,
        )
        if model is not None:  # the client's own model otherwise
            rendered = dataclasses.replace(rendered, prompt=dataclasses.replace(rendered.prompt, model=model))
        return rendered

    calls = 0

    async def ask(rendered: RenderedPrompt, first_seed: int | None) -> ChunkCards:
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
                        result = read.cards(completion)
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

    if first_answer is not None:
        first = read.cards(first_answer)
    else:
        first = await ask(render(), seed)
    reasons = retry_needed(first, profile, prompt_version)
    if not reasons:
        return first
    if first_answer is None and first.answer is not None and on_first_answer is not None:
        on_first_answer(first.answer)
    key = retry_key(read.version, reasons)
    retry = Retry(reasons, key)
    try:
        # Its own seed, from its key: the same on every run, and not the first call's.
        second = await ask(render(reasons), int(key[:8], 16) if seed is not None else None)
    except BadModelOutput as exc:  # the first answer stands; the ledger says the retry gave none
        retry.dropped = [("", f"the answer was unusable: {exc.reason}")]
        return with_retry(first, retry, None)
    retry.answer = second.answer
    return with_retry(first, retry, second)
