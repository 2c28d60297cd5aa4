"""Everything the agents use, opened and closed in one place (a Faust Service)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import httpx
import structlog
from aiokafka import AIOKafkaConsumer

from services.events import topics
from services.events.models import CancelDocument, DeckAssembled, decode
from services.extraction import Sandbox
from services.llm.adapters import build_llm_client, detect_profile
from services.llm.breaker import CircuitBreaker
from services.llm.client import LLMClient, Profile
from services.llm.pools import llm_http_client
from services.llm.scheduler import InflightScheduler
from services.llm.timeouts import http_timeout
from services.settings import Settings
from services.storage.blobs import BlobStore, LocalBlobStore

log = structlog.get_logger(__name__)


class PipelineResources(faust.Service):
    """The blob store, the extraction sandbox, the LLM client, and which documents need no more
    work (cancelled, finished)."""

    def __init__(self, settings: Settings, bootstrap: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap = bootstrap
        self.blobs: BlobStore = LocalBlobStore(settings.blob_dir)
        self.sandbox = Sandbox(settings.limits)
        self.http: httpx.AsyncClient | None = None
        self.llm: LLMClient | None = None
        self.profile: Profile = "chat"
        cfg = settings.llm
        self.breaker = CircuitBreaker(cfg.breaker_threshold, cfg.breaker_cooldown_s)
        self.scheduler = InflightScheduler(cfg.max_in_flight, cfg.per_document_in_flight)
        self.cancelled: set[tuple[str, int]] = set()
        self.finished: set[tuple[str, int]] = set()  # documents whose deck is assembled
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
        cfg = self.settings.llm
        if not cfg.url:
            raise RuntimeError(
                "DECKSTREAM_LLM_URL is not set: `deckstream up` sets it, or point it at a server"
            )
        self.http = llm_http_client(cfg.max_in_flight, http_timeout(cfg))
        self.llm = build_llm_client(self.http, cfg, cfg.url)
        self.profile = (
            cfg.profile if cfg.profile != "auto" else await detect_profile(self.http, cfg.url, cfg.kind)
        )
        log.info("llm ready", url=cfg.url, model=cfg.model, profile=self.profile)
        self._control = AIOKafkaConsumer(
            topics.CONTROL.name,
            topics.DECKS.name,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=topics.FETCH_MAX_WAIT_MS,
        )
        await self._control.start()
        self.add_future(self._watch_control())
        self.sandbox.prepare()  # the first upload's extraction starts without interpreter start-up
        self._ready_event().set()

    async def on_stop(self) -> None:
        self.sandbox.close()
        if self._control is not None:
            await self._control.stop()
        if self.http is not None:
            await self.http.aclose()

    async def _watch_control(self) -> None:
        assert self._control is not None
        async for message in self._control:
            try:
                event = decode(message.value)
            except Exception:  # a bad command must not stop the watcher
                log.warning("undecodable control message", offset=message.offset)
                continue
            if isinstance(event, CancelDocument):
                self.cancelled.add((event.document_id, event.generation))
            elif isinstance(event, DeckAssembled):
                self.finished.add((event.document_id, event.generation))

    def is_cancelled(self, document_id: str, generation: int) -> bool:
        return (document_id, generation) in self.cancelled

    def is_settled(self, document_id: str, generation: int, attempt: int) -> bool:
        """No work needed: the document is cancelled, or finished and this is no retry.

        A first-attempt chunk of a finished document is a redelivery (a worker stopped before
        committing its offsets): every chunk of that round was already accounted for.
        """
        key = (document_id, generation)
        return key in self.cancelled or (attempt == 0 and key in self.finished)
