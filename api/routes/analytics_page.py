"""The analytics page of the web client and its script; no auth, like `/` (its calls to
/v1/analytics carry the session cookie an operator got by signing in on `/`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parents[1] / "static"
# Revalidate on every load (ETag/Last-Modified answer 304), so an upgraded API serves the new script.
FRESH = {"Cache-Control": "no-cache"}


@router.get("/analytics")
async def analytics_page() -> FileResponse:
    return FileResponse(STATIC / "analytics.html", media_type="text/html", headers=FRESH)


@router.get("/static/analytics.js")
async def analytics_script() -> FileResponse:
    return FileResponse(STATIC / "analytics.js", media_type="text/javascript", headers=FRESH)
