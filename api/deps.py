"""Dependencies shared by the routers: the app's parts and the caller's identity."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.problems import Problem
from services.accounts.store import Verified
from services.bootstrap import ApiParts
from services.documents.views import DocumentView
from services.events.models import now_ms
from services.handlers.documents import find


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

    @property
    def subject(self) -> str:
        """Who acts, for the events they cause and their own study state: user:<id> or key:<id>."""
        return f"user:{self.user_id}" if self.user_id else f"key:{self.key_id}"


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """Why a request names no caller: the 401's detail and problem code."""

    detail: str
    code: str = "unauthorized"
    presented: bool = True  # a token was sent (and refused)


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The bearer token a request carries (the Authorization header, else `access_token`)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        # EventSource cannot send headers: the web page passes the token as a query parameter.
        token = query.get("access_token", "")
    return token


def check_token(parts: ApiParts, token: str) -> Caller | Unauthorized:
    """The caller a token names, or why it names none: the one place credentials are checked
    (the routes' dependency calls it, the upload guard through `authenticate`). The bootstrap
    token is the default tenant's operator key; any other is looked up in the key store. A
    revoked or expired key is said to be so only to someone who holds the whole key; a wrong
    secret answers like an unknown key."""
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


def authenticate(parts: ApiParts, token: str) -> Caller | None:
    """The caller a token names, or None (`check_token` says why, and `unauthorized` makes
    the 401 of it). The upload guard, which runs before the body is read, calls this."""
    found = check_token(parts, token)
    return found if isinstance(found, Caller) else None


def unauthorized(refused: Unauthorized) -> Problem:
    """The 401 for a refused request (RFC 6750: `invalid_token` once a token was sent)."""
    challenge = 'Bearer error="invalid_token"' if refused.presented else "Bearer"
    return Problem(401, refused.detail, refused.code, {"WWW-Authenticate": challenge})


def get_caller(request: Request, parts: PartsDep) -> Caller:
    found = check_token(parts, presented_token(request.headers, request.query_params))
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
