"""The deck of a document, as JSON or CSV (the cards made so far while it is running):
services.handlers.export."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response

from api.deps import DocumentDep, PartsDep
from services.handlers.export import export_deck

router = APIRouter(prefix="/v1/decks", tags=["decks"])


@router.get("/{document_id}", responses={404: {}})
async def get_deck(view: DocumentDep, parts: PartsDep, format: Literal["json", "csv"] = "json") -> Any:
    """Cards with front, back, type and source {file, page, section}."""
    body = await export_deck(parts.blobs, view, format)
    if isinstance(body, str):
        name = view.snapshot.document_id
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return body
