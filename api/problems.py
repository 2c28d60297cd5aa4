"""RFC 9457 problem details: every error leaves the API as application/problem+json."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import DeckstreamError, RateLimited, Refused

PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class Problem(Exception):
    def __init__(
        self, status: int, detail: str, code: str = "error", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code, self.headers = status, detail, code, headers


def problem(
    request: Request, status: int, detail: str, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://deckstream.dev/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
    """429 (or 503 for a limit of the server's own) with ``Retry-After`` in whole seconds, and
    the limit's name in the body."""
    wait = max(1, math.ceil(exc.retry_after_s))
    return problem(
        request,
        exc.http_status,
        exc.reason,
        exc.code,
        {"Retry-After": str(wait)},
        limit=exc.limit,
        retry_after_s=wait,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem(request, exc.status, exc.detail, exc.code, exc.headers)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        if isinstance(exc, RateLimited):
            return rate_limited(request, exc)
        return problem(request, exc.http_status, exc.reason, exc.code)

    @app.exception_handler(DeckstreamError)
    async def _domain(request: Request, exc: DeckstreamError) -> JSONResponse:
        status = getattr(exc, "http_status", None) or (503 if exc.code == "retryable" else 500)
        return problem(request, status, exc.reason, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(request, 422, detail or "invalid request", "invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(request, exc.status_code, str(exc.detail), "http-error", getattr(exc, "headers", None))
