"""The FastAPI app: lifespan owns the Kafka producer, the SSE hub and the HTTP client."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI
from fastapi.responses import FileResponse

from api import problems
from api.deps import ApiState
from api.hub import ProgressHub
from api.routes import decks, documents, events, health
from services.events.publisher import EventPublisher, KafkaPublisher
from services.llm.pools import KEEPALIVE_EXPIRY_S
from services.settings import Settings, get_settings
from services.storage.api_token import load_or_create_token
from services.storage.blobs import LocalBlobStore

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings | None = None,
    *,
    publisher: EventPublisher | None = None,
    hub: ProgressHub | None = None,
) -> FastAPI:
    """The app; tests may pass a publisher and hub (their start/stop are still called)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal publisher, hub
        if publisher is None or hub is None:
            if not settings.kafka.bootstrap:
                raise RuntimeError("DECKSTREAM_KAFKA_BOOTSTRAP is not set (`deckstream up` sets it)")
            publisher = publisher or KafkaPublisher(settings.kafka.bootstrap)
            hub = hub or ProgressHub(settings.kafka.bootstrap)
        token = load_or_create_token(
            settings.home, settings.api.token.get_secret_value() if settings.api.token else None
        )
        await publisher.start()
        try:
            await hub.start()
            async with httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S)) as http:
                app.state.http = http
                app.state.deckstream = ApiState(
                    settings=settings,
                    token=token,
                    blobs=LocalBlobStore(settings.blob_dir),
                    publisher=publisher,
                    hub=hub,
                )
                await hub.wait_caught_up(30.0)
                # The PDF reader loads lazily; load it now so that no upload waits for it.
                await asyncio.to_thread(importlib.import_module, "services.extraction.pdf")
                log.info("api ready", documents=len(hub.docs))
                yield
        finally:
            await hub.stop()
            await publisher.stop()

    app = FastAPI(
        title="deckstream",
        version="0.1.0",
        lifespan=lifespan,
        description="Turn course material into cited flashcard decks.",
    )
    problems.install(app)
    for router in (health.router, documents.router, events.router, decks.router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
