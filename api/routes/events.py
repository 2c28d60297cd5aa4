"""Server-Sent Events: of one document (services.handlers.watch), and of many on one stream
(services.handlers.watch_many: browsers allow 6 connections per host)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api.deps import CallerDep, DocumentDep, PartsDep
from services.handlers import watch_many
from services.handlers.watch import parse_cursor, watch

router = APIRouter(tags=["events"])


def last_event_id(request: Request) -> str | None:
    # A page that reloads cannot set the header: it may pass the id it kept as a parameter.
    return request.headers.get("last-event-id") or request.query_params.get("last_event_id")


@router.get(
    "/v1/documents/{document_id}/events",
    response_class=EventSourceResponse,
    responses={400: {}, 401: {}, 404: {}, 429: {}, 503: {}},
)
async def events(
    request: Request, view: DocumentDep, parts: PartsDep, caller: CallerDep
) -> EventSourceResponse:
    """Live progress as Server-Sent Events; resumes after Last-Event-ID. 429 over the tenant's
    open streams (quotas.sse_streams), 503 over the server's (api.max_subscribers)."""
    cursor = parse_cursor(last_event_id(request))
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


@router.get(
    "/v1/events",
    response_class=EventSourceResponse,
    responses={204: {}, 400: {}, 401: {}, 404: {}, 429: {}, 503: {}},
)
async def events_of_many(
    request: Request,
    parts: PartsDep,
    caller: CallerDep,
    documents: Annotated[
        str | None,
        Query(description="document ids, comma-separated; leave out to follow all yours, new ones too"),
    ] = None,
) -> Response:
    """The events of many documents on one stream, each with its `document_id` in the data; one
    Last-Event-ID resumes them all. Named documents: ends once each is done (204 to a client that
    has every `done`); 404 if one is not yours (as for a missing one). 400 for a Last-Event-ID
    not of this stream; 429/503 as for one document's stream (it counts as one stream)."""
    followed = watch_many.followed(parts.views, caller.tenant_id, documents)
    cursor = watch_many.parse_cursor(last_event_id(request), watch_many.scope_of(followed))
    if followed is not None and watch_many.all_sent(parts.views, followed, cursor):
        # The one answer that stops a browser's EventSource from connecting again and again.
        return Response(status_code=204)
    queue = parts.quotas.open_multiplexed_stream(
        parts.views, caller.tenant_id, followed, exempt=caller.operator
    )

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async for event_id, name, data in watch_many.watch_many(
            parts.views, parts.blobs, caller.tenant_id, followed, cursor, queue
        ):
            yield ServerSentEvent(data=json.dumps(data), event=name, id=event_id)

    return EventSourceResponse(
        stream(),
        ping=int(parts.settings.api.sse_ping_s),
        send_timeout=30,
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(parts.views.unsubscribe_many, caller.tenant_id, queue),
    )
