"""Cancel a document; retry only its failed chunks. Commands go to jobs.control."""

from __future__ import annotations

from services.documents.views import DocumentView
from services.errors import Conflict
from services.events import topics
from services.events.models import CancelDocument, RetryFailedChunks, now_ms
from services.events.publisher import EventPublisher

FINISHED = ("completed", "partial", "failed", "cancelled")


async def cancel(publisher: EventPublisher, view: DocumentView) -> None:
    """Stop further work; the cards already made are kept."""
    s = view.snapshot
    if s.status in FINISHED:
        raise Conflict(f"the document is already {s.status}", "already-finished")
    command = CancelDocument(
        tenant_id=s.tenant_id, document_id=s.document_id, generation=s.generation, occurred_at=now_ms()
    )
    await publisher.publish(topics.CONTROL.name, command)


async def retry_failed(publisher: EventPublisher, view: DocumentView) -> None:
    """Run only the failed chunks again."""
    s = view.snapshot
    if s.status not in ("partial", "failed") or s.chunks_failed == 0:
        raise Conflict(
            "only a partial or failed document with failed chunks can be retried", "nothing-to-retry"
        )
    command = RetryFailedChunks(tenant_id=s.tenant_id, document_id=s.document_id, generation=s.generation)
    await publisher.publish(topics.CONTROL.name, command)
