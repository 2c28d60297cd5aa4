"""Write a chunk's cards: documents.chunks(.interactive) ──► chunks.cards (one LLM call, with
retries, per chunk).

Two lanes share one bounded in-flight scheduler sized to the LLM server: the interactive lane
(small documents, user retries) is served first, so a small upload never queues behind a
500-page book; a per-document cap can spread slots further. A chunk ends as CardsGenerated or
ChunkFailed (also sent to the dead-letter topic) with the reason; nothing is dropped silently.
While the LLM is unavailable the circuit breaker holds calls back (documents wait, they do not
fail), and a chunk whose round of attempts failed goes through the retry topic with a growing
delay, up to `retry_rounds` rounds. Results are cached by chunk content, model and prompt.

Each chunk's language is detected from its text (services/cards/language.py); its cards are
written in it, or in the language the upload asked for, and read by that language's rules. A
chunk whose cards were all dropped is asked once more, naming why (services/cards/writing.py);
its CardsGenerated says so (`retried`), and its ledger reason when it still has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import structlog

from services.cards import language as languages
from services.cards.cache import cache_key, cards_for_chunk, load_cached, store_cached
from services.cards.lexicon import NEUTRAL
from services.cards.prompting import prompt_version, uses_language
from services.cards.rules import ChunkCards, why_empty
from services.cards.writing import CallMeasured, Reading, reading, replay_cached, write_cards
from services.documents.decks import store_chunk_cards
from services.documents.settled import SettledDocuments
from services.domain import Card, Chunk, count_reasons
from services.errors import DeckstreamError, RetryableError, UnreadableOutput
from services.events import topics
from services.events.models import CardsGenerated, ChunkCreated, ChunkFailed, LLMCallMeasured, now_ms
from services.handlers import Emit, HandBack, Send
from services.llm.breaker import CircuitBreaker
from services.llm.client import Completion
from services.llm.connection import LLMConnection
from services.llm.scheduler import InflightScheduler, admit
from services.settings import CardSettings, LLMSettings
from services.storage.blobs import BlobStore

log = structlog.get_logger(__name__)
INTERACTIVE, BULK = 1, 0


def retry_due(ev: ChunkCreated, delay_s: float) -> float:
    """When (epoch seconds) a chunk sent round the retry topic is due: round n waits delay_s * 2**(n-1)."""
    return ev.occurred_at / 1000 + delay_s * 2.0 ** (ev.attempt - 1)


def retry_lane(ev: ChunkCreated) -> topics.TopicSpec:
    return topics.CHUNKS_INTERACTIVE if ev.lane == "interactive" else topics.CHUNKS


@dataclass(slots=True)
class _Job:
    """One chunk being worked on: its event, its chunk, and what identifies its answer."""

    ev: ChunkCreated
    chunk: Chunk
    per_chunk: int
    version: str  # the prompt version stamped on the cards, e.g. "cards-chat-v1"
    prompt_version: str  # the prompt file's version, e.g. "v1"
    model: str
    key: str
    started: float
    bound: Any
    source_language: str  # detected in the chunk's text ("und": unsure)
    language: str  # the cards': the upload's choice, else the source's
    read: Reading
    calls: list[CallMeasured] = field(default_factory=list)  # the LLM calls made for it
    first_answer: Completion | None = None  # cached, a follow-up missing: only what is missing is asked
    retries: dict[str, Completion] = field(default_factory=dict)  # the cached entry's follow-up answers


class WriteChunkCards:
    def __init__(
        self,
        *,
        llm_settings: LLMSettings,
        card_settings: CardSettings,
        blobs: BlobStore,
        llm: LLMConnection,
        scheduler: InflightScheduler,
        breaker: CircuitBreaker,
        settled: SettledDocuments,
    ) -> None:
        self.cfg, self.cards_cfg = llm_settings, card_settings
        self.blobs, self.llm, self.scheduler, self.breaker = blobs, llm, scheduler, breaker
        self.settled = settled
        languages.load()  # ~0.9 s once per process: at start, not on the event loop's first chunk

    async def __call__(
        self, ev: ChunkCreated, *, priority: int, give_up: asyncio.Future[None] | None
    ) -> list[Emit]:
        """What to emit for one chunk; a HandBack when the worker stops before its LLM call."""
        if self.settled.is_settled(ev.document_id, ev.generation, ev.attempt):
            return []
        job = self._job(ev)
        try:
            cached = await self._reuse(job)
        except Exception as exc:
            return self._store_failed(job, exc)
        if cached is not None:
            hit, why = cached
            return self._done(job, hit, attempts=0, why=why)
        if job.first_answer is not None:
            job.bound.info("cached answer needs a follow-up: asking once more")
        # A slot, and the breaker letting calls through. A worker whose flow stops meanwhile (a
        # rebalance or a shutdown waits for every chunk an actor holds) hands the chunk back
        # instead: otherwise an LLM outage would hold up the whole group until it was over.
        try:
            admitted = await admit(
                self.scheduler, self.breaker, ev.document_id, priority, give_up=give_up, tenant=ev.tenant_id
            )
        except Exception as exc:
            job.bound.exception("chunk admission crashed")
            return self._failed(job, f"internal error: {type(exc).__name__}: {exc}", "internal")
        if not admitted:
            if self.settled.is_cancelled(ev.document_id, ev.generation):
                return []
            job.bound.info("chunk handed back", reason="the worker is rebalancing or stopping")
            return [HandBack(ev)]
        try:
            try:
                if self.settled.is_cancelled(ev.document_id, ev.generation):
                    return []
                result = await self.breaker.call(lambda: self._write(job), waited=True)
            finally:
                self.scheduler.release(ev.document_id)
        except RetryableError as exc:
            return self._measured(job) + self._retry_later(job, exc)
        except DeckstreamError as exc:
            return self._measured(job) + self._failed(job, exc.reason, exc.code)
        except Exception as exc:  # a bug must fail the chunk, not the worker
            job.bound.exception("chunk crashed")
            return self._measured(job) + self._failed(
                job, f"internal error: {type(exc).__name__}: {exc}", "internal"
            )

        why = why_empty(result)
        # The cache entry (the model's answer) and this chunk's cards: two small files in the
        # local blob store, written on the event loop (~0.2 ms). A thread hop per chunk cost
        # more: on the generation bench the worker used 1 s more CPU for the book, in GIL hand-offs.
        try:
            if result.answer is not None:  # None: no call was made (a chunk with no text)
                store_cached(
                    self.blobs, job.key, result.answer, {**job.retries, **result.follow_up_answers()}
                )
            store_chunk_cards(
                self.blobs, ev.document_id, ev.generation, ev.chunk_index, result.cards, job.key
            )
        except Exception as exc:
            return self._measured(job) + self._store_failed(job, exc)
        return self._measured(job) + self._done(job, result, attempts=result.attempts, why=why)

    def _job(self, ev: ChunkCreated) -> _Job:
        chunk = Chunk(index=ev.chunk_index, segments=tuple(ev.segments), tokens=ev.tokens)
        per_chunk = cards_for_chunk(
            len(chunk.text.split()), self.cards_cfg.per_1000_words, ev.cards_per_chunk
        )
        # A reprocessing may name its own model and prompt version; else the worker's.
        model = ev.model or self.cfg.model
        file_version = ev.prompt_version or self.cards_cfg.prompt_version
        profile = self.llm.profile
        version = prompt_version(profile, file_version)
        source = languages.detect(chunk.text).code  # ~0.6 ms for a chunk
        language = languages.card_language(source, ev.language)
        # What the prompt names: the cards' language, and the source's when it is another.
        named = language if source in (language, NEUTRAL) else f"{language} from {source}"
        key = cache_key(
            chunk,
            model=model,
            prompt_version=version,
            profile=profile,
            card_types=ev.card_types,
            per_chunk=per_chunk,
            language=named if uses_language(profile, file_version) else None,
        )
        bound = log.bind(document_id=ev.document_id, chunk=ev.chunk_index, attempt=ev.attempt)
        read = reading(
            chunk,
            profile=profile,
            card_types=ev.card_types,
            prompt_version=file_version,
            document_id=ev.document_id,
            generation=ev.generation,
            filename=ev.filename,
            language=language,
            source_language=source,
        )
        started = time.monotonic()
        return _Job(
            ev, chunk, per_chunk, version, file_version, model, key, started, bound, source, language, read
        )

    def _write(self, job: _Job) -> Awaitable[ChunkCards]:
        ev, cfg = job.ev, self.cfg
        return write_cards(
            job.chunk,
            llm=self.llm.client,
            profile=self.llm.profile,
            document_id=ev.document_id,
            generation=ev.generation,
            filename=ev.filename,
            card_types=ev.card_types,
            per_chunk=job.per_chunk,
            max_attempts=cfg.max_attempts,
            backoff_base_s=cfg.backoff_base_s,
            backoff_cap_s=cfg.backoff_cap_s,
            prompt_version=job.prompt_version,
            model=job.model if job.model != cfg.model else None,
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            # From the cache key (chunk, model, prompt, options): a server that samples each
            # request on its own (vLLM; llama.cpp one call at a time) gives the chunk the same
            # cards on a replay. Batched llama.cpp slots vary.
            seed=int(job.key[:8], 16),
            on_call=job.calls.append,
            language=job.language,
            source_language=job.source_language,
            cover_pages=self.cards_cfg.cover_pages,
            first_answer=job.first_answer,
            known=job.retries,
            on_answers=lambda answer, known: store_cached(
                self.blobs, job.key, answer, {**job.retries, **known}
            ),
        )

    async def _reuse(self, job: _Job) -> tuple[ChunkCards, str | None] | None:
        """A hit read under today's rules and filed as this chunk's cards; None on a miss."""
        ev = job.ev
        try:
            hit = load_cached(
                self.blobs,
                job.key,
                document_id=ev.document_id,
                generation=ev.generation,
                chunk_index=ev.chunk_index,
                filename=ev.filename,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable: a miss
            job.bound.warning("card cache entry unreadable", error=f"{type(exc).__name__}: {exc}")
            return None
        if hit is None:
            return None
        if hit.answer is None:  # an entry from before answers were kept: its cards as they were
            result, why = ChunkCards(cards=hit.cards or []), hit.empty_reason
        else:
            try:
                replayed = await replay_cached(
                    job.read,
                    hit.answer,
                    hit.retries,
                    job.prompt_version,
                    cover_pages=self.cards_cfg.cover_pages,
                )
            except UnreadableOutput as exc:  # no usable card under today's rules: ask again
                job.bound.info("cached answer has no usable card", reason=exc.reason)
                return None
            job.retries = dict(hit.retries)
            if replayed is None:  # today's rules ask a follow-up the entry does not hold yet
                job.first_answer = hit.answer
                return None
            result, why = replayed, why_empty(replayed)
        store_chunk_cards(self.blobs, ev.document_id, ev.generation, ev.chunk_index, result.cards, job.key)
        return result, why

    def _measured(self, job: _Job) -> list[Emit]:
        """The LLM calls made for the chunk, for analytics (llm.calls)."""
        ev = job.ev
        return [
            Send(
                topics.LLM_CALLS,
                LLMCallMeasured(
                    **ev.ids(),
                    chunk_index=ev.chunk_index,
                    round=ev.attempt,
                    attempt=call.attempt,
                    model=job.model,
                    prompt_version=job.version,
                    latency_ms=round(call.latency_s * 1000),
                    ttft_ms=round(call.completion.ttft_ms)
                    if call.completion and call.completion.ttft_ms is not None
                    else None,
                    prompt_tokens=call.completion.prompt_tokens if call.completion else 0,
                    completion_tokens=call.completion.completion_tokens if call.completion else 0,
                    outcome=call.outcome,
                    error=call.error,
                ),
            )
            for call in job.calls
        ]

    def _retry_later(self, job: _Job, exc: RetryableError) -> list[Emit]:
        ev = job.ev
        if self.breaker.state != "closed":
            # The LLM is down, not this chunk: it waits for the server without using up a
            # round (documents wait, they do not fail), back in its lane behind the breaker.
            job.bound.info("chunk waits for the LLM", reason=exc.reason)
            return [HandBack(ev)]
        if ev.attempt + 1 < self.cfg.retry_rounds:
            job.bound.info("chunk deferred", reason=exc.reason)
            later = ev.model_copy(update={"attempt": ev.attempt + 1, "occurred_at": now_ms()})
            return [Send(topics.CHUNKS_RETRY, later)]
        rounds = f"gave up after {ev.attempt + 1} round(s) of {self.cfg.max_attempts} attempts"
        return self._failed(job, f"{exc.reason} ({rounds})", exc.code)

    def _done(self, job: _Job, result: ChunkCards, *, attempts: int, why: str | None) -> list[Emit]:
        """Announce a chunk's cards (already stored where the deck reads them), or why none."""
        ev = job.ev
        made: list[Card] = result.cards
        event = CardsGenerated(
            **ev.ids(),
            chunk_index=ev.chunk_index,
            cards=made,
            dropped=len(result.dropped),
            dropped_reasons=count_reasons(reason for _, reason in result.dropped),
            attempts=attempts,
            model=job.model,
            prompt_version=job.version,
            elapsed_ms=int((time.monotonic() - job.started) * 1000),
            pages=list(dict.fromkeys(seg.label for seg in ev.segments)),
            empty_reason=why,
            language=job.source_language,
            retried=result.retry is not None,
            pages_asked_again=result.pages.pages if result.pages is not None else [],
            pages_without_cards=result.pages.uncovered if result.pages is not None else {},
        )
        return [Send(topics.CARDS, event)]

    def _store_failed(self, job: _Job, exc: Exception) -> list[Emit]:
        job.bound.exception("could not store a chunk's cards")
        return self._failed(job, f"could not store the cards: {type(exc).__name__}: {exc}", "internal")

    def _failed(self, job: _Job, reason: str, code: str) -> list[Emit]:
        ev = job.ev
        job.bound.warning("chunk failed", reason=reason)
        event = ChunkFailed(
            **ev.ids(),
            chunk_index=ev.chunk_index,
            reason=reason,
            code=code,
            attempts=ev.attempt + 1,
            chunk=ev,
        )
        return [Send(topics.DLQ, event), Send(topics.CARDS, event)]
