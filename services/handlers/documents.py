"""Read a caller's documents: find one, list them, its page ledger."""

from __future__ import annotations

from typing import Any

from services.documents.views import DocumentView, DocumentViews
from services.errors import DocumentNotFound


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


def page_ledger(view: DocumentView) -> dict[str, Any]:
    """Every page with its label, section, size, method and why it gave no text."""
    pages = {ev.page.number: ev.page.model_dump() for _, ev in view.events if ev.page is not None}
    s = view.snapshot
    return {
        "document_id": s.document_id,
        "filename": s.filename,
        "status": s.status,
        "pages_total": s.pages_total,
        "pages": [pages[n] for n in sorted(pages)],
    }
