"""Dependencies shared by the routers: the app's parts and the caller's identity."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.problems import Problem
from services.bootstrap import ApiParts
from services.documents.views import DocumentView
from services.handlers.documents import find


def get_parts(request: Request) -> ApiParts:
    parts: ApiParts = request.app.state.deckstream
    return parts


PartsDep = Annotated[ApiParts, Depends(get_parts)]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The bearer token a request carries (the Authorization header, else `access_token`)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        # EventSource cannot send headers: the web page passes the token as a query parameter.
        token = query.get("access_token", "")
    return token


def authenticate(parts: ApiParts, token: str) -> Caller | None:
    """The caller a token names, or None. The one place credentials are checked: the routes'
    dependency and the upload guard (which runs before the body is read) both call it."""
    if token and secrets.compare_digest(token.encode(), parts.token.encode()):
        return Caller(tenant_id=parts.settings.tenant)
    return None


def get_caller(request: Request, parts: PartsDep) -> Caller:
    caller = authenticate(parts, presented_token(request.headers, request.query_params))
    if caller is None:
        raise Problem(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_document(document_id: str, parts: PartsDep, caller: CallerDep) -> DocumentView:
    """The caller's document named in the path (404 for anyone else's)."""
    return find(parts.views, caller.tenant_id, document_id)


DocumentDep = Annotated[DocumentView, Depends(get_document)]
