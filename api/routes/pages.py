"""A document's pages for the page beside a card: the text of one page, and a PDF page as an
image: services.handlers.pages."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from api.deps import DocumentDep, PartsDep
from services.handlers.pages import PageText

router = APIRouter(prefix="/v1/documents", tags=["documents"])
IMAGE_CACHE = "private, max-age=86400"  # an upload never changes: a day, then revalidate by ETag


class PageOut(BaseModel):
    document_id: str
    number: int
    pages_total: int
    label: str
    section: list[str]
    text: str  # what extraction read on the page
    method: str  # text, ocr or skipped
    reason: str | None  # why the page gave no text, or was cut
    image_url: str | None  # a PDF page's image; None: show the text


def image_url(request: Request, document_id: str, page: PageText) -> str | None:
    if not page.has_image:
        return None
    return str(request.url_for("page_image", document_id=document_id, number=page.number))


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: any of the listed tags, weak or not, or ``*``."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.get("/{document_id}/pages/{number}", response_model=PageOut, responses={404: {}, 409: {}})
async def page(request: Request, number: int, view: DocumentDep, parts: PartsDep) -> PageOut:
    """One page: label, section, the text extraction read, and its image's URL (PDF pages).
    404 ``no-such-page`` past the end."""
    found = await parts.pages.page(parts.views, view, number)
    doc = view.snapshot.document_id
    return PageOut(
        document_id=doc,
        number=found.number,
        pages_total=found.pages_total,
        label=found.label,
        section=found.section,
        text=found.text,
        method=found.method,
        reason=found.reason,
        image_url=image_url(request, doc, found),
    )


@router.get(
    "/{document_id}/pages/{number}/image",
    name="page_image",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, 304: {}, 404: {}, 409: {}, 422: {}},
)
async def page_image(request: Request, number: int, view: DocumentDep, parts: PartsDep) -> Response:
    """A PDF page as a PNG, 1200 px wide (rendered once, then from the cache); ``ETag`` and
    ``If-None-Match`` give 304. 404 ``no-page-image`` for DOCX, PPTX and text (show the page's
    text), ``no-such-page`` past the end; 422 ``page-not-rendered`` for a page that cannot be."""
    image = await parts.pages.image(parts.views, view, number)
    headers = {"ETag": image.etag, "Cache-Control": IMAGE_CACHE}
    if matches(request.headers.get("if-none-match"), image.etag):
        return Response(status_code=304, headers=headers)
    return FileResponse(image.path, media_type="image/png", headers=headers)
