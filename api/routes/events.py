"""Server-Sent Events of one document: services.handlers.watch."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api.deps import CallerDep, DocumentDep, PartsDep
from services.handlers.watch import parse_cursor, watch

router = APIRouter(prefix="/v1/documents", tags=["events"])


@router.get(
    "/{document_id}/events", response_class=EventSourceResponse, responses={404: {}, 429: {}, 503: {}}
)
async def events(
    request: Request, view: DocumentDep, parts: PartsDep, caller: CallerDep
) -> EventSourceResponse:
    """Live progress as Server-Sent Events; resumes after Last-Event-ID. 429 over the tenant's
    open streams (quotas.sse_streams), 503 over the server's (api.max_subscribers)."""
    cursor = parse_cursor(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    document_id = view.snapshot.document_id
    # Subscribed (within the caps) before answering, so the refusal is a 429 and not a stream.
    queue = parts.quotas.open_stream(parts.views, document_id, exempt=caller.operator)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for event_id, name, data in watch(parts.views, parts.blobs, document_id, cursor, queue):
            yield ServerSentEvent(data=json.dumps(data), event=name, id=event_id)

    return EventSourceResponse(
        stream(),
        ping=int(parts.settings.api.sse_ping_s),
        send_timeout=30,
        headers={"Cache-Control": "no-store"},
        # Also when the stream never starts (a HEAD, a failure before the first event).
        background=BackgroundTask(parts.views.unsubscribe, document_id, queue),
    )
