"""The FastAPI app: its lifespan builds the parts from the bootstrap and owns the Kafka
publisher, the progress feed and the HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from api import problems
from api.routes import analytics as analytics_routes
from api.routes import (
    analytics_page,
    auth,
    cards,
    decks,
    documents,
    events,
    health,
    metrics,
    pages,
    shares,
    study,
)
from api.upload_guard import UploadGuard
from services.analytics.service import Analytics
from services.bootstrap import build_api
from services.events.progress_feed import ProgressFeed
from services.events.publisher import EventPublisher
from services.llm.pools import KEEPALIVE_EXPIRY_S
from services.settings import Settings, get_settings

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings | None = None,
    *,
    publisher: EventPublisher | None = None,
    feed: ProgressFeed | None = None,
    analytics: Analytics | None = None,
) -> FastAPI:
    """The app; tests may pass a publisher, feed and analytics (their start/stop are still called)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = build_api(settings, publisher=publisher, feed=feed, analytics=analytics)
        await parts.publisher.start()
        try:
            await parts.feed.start()
            if parts.analytics is not None:  # with chDB, this process owns the database
                await parts.analytics.start()
            async with httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S)) as http:
                app.state.http = http
                app.state.deckstream = parts
                await parts.feed.wait_caught_up(30.0)
                # Uploads are checked in the extraction sandbox: start its child now, not at the first.
                await asyncio.to_thread(parts.upload.sandbox.prepare)
                log.info("api ready", documents=len(parts.views.docs))
                yield
        finally:
            await asyncio.to_thread(parts.upload.sandbox.close)
            if parts.analytics is not None:
                await parts.analytics.stop()
            await parts.feed.stop()
            await parts.publisher.stop()

    app = FastAPI(
        title="deckstream",
        version="0.1.0",
        lifespan=lifespan,
        description="Turn course material into cited flashcard decks.",
    )
    problems.install(app)
    app.add_middleware(UploadGuard)  # auth and the declared size of an upload, before its body is read
    for router in (
        health.router,
        metrics.router,
        auth.router,
        shares.router,
        documents.router,
        events.router,
        decks.router,
        cards.router,
        study.router,
        pages.router,
        analytics_routes.router,
        analytics_page.router,
    ):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", WebFiles(directory=STATIC), name="static")
    return app


# The page's own files only: no inline script, no other origin (a script that got in could not
# call out), never framed. Revalidated on every load (ETag: 304), so an upgrade shows at once.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}


class WebFiles(StaticFiles):
    """api/static/ (the web client's modules, styles, pages) with PAGE_HEADERS' caching rules."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update({k: v for k, v in PAGE_HEADERS.items() if k != "Content-Security-Policy"})
        return response
