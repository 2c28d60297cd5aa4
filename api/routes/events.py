"""Server-Sent Events: a document's progress, pages, cards, failures, `waiting` (while the LLM is
unavailable) and a final `done`.

Every event has an id "partition-offset-k" (k numbers the SSE events made from one Kafka
record). On connect the stream replays the document's events after Last-Event-ID (all of
them without one), then follows live ones; after `done` it ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import CallerDep, StateDep
from api.hub import Position
from api.problems import Problem
from api.routes.documents import find
from services.documents.decks import card_to_json
from services.events.models import DocumentProgress

router = APIRouter(prefix="/v1/documents", tags=["events"])
SNAPSHOT_FIELDS = (
    "document_id",
    "generation",
    "status",
    "filename",
    "pages_total",
    "pages_done",
    "chunks_total",
    "chunks_done",
    "chunks_failed",
    "cards",
    "progress",
    "error",
    "waiting",
)


def _cursor(last_event_id: str | None) -> tuple[int, int]:
    if not last_event_id:
        return (-1, -1)
    try:
        _, offset, k = (int(x) for x in last_event_id.split("-"))
    except ValueError as exc:
        raise Problem(
            400, f"Last-Event-ID {last_event_id!r} is not one of ours", "bad-last-event-id"
        ) from exc
    return offset, k


def sse_events(pos: Position, ev: DocumentProgress) -> list[tuple[int, str, dict[str, Any]]]:
    """The SSE events (k, name, data) one Kafka record becomes."""
    snapshot = {f: getattr(ev, f) for f in SNAPSHOT_FIELDS}
    out: list[tuple[int, str, dict[str, Any]]] = [(0, "progress", snapshot)]
    if ev.kind == "page" and ev.page is not None:
        out.append((1, "page", ev.page.model_dump()))
    elif ev.kind == "card":
        out += [(i + 1, "card", card_to_json(c)) for i, c in enumerate(ev.new_cards)]
    elif ev.kind == "chunk_failed" and ev.failure is not None:
        out.append((1, "chunk_failed", ev.failure.model_dump()))
    elif ev.kind == "waiting" and ev.waiting is not None:
        out.append((1, "waiting", {"reason": ev.waiting}))
    elif ev.kind == "done":
        out.append((1, "done", snapshot))
    return out


@router.get("/{document_id}/events", response_class=EventSourceResponse, responses={404: {}})
async def events(
    document_id: str, request: Request, state: StateDep, caller: CallerDep
) -> EventSourceResponse:
    """Live progress as Server-Sent Events; resumes after Last-Event-ID."""
    find(state, caller.tenant_id, document_id)
    if state.hub.subscribers() >= state.settings.api.max_subscribers:
        raise Problem(
            503, "too many open event streams; try again shortly", "too-many-streams", {"Retry-After": "5"}
        )
    cursor = _cursor(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    hub = state.hub

    async def stream() -> AsyncIterator[ServerSentEvent]:
        queue = hub.subscribe(document_id)  # before the replay, so nothing falls in between
        last = cursor
        try:
            backlog = list(hub.docs[document_id].events)
            while True:
                if backlog:
                    pos, ev = backlog.pop(0)
                else:
                    item = await queue.get()
                    if item is None:
                        return  # lagging or shutting down: the client resumes with Last-Event-ID
                    pos, ev = item
                for k, name, data in sse_events(pos, ev):
                    if (pos.offset, k) <= last:
                        continue
                    last = (pos.offset, k)
                    yield ServerSentEvent(data=json.dumps(data), event=name, id=f"{pos}-{k}")
                    if name == "done":
                        return
        finally:
            hub.unsubscribe(document_id, queue)

    return EventSourceResponse(
        stream(),
        ping=int(state.settings.api.sse_ping_s),
        send_timeout=30,
        headers={"Cache-Control": "no-store"},
    )
