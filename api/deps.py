"""Dependencies shared by the routers: the app's parts and the caller's identity."""

from __future__ import annotations

import secrets
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


def get_caller(request: Request, parts: PartsDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        # EventSource cannot send headers: the web page passes the token as a query parameter.
        token = request.query_params.get("access_token", "")
    if not token or not secrets.compare_digest(token.encode(), parts.token.encode()):
        raise Problem(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})
    return Caller(tenant_id=parts.settings.tenant)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_document(document_id: str, parts: PartsDep, caller: CallerDep) -> DocumentView:
    """The caller's document named in the path (404 for anyone else's)."""
    return find(parts.views, caller.tenant_id, document_id)


DocumentDep = Annotated[DocumentView, Depends(get_document)]
