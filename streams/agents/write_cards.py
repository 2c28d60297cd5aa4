"""documents.chunks(.interactive) ──► chunks.cards: services.handlers.write_cards, per lane, and
the retry topic's delayed rounds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import structlog

from services.events.models import ChunkCreated
from services.handlers.write_cards import BULK, INTERACTIVE, WriteChunkCards, retry_due, retry_lane
from streams import faust_fixes
from streams.dead_letters import reject_current
from streams.lifecycle import WorkerLifecycle
from streams.outbox import Outbox

log = structlog.get_logger(__name__)


def register(
    app: faust.App,
    life: WorkerLifecycle,
    write: WriteChunkCards,
    outbox: Outbox,
    *,
    bulk: Any,
    interactive: Any,
    retry: Any,
    concurrency: int,
    retry_delay_s: float,
) -> tuple[Any, Any, Any]:
    def lane(topic: Any, priority: int, name: str) -> Any:
        async def consume(stream: Any) -> None:
            await life.wait_ready()
            async for ev in stream:
                if not isinstance(ev, ChunkCreated):
                    await reject_current(app, stream, f"not a ChunkCreated: {type(ev).__name__}")
                    continue
                try:
                    out = await write(ev, priority=priority, give_up=faust_fixes.flow_stopped(app))
                    await outbox.send_all(out, own=topic)
                except Exception:  # never lose the actor; the reconciler resends the chunk
                    log.exception("chunk handling crashed", document_id=ev.document_id, chunk=ev.chunk_index)

        return app.agent(topic, name=name, concurrency=concurrency)(consume)

    write_interactive = lane(interactive, INTERACTIVE, "write-cards-interactive")
    write_bulk = lane(bulk, BULK, "write-cards-bulk")

    @app.agent(retry)
    async def retry_later(stream: Any) -> None:
        # Rounds are delayed in order of arrival, so a sequential wait per partition is fair.
        async for ev in stream:
            if not isinstance(ev, ChunkCreated):
                await reject_current(app, stream, f"not a ChunkCreated: {type(ev).__name__}")
                continue
            if write.settled.is_cancelled(ev.document_id, ev.generation):
                continue
            delay = retry_due(ev, retry_delay_s) - time.time()
            if delay > 0:
                stopped = faust_fixes.flow_stopped(app)
                if stopped is None:  # no flow to watch: the whole delay
                    stopped = asyncio.get_running_loop().create_future()
                await asyncio.wait((stopped,), timeout=delay)
                if stopped.done():  # a rebalance or shutdown: whoever owns it next waits the rest
                    await faust_fixes.hand_back(retry, ev)
                    continue
            await outbox.topic(retry_lane(ev)).send(key=ev.document_id, value=ev)

    return write_interactive, write_bulk, retry_later
