"""documents.chunks(.interactive) ──► chunks.cards: one LLM call (with retries) per chunk.

Two lanes share one bounded in-flight scheduler sized to the LLM server: the interactive lane
(small documents, user retries) is served first, so a small upload never queues behind a
500-page book; a per-document cap can spread slots further. A chunk ends as CardsGenerated or
ChunkFailed (also sent to the dead-letter topic) with the reason; nothing is dropped silently.
While the LLM is unavailable the circuit breaker holds calls back (documents wait, they do not
fail), and a chunk whose round of attempts failed goes through the retry topic with a growing
delay, up to `retry_rounds` rounds. Results are cached by chunk content, model and prompt.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import structlog

from services.cards.cache import cache_key, cards_for_chunk, load_cached, store_cached
from services.cards.prompting import prompt_version
from services.cards.rules import ChunkCards, cards_from_answer, empty_reason
from services.cards.writing import write_cards
from services.documents.decks import store_chunk_cards
from services.domain import Card, Chunk, count_reasons
from services.errors import DeckstreamError, RetryableError, UnreadableOutput
from services.events.models import CardsGenerated, ChunkCreated, ChunkFailed, now_ms
from services.llm.scheduler import admit
from streams import faust_fixes
from streams.lifecycle import PipelineResources

log = structlog.get_logger(__name__)
INTERACTIVE, BULK = 1, 0


def register(
    app: faust.App, res: PipelineResources, bulk: Any, interactive: Any, retry: Any, cards: Any, dlq: Any
) -> tuple[Any, Any, Any]:
    cfg = res.settings.llm

    def lane(topic: Any, priority: int, name: str) -> Any:
        async def consume(stream: Any) -> None:
            await res.wait_ready()
            async for ev in stream:
                if isinstance(ev, ChunkCreated):
                    try:
                        await generate_one(ev, priority, topic)
                    except Exception:  # never lose the actor; the reconciler resends the chunk
                        log.exception(
                            "chunk handling crashed", document_id=ev.document_id, chunk=ev.chunk_index
                        )

        return app.agent(topic, name=name, concurrency=cfg.max_in_flight)(consume)

    generate_interactive = lane(interactive, INTERACTIVE, "generate-interactive")
    generate_bulk = lane(bulk, BULK, "generate-bulk")

    @app.agent(retry)
    async def retry_later(stream: Any) -> None:
        # Rounds are delayed in order of arrival, so a sequential wait per partition is fair.
        async for ev in stream:
            if not isinstance(ev, ChunkCreated) or res.is_cancelled(ev.document_id, ev.generation):
                continue
            due = ev.occurred_at / 1000 + cfg.retry_delay_s * 2 ** (ev.attempt - 1)
            delay = due - time.time()
            if delay > 0:
                stopped = faust_fixes.flow_stopped(app)
                if stopped is None:  # no flow to watch: the whole delay
                    stopped = asyncio.get_running_loop().create_future()
                await asyncio.wait((stopped,), timeout=delay)
                if stopped.done():  # a rebalance or shutdown: whoever owns it next waits the rest
                    await faust_fixes.hand_back(retry, ev)
                    continue
            await (interactive if ev.lane == "interactive" else bulk).send(key=ev.document_id, value=ev)

    async def generate_one(ev: ChunkCreated, priority: int, own_topic: Any) -> None:
        if res.is_settled(ev.document_id, ev.generation, ev.attempt):
            return
        bound = log.bind(document_id=ev.document_id, chunk=ev.chunk_index, attempt=ev.attempt)
        chunk = Chunk(index=ev.chunk_index, segments=tuple(ev.segments), tokens=ev.tokens)
        per_chunk = cards_for_chunk(
            len(chunk.text.split()), res.settings.cards.per_1000_words, ev.cards_per_chunk
        )
        version = prompt_version(res.profile, res.settings.cards.prompt_version)
        key = cache_key(
            chunk,
            model=cfg.model,
            prompt_version=version,
            profile=res.profile,
            card_types=ev.card_types,
            per_chunk=per_chunk,
        )
        started = time.monotonic()

        def reuse() -> tuple[ChunkCards, str | None] | None:
            """A hit read under today's rules and filed as this chunk's cards; None on a miss."""
            try:
                hit = load_cached(
                    res.blobs,
                    key,
                    document_id=ev.document_id,
                    generation=ev.generation,
                    chunk_index=ev.chunk_index,
                    filename=ev.filename,
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable: a miss
                bound.warning("card cache entry unreadable", error=f"{type(exc).__name__}: {exc}")
                return None
            if hit is None:
                return None
            if hit.answer is None:  # an entry from before answers were kept: its cards as they were
                result, why = ChunkCards(cards=hit.cards or []), hit.empty_reason
            else:
                try:
                    result = cards_from_answer(
                        chunk,
                        hit.answer,
                        profile=res.profile,
                        card_types=ev.card_types,
                        version=version,
                        document_id=ev.document_id,
                        generation=ev.generation,
                        filename=ev.filename,
                    )
                except UnreadableOutput as exc:  # no usable card under today's rules: ask again
                    bound.info("cached answer has no usable card", reason=exc.reason)
                    return None
                why = empty_reason(result.dropped) if not result.cards else None
            store_chunk_cards(res.blobs, ev.document_id, ev.generation, ev.chunk_index, result.cards)
            return result, why

        try:
            cached = reuse()
        except Exception as exc:
            await store_failed(ev, exc, bound)
            return
        if cached is not None:
            hit, why = cached
            await done(
                ev,
                hit.cards,
                dropped=hit.dropped,
                attempts=0,
                version=version,
                started=started,
                why=why,
            )
            return
        llm = res.llm
        assert llm is not None
        # A slot, and the breaker letting calls through. A worker whose flow stops meanwhile (a
        # rebalance or a shutdown waits for every chunk an actor holds) hands the chunk back
        # instead: otherwise an LLM outage would hold up the whole group until it was over.
        try:
            admitted = await admit(
                res.scheduler, res.breaker, ev.document_id, priority, give_up=faust_fixes.flow_stopped(app)
            )
        except Exception as exc:
            bound.exception("chunk admission crashed")
            await failed(ev, f"internal error: {type(exc).__name__}: {exc}", "internal", bound)
            return
        if not admitted:
            if not res.is_cancelled(ev.document_id, ev.generation):
                bound.info("chunk handed back", reason="the worker is rebalancing or stopping")
                await faust_fixes.hand_back(own_topic, ev)
            return
        try:
            try:
                if res.is_cancelled(ev.document_id, ev.generation):
                    return
                result = await res.breaker.call(
                    lambda: write_cards(
                        chunk,
                        llm=llm,
                        profile=res.profile,
                        document_id=ev.document_id,
                        generation=ev.generation,
                        filename=ev.filename,
                        card_types=ev.card_types,
                        per_chunk=per_chunk,
                        max_attempts=cfg.max_attempts,
                        backoff_base_s=cfg.backoff_base_s,
                        backoff_cap_s=cfg.backoff_cap_s,
                        prompt_version=res.settings.cards.prompt_version,
                        max_tokens=cfg.max_tokens,
                        temperature=cfg.temperature,
                        # From the cache key (chunk, model, prompt, options): a server that
                        # samples each request on its own (vLLM; llama.cpp one call at a time)
                        # gives the chunk the same cards on a replay. Batched llama.cpp slots vary.
                        seed=int(key[:8], 16),
                    ),
                    waited=True,
                )
            finally:
                res.scheduler.release(ev.document_id)
        except RetryableError as exc:
            if res.breaker.state != "closed":
                # The LLM is down, not this chunk: it waits for the server without using up a
                # round (documents wait, they do not fail), back in its lane behind the breaker.
                bound.info("chunk waits for the LLM", reason=exc.reason)
                await faust_fixes.hand_back(own_topic, ev)
                return
            if ev.attempt + 1 < cfg.retry_rounds:
                bound.info("chunk deferred", reason=exc.reason)
                await retry.send(
                    key=ev.document_id,
                    value=ev.model_copy(update={"attempt": ev.attempt + 1, "occurred_at": now_ms()}),
                )
                return
            rounds = f"gave up after {ev.attempt + 1} round(s) of {cfg.max_attempts} attempts"
            await failed(ev, f"{exc.reason} ({rounds})", exc.code, bound)
            return
        except DeckstreamError as exc:
            await failed(ev, exc.reason, exc.code, bound)
            return
        except Exception as exc:  # a bug must fail the chunk, not the worker
            bound.exception("chunk crashed")
            await failed(ev, f"internal error: {type(exc).__name__}: {exc}", "internal", bound)
            return

        why = empty_reason(result.dropped) if not result.cards else None

        # The cache entry (the model's answer) and this chunk's cards: two small files in the
        # local blob store, written on the event loop (~0.2 ms). A thread hop per chunk cost
        # more: on the generation bench the worker used 1 s more CPU for the book, in GIL hand-offs.
        try:
            if result.answer is not None:  # None: no call was made (a chunk with no text)
                store_cached(res.blobs, key, result.answer)
            store_chunk_cards(res.blobs, ev.document_id, ev.generation, ev.chunk_index, result.cards)
        except Exception as exc:
            await store_failed(ev, exc, bound)
            return
        await done(
            ev,
            result.cards,
            dropped=result.dropped,
            attempts=result.attempts,
            version=version,
            started=started,
            why=why,
        )

    async def done(
        ev: ChunkCreated,
        made: list[Card],
        *,
        dropped: list[tuple[str, str]],
        attempts: int,
        version: str,
        started: float,
        why: str | None,
    ) -> None:
        """Announce a chunk's cards (already stored where the deck reads them), or why none."""
        await cards.send(
            key=ev.document_id,
            value=CardsGenerated(
                **ev.ids(),
                chunk_index=ev.chunk_index,
                cards=made,
                dropped=len(dropped),
                dropped_reasons=count_reasons(reason for _, reason in dropped),
                attempts=attempts,
                model=cfg.model,
                prompt_version=version,
                elapsed_ms=int((time.monotonic() - started) * 1000),
                pages=list(dict.fromkeys(seg.label for seg in ev.segments)),
                empty_reason=why,
            ),
        )

    async def store_failed(ev: ChunkCreated, exc: Exception, bound: Any) -> None:
        bound.exception("could not store a chunk's cards")
        await failed(ev, f"could not store the cards: {type(exc).__name__}: {exc}", "internal", bound)

    async def failed(ev: ChunkCreated, reason: str, code: str, bound: Any) -> None:
        bound.warning("chunk failed", reason=reason)
        event = ChunkFailed(
            **ev.ids(),
            chunk_index=ev.chunk_index,
            reason=reason,
            code=code,
            attempts=ev.attempt + 1,
            chunk=ev,
        )
        await dlq.send(key=ev.document_id, value=event)
        await cards.send(key=ev.document_id, value=event)

    return generate_interactive, generate_bulk, retry_later
