"""RFC 9457 problem details: every error leaves the API as application/problem+json."""

from __future__ import annotations

import json
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
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,  # RFC 9457 extensions: `limit`, `retry_after_s`, `errors`, ...
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}  # registered by `install`
RETRY_AFTER = {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}


# Routes that take no credentials (health, sign-in, a share link), and so never answer 401.
NO_CREDENTIALS = ("/healthz", "/readyz", "/metrics", "/v1/auth/register", "/v1/shared/")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status it may refuse with, as problem+json (so the
    OpenAPI schema documents every answer; the API fuzzer checks it does). A 429 always says
    when to ask again (`rate_limited`). `install` documents FastAPI's own answers (400, 422)
    for every route the same way."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        answer: dict[str, Any] = {
            "description": TITLES.get(status, "Error"),
            "content": {PROBLEM: {"schema": PROBLEM_REF}},
        }
        if status == 429:
            answer["headers"] = {"Retry-After": RETRY_AFTER}
        documented[status] = answer
    return documented


def _document_problems(document: dict[str, Any]) -> None:
    """Register the problem schema, and document what the handlers below send for every route:
    an error declared without a body (``responses={404: {}}``) is problem+json like any other;
    FastAPI documents its own 422 body (HTTPValidationError, application/json), which `_invalid`
    replaces, and not the 400 it answers to a body it cannot parse (bytes that are not UTF-8)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            answers = operation.setdefault("responses", {})
            if "requestBody" in operation:
                answers.setdefault("400", {})
            if not path.startswith(NO_CREDENTIALS):
                answers.setdefault("401", {})  # no key or session, or a refused one
                if method.upper() not in ("GET", "HEAD", "OPTIONS"):
                    answers.setdefault("403", {})  # a session request without its CSRF header
            for status, answer in answers.items():
                framework_422 = status == "422" and "application/json" in answer.get("content", {})
                if status.isdigit() and int(status) >= 400 and (framework_422 or not answer.get("content")):
                    documented = responses(int(status))[int(status)]
                    answers[status] = {
                        **documented,
                        "description": answer.get("description") or documented["description"],
                    }
    if "HTTPValidationError" not in json.dumps(document.get("paths", {})):
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)


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
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_problems(build())
        return build()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend its document

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
