"""The worker's lifecycle: opens and closes what its agents use, in one place (a Faust Service).

The LLM connection, the extraction sandbox's child started ahead of time, a watcher of the
control and decks topics that keeps `SettledDocuments` (cancelled and finished documents), and the
worker's Prometheus /metrics server (DECKSTREAM_WORKER_METRICS_PORT; services/metrics.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any
from wsgiref.simple_server import WSGIServer

import faust
import structlog
from aiokafka import AIOKafkaConsumer
from faust.exceptions import ConsumerNotStarted
from prometheus_client import start_http_server

from services.bootstrap import WorkerParts
from services.events import topics
from services.events.models import decode
from services.metrics import LagSource, worker_metrics

log = structlog.get_logger(__name__)


def faust_lag(consumer: Any, changelogs: Collection[str]) -> dict[tuple[str, int], int]:
    """highwater - committed offset of each partition assigned to a Faust consumer: the records
    its agents have yet to finish. Table changelogs are left out (read at recovery, never
    committed); a partition not fetched yet (no highwater) too; one never committed counts
    from 0. Only reads (the metrics server's thread), Faust's committed offsets among them
    (faust-streaming 0.15.3, pinned).
    """
    try:
        assigned = consumer.assignment()
    except ConsumerNotStarted:
        return {}
    lags: dict[tuple[str, int], int] = {}
    for tp in assigned:
        if tp.topic in changelogs:
            continue
        try:
            high = consumer.highwater(tp)
        except AssertionError:  # revoked meanwhile
            continue
        if high is None:
            continue
        committed = consumer._committed_offset.get(tp) or 0  # .get: a defaultdict, not ours to grow
        lags[(tp.topic, tp.partition)] = max(0, high - committed)
    return lags


class WorkerLifecycle(faust.Service):
    def __init__(self, parts: WorkerParts, app: faust.App | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parts = parts
        self.app = app  # the Faust app whose consumer lag /metrics shows (None: not shown)
        self._control: AIOKafkaConsumer | None = None
        self._ready: asyncio.Event | None = None
        self._metrics: WSGIServer | None = None

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
        self._serve_metrics()
        self._ready_event().set()

    def _serve_metrics(self) -> None:
        """Serve /metrics from a daemon thread, if a port is set; its collectors only read."""
        cfg = self.parts.settings.worker
        if cfg.metrics_port is None:
            return
        metrics = worker_metrics(self.parts.scheduler, self.parts.breaker)
        if self.app is not None:
            # Made here, on the loop, not lazily in the server's thread.
            consumer, tables = self.app.consumer, self.app.tables
            metrics.add_lag_source(LagSource("worker", lambda: faust_lag(consumer, tables.changelog_topics)))
        self._metrics, _ = start_http_server(cfg.metrics_port, cfg.metrics_host, registry=metrics.registry)
        log.info("worker metrics served", url=f"http://{cfg.metrics_host}:{cfg.metrics_port}/metrics")

    async def on_stop(self) -> None:
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.shutdown)  # waits out its poll (0.5 s at most)
            self._metrics.server_close()
            self._metrics = None
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
