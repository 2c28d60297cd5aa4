"""Dependencies shared by the routers: the app's parts and the caller's identity."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from api.problems import Problem
from services.accounts.people import NoSession
from services.accounts.store import Verified
from services.bootstrap import ApiParts
from services.documents.views import DocumentView
from services.events.models import now_ms
from services.handlers.documents import find
from services.handlers.sessions import csrf_token


def get_parts(request: Request) -> ApiParts:
    parts: ApiParts = request.app.state.deckstream
    return parts


PartsDep = Annotated[ApiParts, Depends(get_parts)]


OPERATOR_KEY_ID = "bootstrap"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: their tenant, the key they used, and whether it is the operator's key
    (the bootstrap token `deckstream up` prints: the default tenant's, and the only one that
    may read analytics, which span every tenant)."""

    tenant_id: str
    key_id: str
    operator: bool = False
    user_id: str | None = None  # signed in with a password (a session); None: an API key
    session_id: str | None = None  # the browser session the request came with, if any

    @property
    def subject(self) -> str:
        """Who acts, for the events they cause and their own study state: user:<id> or key:<id>."""
        return f"user:{self.user_id}" if self.user_id else f"key:{self.key_id}"


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """Why a request names no caller: the refusal's detail and problem code (401, or 403 for a
    session request that fails its CSRF check)."""

    detail: str
    code: str = "unauthorized"
    presented: bool = True  # a credential was sent (and refused)
    status: int = 401


SESSION_COOKIE = "deckstream_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_token(headers: Mapping[str, str]) -> str:
    """The bearer token of the Authorization header. Tokens are never taken from the URL, where
    proxies, browser history and referrers keep them: the web page signs in for a cookie."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def check_token(parts: ApiParts, token: str) -> Caller | Unauthorized:
    """The caller a token names, or why it names none: the one place keys are checked (the
    routes' dependency, the upload guard and a key's exchange for a session call it). The
    bootstrap token is the default tenant's operator key; any other is looked up in the key
    store. A revoked or expired key is said to be so only to someone who holds the whole key; a
    wrong secret answers like an unknown key."""
    if not token:
        return Unauthorized("missing or wrong bearer token", presented=False)
    if secrets.compare_digest(token.encode(), parts.token.encode()):
        return Caller(tenant_id=parts.settings.tenant, key_id=OPERATOR_KEY_ID, operator=True)
    found = parts.accounts.check(token, now_ms())
    if isinstance(found, Verified):
        return Caller(tenant_id=found.tenant_id, key_id=found.key_id)
    if found.reason == "revoked":
        return Unauthorized(f"API key {found.key_id} is revoked", "key-revoked")
    if found.reason == "expired":
        return Unauthorized(f"API key {found.key_id} has expired", "key-expired")
    return Unauthorized("missing or wrong bearer token")


def check_session(parts: ApiParts, cookie: str) -> Caller | Unauthorized:
    """The caller a session cookie names. A session made by exchanging an API key lasts only
    as long as the key does."""
    now = now_ms()
    found = parts.accounts.people.session(cookie, now)
    if isinstance(found, NoSession):
        if found.reason == "expired":
            return Unauthorized("the session has expired: sign in again", "session-expired")
        if found.reason == "ended":
            return Unauthorized("the session has ended: sign in again", "session-ended")
        return Unauthorized("no such session: sign in again", "no-session")
    if found.user_id is not None:
        return Caller(
            tenant_id=found.tenant_id, key_id="", user_id=found.user_id, session_id=found.session_id
        )
    key_id = found.key_id or ""
    if key_id == OPERATOR_KEY_ID:
        return Caller(tenant_id=found.tenant_id, key_id=key_id, operator=True, session_id=found.session_id)
    key = parts.accounts.key(key_id)
    if key is None or key.state(now) != "active":
        state = key.state(now) if key is not None else "unknown"
        return Unauthorized(
            f"the API key this session was opened with is {state}: sign in again", "session-ended"
        )
    return Caller(tenant_id=found.tenant_id, key_id=key_id, session_id=found.session_id)


def same_origin(request: Request) -> bool:
    """No Origin header (not a browser's cross-site request), or the API's own."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


def identify(parts: ApiParts, request: Request) -> Caller | Unauthorized:
    """Who a request is from: a bearer token (scripts, the CLI), else the session cookie (the
    web page). A state-changing request made with the cookie must also carry the session's CSRF
    token in a header, which another site's page cannot read or set, and come from this origin."""
    token = presented_token(request.headers)
    if token:
        return check_token(parts, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return Unauthorized("sign in, or send an API key as a bearer token", presented=False)
    found = check_session(parts, cookie)
    if isinstance(found, Caller) and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not secrets.compare_digest(sent.encode(), csrf_token(cookie).encode()):
            detail = f"a request made with the session cookie needs the {CSRF_HEADER} header the sign-in gave"
            return Unauthorized(detail, "csrf", status=403)
        if not same_origin(request):
            return Unauthorized("a request from another site's page is refused", "cross-origin", status=403)
    return found


def unauthorized(refused: Unauthorized) -> Problem:
    """The 401 for a refused request (RFC 6750: `invalid_token` once a token was sent), or the
    403 of a failed CSRF check."""
    if refused.status != 401:
        return Problem(refused.status, refused.detail, refused.code)
    challenge = 'Bearer error="invalid_token"' if refused.presented else "Bearer"
    return Problem(401, refused.detail, refused.code, {"WWW-Authenticate": challenge})


def get_caller(request: Request, parts: PartsDep) -> Caller:
    found = identify(parts, request)
    if isinstance(found, Unauthorized):
        raise unauthorized(found)
    return found


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_operator(caller: CallerDep) -> Caller:
    """The caller, if they hold the operator key; 403 for a tenant's key."""
    if not caller.operator:
        raise Problem(403, "operators only: this spans every tenant", "operators-only")
    return caller


OperatorDep = Annotated[Caller, Depends(get_operator)]


def get_document(document_id: str, parts: PartsDep, caller: CallerDep) -> DocumentView:
    """The caller's document named in the path (404 for anyone else's)."""
    return find(parts.views, caller.tenant_id, document_id)


DocumentDep = Annotated[DocumentView, Depends(get_document)]
