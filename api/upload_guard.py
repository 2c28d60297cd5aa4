"""The upload route's gate: ``POST /v1/documents`` is answered from its headers before any byte
of its body is read.

FastAPI reads (and spools to a temporary file) a multipart body before any dependency runs, so
the route's own token check would come after a 100 MB upload had been written to disk. This ASGI
middleware runs first and refuses, each as problem+json with ``Connection: close``:

* 401 no, wrong, revoked or expired key or session, 403 a session without its CSRF header
  (``api.deps.identify``: the routes' own check);
* 411 a body sent with ``Transfer-Encoding`` (chunked): an upload declares its size up front;
* 400 a ``Content-Length`` that is not one number;
* 413 a declared size over ``max_upload_bytes`` plus ``MULTIPART_OVERHEAD``;
* 415 a body that is not ``multipart/form-data``;
* 429 the tenant is at one of its upload limits (``services.quotas``; not the operator's key).

An upload let through is counted against its tenant's limits there and then, so uploads sent
together cannot slip past them; when the route refuses its file (400, 413, 415, 422) or the
client leaves mid-body, the count is given back (``Quotas.end_upload``).

A refused request's body is never received: nothing is spooled, and the server closes the
connection instead of reading the rest. An accepted request's body is counted as it arrives
(Starlette's ``RequestBodyLimitResponder``): more bytes than it declared, or than the limit,
end it with 413 there and then. Every other route passes through untouched.
"""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.middleware.body_limit import RequestBodyLimitResponder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import deps
from api.problems import problem, rate_limited
from services.bootstrap import ApiParts
from services.errors import RateLimited
from services.quotas import UploadTicket

UPLOAD_PATH = "/v1/documents"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the options field around the file
CLOSE = {"Connection": "close"}  # the server stops reading: the rest of the body is never received
_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is true); far past any limit


class UploadGuard:
    def __init__(self, app: ASGIApp, *, path: str = UPLOAD_PATH) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != self.path:
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers only: it is never given `receive`
        refusal, max_body, ticket = await _refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        app = RequestBodyLimitResponder(self.app, max_body)
        if ticket is None:  # the operator's upload: not counted
            await app(scope, receive, send)
            return
        parts: ApiParts = request.app.state.deckstream
        answered = False

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                # Settled as the answer starts: an accepted upload is in the views by now.
                answered = True
                parts.quotas.end_upload(ticket, accepted=200 <= message["status"] < 300)
            await send(message)

        try:
            await app(scope, receive, sending)
        finally:
            if not answered:  # the client left, or the app failed, before any answer
                parts.quotas.end_upload(ticket, accepted=False)


async def _refusal(request: Request) -> tuple[Response | None, int, UploadTicket | None]:
    """The answer for a request refused from its headers, else None, the most body bytes it
    may send (what it declared, within the limit) and its count against the tenant's limits."""
    parts: ApiParts | None = getattr(request.app.state, "deckstream", None)
    if parts is None:
        starting = problem(request, 503, "the API is starting", "starting", {**CLOSE, "Retry-After": "1"})
        return starting, 0, None
    # The routes' own check (looked up at each call, so it is always the current one): a bearer
    # key, or the session cookie with its CSRF header; it may hash a key, so not on the event loop.
    found = await run_in_threadpool(deps.identify, parts, request)
    if not isinstance(found, deps.Caller):
        refused = deps.unauthorized(found)  # the same 401 (or CSRF 403) the routes give
        headers = {**CLOSE, **(refused.headers or {})}
        return problem(request, refused.status, refused.detail, refused.code, headers), 0, None
    limit = parts.settings.limits.max_upload_bytes
    max_body = limit + MULTIPART_OVERHEAD
    if "transfer-encoding" in request.headers:
        detail = "send the upload with a Content-Length header; chunked uploads are refused"
        return problem(request, 411, detail, "length-required", CLOSE), 0, None
    lengths = set(request.headers.getlist("content-length"))
    if len(lengths) > 1 or not all(_LENGTH.fullmatch(v.strip()) for v in lengths):
        bad = problem(request, 400, "the Content-Length header is not one number", "bad-length", CLOSE)
        return bad, 0, None
    if lengths:  # else HTTP/1.1: no length and no Transfer-Encoding is an empty body
        declared = int(lengths.pop())
        if declared > max_body:
            detail = f"the upload declares {declared:,} bytes, over the {limit:,}-byte limit for a file"
            return problem(request, 413, detail, "file-too-large", CLOSE, limit=limit), 0, None
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if declared and content_type != "multipart/form-data":
            detail = "send the file as multipart/form-data (a `file` part, an optional `options` part)"
            return problem(request, 415, detail, "unsupported-media-type", CLOSE), 0, None
        max_body = declared
    # Last: an upload refused from its headers above is not counted.
    try:
        ticket = parts.quotas.admit_upload(parts.views, found.tenant_id, exempt=found.operator)
    except RateLimited as exc:
        limited = rate_limited(request, exc)
        limited.headers.update(CLOSE)
        return limited, 0, None
    return None, max_body, ticket


def _route_path(scope: Scope) -> str:
    """The path the router matches (without the root path the app is mounted under)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
