"""The worker's lifecycle: opens and closes what its agents use, in one place (a Faust Service).

The LLM connection, the extraction sandbox's child started ahead of time, and a watcher of the
control and decks topics that keeps `SettledDocuments` (cancelled and finished documents).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer

from services.bootstrap import WorkerParts
from services.events import topics
from services.events.models import decode

log = structlog.get_logger(__name__)


class WorkerLifecycle(faust.Service):
    def __init__(self, parts: WorkerParts, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = parts
        self._control: AIOKafkaConsumer | None = None
        self._ready: asyncio.Event | None = None

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def wait_ready(self) -> None:
        """Agents may start before this service; they wait here for the LLM client."""
        await self._ready_event().wait()

    async def on_start(self) -> None:
        await self.parts.llm.open()
        self._control = AIOKafkaConsumer(
            topics.CONTROL.name,
            topics.DECKS.name,
            bootstrap_servers=self.parts.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=topics.FETCH_MAX_WAIT_MS,
        )
        await self._control.start()
        self.add_future(self._watch_control())
        self.parts.sandbox.prepare()  # the first upload's extraction starts without interpreter start-up
        self._ready_event().set()

    async def on_stop(self) -> None:
        self.parts.sandbox.close()
        if self._control is not None:
            await self._control.stop()
        await self.parts.llm.close()

    async def _watch_control(self) -> None:
        assert self._control is not None
        async for message in self._control:
            try:
                event = decode(message.value)
            except Exception:  # a bad command must not stop the watcher
                log.warning("undecodable control message", offset=message.offset)
                continue
            self.parts.settled.apply(event)
