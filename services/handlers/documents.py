"""Read a caller's documents: find one, list them, its page ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from services.documents.ledger import load_ledger
from services.documents.views import DocumentView, DocumentViews
from services.errors import DocumentNotFound
from services.storage.blobs import BlobStore


def find(views: DocumentViews, tenant_id: str, document_id: str) -> DocumentView:
    """The caller's document; another tenant's answers exactly like a missing one."""
    view = views.docs.get(document_id)
    if view is None or view.snapshot.tenant_id != tenant_id:
        raise DocumentNotFound(f"no document {document_id}")
    return view


def list_documents(views: DocumentViews, tenant_id: str) -> list[DocumentView]:
    """The caller's documents, newest first."""
    mine = [v for v in views.docs.values() if v.snapshot.tenant_id == tenant_id]
    mine.sort(key=lambda v: v.snapshot.created_at, reverse=True)
    return mine


async def page_ledger(blobs: BlobStore, view: DocumentView) -> dict[str, Any]:
    """Every page with its label, section, size, method and why it gave no text: the kept ledger
    once extraction has ended, the live page events until then."""
    s = view.snapshot
    kept = await asyncio.to_thread(load_ledger, blobs, s.document_id, s.generation)
    if kept is not None:
        pages = {p.number: p.model_dump() for p in kept}
    else:
        pages = {ev.page.number: ev.page.model_dump() for _, ev in view.events if ev.page is not None}
    return {
        "document_id": s.document_id,
        "filename": s.filename,
        "status": s.status,
        "pages_total": s.pages_total,
        "pages": [pages[n] for n in sorted(pages)],
    }
