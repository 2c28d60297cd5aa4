"""documents.uploaded ──► documents.pages and documents.chunks(.interactive): services.handlers.split."""

from __future__ import annotations

from typing import Any

import faust
import structlog

from services.events.models import DocumentUploaded
from services.handlers import HandBack
from services.handlers.split import SplitUpload
from streams import faust_fixes
from streams.dead_letters import reject_current
from streams.lifecycle import WorkerLifecycle
from streams.outbox import Outbox

log = structlog.get_logger(__name__)


def register(app: faust.App, life: WorkerLifecycle, split: SplitUpload, outbox: Outbox, uploads: Any) -> Any:
    @app.agent(uploads, concurrency=2)
    async def split_documents(stream: Any) -> None:
        await life.wait_ready()
        async for up in stream:
            if not isinstance(up, DocumentUploaded):
                await reject_current(app, stream, f"not a DocumentUploaded: {type(up).__name__}")
                continue

            async def hand_back(item: HandBack, up: DocumentUploaded = up) -> bool:
                """A rebalance or a shutdown waits for the upload this agent holds, and a scanned
                book takes minutes to read: it goes back to the end of its partition, marked with
                what was sent, for the next splitter (here or on another worker)."""
                marked = item.event
                assert isinstance(marked, DocumentUploaded)
                try:
                    await faust_fixes.hand_back(uploads, marked)
                except Exception:
                    log.exception("upload not handed back: it is split here", document_id=up.document_id)
                    return False
                log.info(
                    "upload handed back",
                    document_id=up.document_id,
                    reason="the worker is rebalancing or stopping",
                    pages_sent=marked.pages_sent,
                    chunks_sent=marked.chunks_sent,
                )
                return True

            try:
                await outbox.stream(split(up, faust_fixes.flow_stopped(app)), hand_back)
            except Exception:  # never lose the actor; the reconciler sends the upload again
                log.exception("upload split crashed", document_id=up.document_id)

    return split_documents
