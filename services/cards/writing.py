"""Write one chunk's cards with the LLM: the call, its retries and one repair.

    render prompt ─► LLM ─► cards_from_answer (services.cards.rules) ─► Card*

Retries: a ``RetryableError`` gets full-jitter exponential backoff (honouring the server's
Retry-After up to the cap); an answer with no usable cards gets one repair retry, then
``BadModelOutput``. At most ``max_attempts`` calls in all. Each call is reported to ``on_call``
(latency, tokens, outcome): the figures analytics keep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from services.cards.prompting import render_prompt
from services.cards.rules import ChunkCards, _segment_terms, cards_from_answer
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
) -> ChunkCards:
    segment_terms = _segment_terms(chunk)
    if not any(segment_terms):
        return ChunkCards(dropped=[("", "the chunk has no text to ask about")])
    rendered = render_prompt(
        chunk,
        profile=profile,
        card_types=card_types,
        per_chunk=per_chunk,
        version=prompt_version,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    if model is not None:  # the client's own model otherwise
        rendered = dataclasses.replace(rendered, prompt=dataclasses.replace(rendered.prompt, model=model))
    calls, repaired = 0, False
    result = ChunkCards()
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
                prompt = rendered.prompt
                if seed is not None:  # each attempt samples anew, and the same way on every run
                    prompt = dataclasses.replace(prompt, seed=(seed + calls - 1) % 2**31)
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
                    result = cards_from_answer(
                        chunk,
                        completion,
                        profile=profile,
                        card_types=card_types,
                        version=rendered.version,
                        document_id=document_id,
                        generation=generation,
                        filename=filename,
                        segment_terms=segment_terms,
                    )
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
    result.attempts = calls
    return result
