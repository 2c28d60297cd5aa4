"""Liveness and readiness."""

from __future__ import annotations

import os
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import PartsDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """The answer of /readyz, 200 or 503 alike: which check failed is in `checks`."""

    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    dead_letters: dict[str, int]  # records sent to pipeline.dlq, by the topic they came from
    analytics: dict[str, Any]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


async def _llm_ok(http: httpx.AsyncClient, url: str | None) -> str | None:
    if not url:
        return "no LLM configured"
    for path in ("/health", "/v1/models", "/api/tags"):
        try:
            r = await http.get(url.rstrip("/") + path, timeout=3.0)
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        if r.status_code == 200:
            return None
    return f"no health endpoint answered at {url}"


async def _analytics(parts: Any) -> dict[str, Any]:
    """The analytics sink's progress, or why analytics are off (they never make the API unready)."""
    analytics = parts.analytics
    if analytics is None:
        return {"status": "off"}
    if analytics.sink is None:
        return {"status": analytics.error or "starting"}
    return {"status": "ok", **(await analytics.sink.status())}


@router.get(
    "/readyz",
    responses={200: {"model": Readiness}, 503: {"model": Readiness, "description": "not ready"}},
)
async def readyz(request: Request, parts: PartsDep) -> JSONResponse:
    """Ready when Kafka is caught up, the LLM answers and the blob store is writable; also the
    records sent to the dead-letter topic so far, by the topic they came from."""
    checks: dict[str, Any] = {}
    checks["kafka"] = "ok" if parts.feed.ready else (parts.feed.error or "catching up")
    llm = await _llm_ok(request.app.state.http, parts.settings.llm.url)
    checks["llm"] = llm or "ok"
    checks["blobs"] = "ok" if os.access(parts.settings.blob_dir, os.W_OK) else "not writable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {
            "status": "ready" if ok else "not ready",
            "checks": checks,
            "dead_letters": parts.feed.dead_letters(),
            "analytics": await _analytics(parts),
        },
        status_code=200 if ok else 503,
    )
