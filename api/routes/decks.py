"""The deck of a document, as JSON, CSV or an Anki package (the cards made so far while it is
running), and where on its page a card comes from: services.handlers.export, .pages."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from api.deps import DocumentDep, PartsDep
from api.routes.pages import image_url
from services.handlers.export import export_deck

router = APIRouter(prefix="/v1/decks", tags=["decks"])
APKG = "application/apkg"
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._ -]+")  # what may sit between quotes in any browser


def attachment(filename: str) -> str:
    """A Content-Disposition for a download named after the user's file (RFC 6266): a plain
    ASCII name for old clients and the exact one, percent-encoded, for the others. Quotes,
    backslashes and line breaks never reach the header."""
    plain = " ".join(_NOT_TOKEN.sub("_", filename).split()).strip("._ ") or "deck"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download_name(filename: str, suffix: str) -> str:
    stem = PurePath(filename).stem if "." in filename else filename
    return (stem or "deck") + suffix


@router.get("/{document_id}", responses={404: {}, 200: {"content": {APKG: {}, "text/csv": {}}}})
async def get_deck(
    view: DocumentDep,
    parts: PartsDep,
    format: Literal["json", "csv", "apkg"] = "json",
    generation: int | None = Query(None, ge=1, description="any kept generation (default: the current)"),
) -> Any:
    """Cards with front, back, type and source {file, page, section}. ``apkg``: an Anki package
    (basic and cloze note types, the source as a field and as tags, ``to-check`` on cards that
    need review); importing a later export updates the notes instead of adding copies."""
    chosen = generation if generation is not None else parts.views.current(view)
    body = await export_deck(parts.blobs, view, format, chosen)
    if isinstance(body, bytes):
        name = download_name(view.snapshot.filename, ".apkg")
        return Response(body, media_type=APKG, headers={"Content-Disposition": attachment(name)})
    if isinstance(body, str):
        name = view.snapshot.document_id
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return body


class Rect(BaseModel):
    """Part of the page, in 0..1 of its width and height from the top left."""

    x: float
    y: float
    width: float
    height: float


class CardSourceOut(BaseModel):
    document_id: str
    card_id: str
    page: int
    page_label: str
    pages_total: int
    section: list[str]
    image_url: str | None  # the page's image (PDF), to lay the rectangles over; None: show `text`
    text: str  # the page's text
    passage: str | None  # the sentences that support the card; None: none found
    rects: list[Rect]  # where the passage is on the image; empty without an image or a passage
    terms: list[str]  # the card's key terms the passage holds


@router.get(
    "/{document_id}/cards/{card_id}/source", response_model=CardSourceOut, responses={404: {}, 409: {}}
)
async def card_source(
    request: Request,
    card_id: str,
    view: DocumentDep,
    parts: PartsDep,
    generation: int | None = Query(None, ge=1, description="any kept generation (default: the current)"),
) -> CardSourceOut:
    """The card's page and where on it the card comes from: the passage whose key terms match
    the card's best, as rectangles over the page's image. 404 ``no-such-card``."""
    chosen = generation if generation is not None else parts.views.current(view)
    found = await parts.pages.card_source(parts.views, view, chosen, card_id)
    doc, page, passage = view.snapshot.document_id, found.page, found.passage
    boxes = passage.rects if passage else []
    rects = [Rect(x=x0, y=y0, width=round(x1 - x0, 5), height=round(y1 - y0, 5)) for x0, y0, x1, y1 in boxes]
    return CardSourceOut(
        document_id=doc,
        card_id=card_id,
        page=page.number,
        page_label=page.label,
        pages_total=page.pages_total,
        section=page.section,
        image_url=image_url(request, doc, page),
        text=page.text,
        passage=passage.text if passage else None,
        rects=rects,
        terms=passage.terms if passage else [],
    )
