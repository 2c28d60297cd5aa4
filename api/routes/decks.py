"""The deck of a document, as JSON or CSV (the cards made so far while it is running):
services.handlers.export."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response

from api.deps import DocumentDep, PartsDep
from services.handlers.export import export_deck

router = APIRouter(prefix="/v1/decks", tags=["decks"])


@router.get("/{document_id}", responses={404: {}})
async def get_deck(
    view: DocumentDep,
    parts: PartsDep,
    format: Literal["json", "csv"] = "json",
    generation: int | None = Query(None, ge=1, description="any kept generation (default: the current)"),
) -> Any:
    """Cards with front, back, type and source {file, page, section}."""
    chosen = generation if generation is not None else parts.views.current(view)
    body = await export_deck(parts.blobs, view, format, chosen)
    if isinstance(body, str):
        name = view.snapshot.document_id
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return body
