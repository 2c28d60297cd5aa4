"""Dependencies shared by the routers: the app's state and the caller's identity."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.hub import ProgressHub
from api.problems import Problem
from services.events.publisher import EventPublisher
from services.settings import Settings
from services.storage.blobs import BlobStore


@dataclass(slots=True)
class ApiState:
    settings: Settings
    token: str
    blobs: BlobStore
    publisher: EventPublisher
    hub: ProgressHub


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.deckstream
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str


def get_caller(request: Request, state: StateDep) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        # EventSource cannot send headers: the web page passes the token as a query parameter.
        token = request.query_params.get("access_token", "")
    if not token or not secrets.compare_digest(token.encode(), state.token.encode()):
        raise Problem(401, "missing or wrong bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})
    return Caller(tenant_id=state.settings.tenant)


CallerDep = Annotated[Caller, Depends(get_caller)]
