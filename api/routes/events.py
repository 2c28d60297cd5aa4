"""Server-Sent Events of one document: services.handlers.watch."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import DocumentDep, PartsDep
from api.problems import Problem
from services.handlers.watch import parse_cursor, watch

router = APIRouter(prefix="/v1/documents", tags=["events"])


@router.get("/{document_id}/events", response_class=EventSourceResponse, responses={404: {}})
async def events(request: Request, view: DocumentDep, parts: PartsDep) -> EventSourceResponse:
    """Live progress as Server-Sent Events; resumes after Last-Event-ID."""
    if parts.views.subscribers() >= parts.settings.api.max_subscribers:
        raise Problem(
            503, "too many open event streams; try again shortly", "too-many-streams", {"Retry-After": "5"}
        )
    cursor = parse_cursor(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for event_id, name, data in watch(parts.views, parts.blobs, view.snapshot.document_id, cursor):
            yield ServerSentEvent(data=json.dumps(data), event=name, id=event_id)

    return EventSourceResponse(
        stream(),
        ping=int(parts.settings.api.sse_ping_s),
        send_timeout=30,
        headers={"Cache-Control": "no-store"},
    )
