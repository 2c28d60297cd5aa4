"""documents.chunks ──► chunks.cards: one LLM call (with retries) per chunk.

Every chunk ends as CardsGenerated or ChunkFailed with the reason; nothing is dropped silently.
`concurrency` actors keep that many requests in flight (sized to the LLM server's slots). The
cards are also stored per chunk in the blob store, where the deck is assembled from.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import structlog

from services.decks import store_chunk_cards
from services.domain import Chunk
from services.errors import DeckstreamError
from services.events import CardsGenerated, ChunkCreated, ChunkFailed
from services.generation import generate_cards
from services.prompting import prompt_version
from streams.resources import PipelineResources

log = structlog.get_logger(__name__)


def register(app: faust.App, res: PipelineResources, chunks: Any, cards: Any) -> Any:
    cfg = res.settings.llm

    @app.agent(chunks, concurrency=cfg.max_in_flight)
    async def generate(stream: Any) -> None:
        await res.wait_ready()
        async for ev in stream:
            if isinstance(ev, ChunkCreated):
                await generate_one(ev)

    async def generate_one(ev: ChunkCreated) -> None:
        if res.is_cancelled(ev.document_id, ev.generation):
            return
        llm = res.llm
        assert llm is not None
        bound = log.bind(document_id=ev.document_id, chunk=ev.chunk_index)
        chunk = Chunk(index=ev.chunk_index, segments=tuple(ev.segments), tokens=ev.tokens)
        started = time.monotonic()
        try:
            result = await res.breaker.call(
                lambda: generate_cards(
                    chunk,
                    llm=llm,
                    profile=res.profile,
                    document_id=ev.document_id,
                    generation=ev.generation,
                    filename=ev.filename,
                    card_types=ev.card_types,
                    per_chunk=ev.cards_per_chunk,
                    max_attempts=cfg.max_attempts,
                    backoff_base_s=cfg.backoff_base_s,
                    backoff_cap_s=cfg.backoff_cap_s,
                    prompt_version=res.settings.cards.prompt_version,
                    max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature,
                )
            )
        except DeckstreamError as exc:
            bound.warning("chunk failed", reason=exc.reason)
            await cards.send(
                key=ev.document_id,
                value=ChunkFailed(
                    **ev.ids(),
                    chunk_index=ev.chunk_index,
                    reason=exc.reason,
                    code=exc.code,
                    attempts=cfg.max_attempts,
                    chunk=ev,
                ),
            )
            return
        except Exception as exc:  # a bug must fail the chunk, not the worker
            bound.exception("chunk crashed")
            await cards.send(
                key=ev.document_id,
                value=ChunkFailed(
                    **ev.ids(),
                    chunk_index=ev.chunk_index,
                    reason=f"internal error: {type(exc).__name__}: {exc}",
                    code="internal",
                    attempts=1,
                    chunk=ev,
                ),
            )
            return
        store_chunk_cards(res.blobs, ev.document_id, ev.generation, ev.chunk_index, result.cards)
        await cards.send(
            key=ev.document_id,
            value=CardsGenerated(
                **ev.ids(),
                chunk_index=ev.chunk_index,
                cards=result.cards,
                dropped=len(result.dropped),
                attempts=result.attempts,
                model=cfg.model,
                prompt_version=prompt_version(res.profile, res.settings.cards.prompt_version),
                elapsed_ms=int((time.monotonic() - started) * 1000),
            ),
        )

    return generate
