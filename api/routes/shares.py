"""Read-only share links to a deck (services.handlers.shares): the owner creates, lists and
revokes them under the deck; anyone holding a link opens it at /v1/shared/{token}, no account
needed."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.deps import CallerDep, DocumentDep, PartsDep
from api.problems import responses
from services.handlers.export import export_deck

router = APIRouter(tags=["shares"])
STATIC = FilePath(__file__).resolve().parent.parent / "static"


class NewShareLink(BaseModel):
    expires_days: int | None = Field(None, ge=1, description="default DECKSTREAM_ACCOUNTS_SHARE_DAYS (7)")
    label: str | None = Field(None, max_length=200)
    generation: int | None = Field(None, ge=1, description="pin one generation (default: the current)")


class ShareLinkOut(BaseModel):
    share_id: str
    document_id: str
    generation: int | None
    label: str | None
    created_at: int
    created_by: str
    expires_at: int
    status: str  # active, expired, revoked
    revoked_at: int | None
    url: str | None = None  # only when created: the link itself is shown once


@router.post("/v1/decks/{document_id}/shares", status_code=201, responses=responses(403, 404, 422))
async def create_share(
    body: NewShareLink, view: DocumentDep, parts: PartsDep, caller: CallerDep, request: Request
) -> ShareLinkOut:
    """A read-only link to this deck that works until it expires or is revoked; the link is in
    `url`, shown this once."""
    made = await parts.shares.create(
        view, by=caller.subject, days=body.expires_days, label=body.label, generation=body.generation
    )
    row = next(r for r in parts.shares.list(view) if r["share_id"] == made.link.share_id)
    return ShareLinkOut(**row, url=str(request.url_for("shared_page", token=made.token)))


@router.get("/v1/decks/{document_id}/shares", responses=responses(404))
async def list_shares(view: DocumentDep, parts: PartsDep) -> list[ShareLinkOut]:
    """This deck's links, newest first, with their status (never the link itself)."""
    return [ShareLinkOut(**row) for row in parts.shares.list(view)]


@router.delete("/v1/decks/{document_id}/shares/{share_id}", status_code=204, responses=responses(403, 404))
async def revoke_share(
    view: DocumentDep, parts: PartsDep, caller: CallerDep, share_id: str = Path(max_length=64)
) -> Response:
    """The link stops working at once (on every API process within a second)."""
    await parts.shares.revoke(view, share_id, by=caller.subject)
    return Response(status_code=204)


@router.get("/v1/shared/{token}", responses=responses(404, 410))
async def open_share(
    request: Request,
    parts: PartsDep,
    token: str = Path(max_length=200),
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The shared deck, read-only: JSON or CSV. 404 for no such link, 410 once it has expired or
    been revoked."""
    view, generation = await parts.shares.open(token, request.client.host if request.client else None)
    body = await export_deck(parts.blobs, view, format, generation)
    if isinstance(body, str):
        return Response(
            body,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{view.snapshot.document_id}.csv"'},
        )
    return body


@router.get("/shared/{token}", name="shared_page", include_in_schema=False)
async def shared_page(token: str) -> FileResponse:
    """The web page that shows a shared deck (it reads /v1/shared/{token}); no-referrer, so the
    link is not passed on to the sites the deck's page links to."""
    return FileResponse(STATIC / "shared.html", headers={"Referrer-Policy": "no-referrer"})
