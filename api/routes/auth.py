"""Signing in to the web page: a password, or an API key exchanged once, for an HttpOnly,
SameSite=Strict session cookie (services.handlers.sessions). The page never holds a token a
script can read; it reads the CSRF token for state-changing requests from these answers."""

from __future__ import annotations

import math
from typing import Self

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from api.deps import (
    OPERATOR_KEY_ID,
    SESSION_COOKIE,
    Caller,
    CallerDep,
    PartsDep,
    Unauthorized,
    check_session,
    check_token,
    same_origin,
    unauthorized,
)
from api.problems import Problem, responses
from services.accounts.keys import key_id_of
from services.accounts.people import NoSession
from services.bootstrap import ApiParts
from services.events.models import now_ms
from services.handlers.sessions import Client, SignInRefused, Started, csrf_token

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class SignIn(BaseModel):
    """A user name and password, or an API key (`deckstream up` prints the operator's)."""

    username: str | None = Field(None, max_length=256)
    password: str | None = Field(None, max_length=1024)
    key: str | None = Field(None, max_length=512)

    @model_validator(mode="after")
    def one_way(self) -> Self:
        if (self.key is None) == (self.username is None or self.password is None):
            raise ValueError("send either a username and a password, or a key")
        return self


class Register(BaseModel):
    username: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class SessionInfo(BaseModel):
    tenant_id: str
    tenant_name: str
    subject: str  # user:<id> or key:<id>
    username: str | None  # None: signed in with an API key
    operator: bool
    expires_at: int  # ms since the epoch
    csrf_token: str  # send as X-CSRF-Token on every request that changes something


def _from_this_site(request: Request) -> None:
    """Another site's page must not sign a visitor in to an account of its choosing (login CSRF)."""
    if not same_origin(request):
        raise Problem(403, "a sign-in from another site's page is refused", "cross-origin")


def _client(request: Request) -> Client:
    return Client(request.client.host if request.client else None, request.headers.get("user-agent"))


def _info(parts: ApiParts, caller: Caller, expires_at: int, cookie: str) -> SessionInfo:
    tenant = parts.accounts.tenant(caller.tenant_id)
    user = parts.accounts.people.user(caller.user_id) if caller.user_id else None
    return SessionInfo(
        tenant_id=caller.tenant_id,
        tenant_name=tenant.name if tenant is not None else caller.tenant_id,
        subject=caller.subject,
        username=user.username if user is not None else None,
        operator=caller.operator,
        expires_at=expires_at,
        csrf_token=csrf_token(cookie),
    )


def _set_cookie(request: Request, response: Response, parts: ApiParts, started: Started) -> None:
    mode = parts.settings.accounts.cookie_secure
    secure = mode == "always" or (mode == "auto" and request.url.scheme == "https")
    response.set_cookie(
        SESSION_COOKIE,
        started.cookie,
        max_age=math.ceil(parts.settings.accounts.session_hours * 3600),
        httponly=True,  # no script reads it: a cross-site script cannot steal the session
        samesite="strict",  # never sent on another site's requests
        secure=secure,
        path="/",
    )


def _signed_in(request: Request, response: Response, parts: ApiParts, started: Started) -> SessionInfo:
    _set_cookie(request, response, parts, started)
    found = check_session(parts, started.cookie)
    if isinstance(found, Unauthorized):  # ended between the two lines: say so, not 500
        raise unauthorized(found)
    return _info(parts, found, started.session.expires_at, started.cookie)


@router.post("/session", responses=responses(401, 403, 422, 429))
async def sign_in(body: SignIn, request: Request, response: Response, parts: PartsDep) -> SessionInfo:
    """Sign in: sets the session cookie. Wrong credentials give 401 (which part was wrong is
    not told); too many failures for a user name or from an address give 429."""
    _from_this_site(request)
    client = _client(request)
    if body.key is not None:
        found = await run_in_threadpool(check_token, parts, body.key.strip())
        if isinstance(found, Unauthorized):
            await parts.sessions.key_refused(found.code, key_id_of(body.key.strip()), client)
            raise SignInRefused(found.detail)
        key_id = found.key_id or OPERATOR_KEY_ID
        started = await parts.sessions.start(found.tenant_id, f"key:{key_id}", client)
    else:
        assert body.username is not None and body.password is not None
        started = await parts.sessions.with_password(body.username, body.password, client)
    return _signed_in(request, response, parts, started)


@router.get("/session", responses=responses(401))
async def session(request: Request, parts: PartsDep) -> SessionInfo:
    """The session the cookie names (the page asks this at load), with its CSRF token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Problem(401, "not signed in", "no-session")
    found = check_session(parts, cookie)
    live = parts.accounts.people.session(cookie, now_ms())
    if isinstance(found, Unauthorized) or isinstance(live, NoSession):
        raise unauthorized(
            found if isinstance(found, Unauthorized) else Unauthorized("not signed in", "no-session")
        )
    return _info(parts, found, live.expires_at, cookie)


@router.delete("/session", status_code=204, responses=responses(400, 401, 403))
async def sign_out(caller: CallerDep, parts: PartsDep) -> Response:
    """End the session on the server and clear the cookie (needs the CSRF header)."""
    live = parts.accounts.people.live(caller.session_id, now_ms()) if caller.session_id else None
    if live is None:
        raise Problem(400, "this request was not made with a session cookie", "no-session")
    await parts.sessions.end(live)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/register", status_code=201, responses=responses(403, 409, 422, 429))
async def register(body: Register, request: Request, response: Response, parts: PartsDep) -> SessionInfo:
    """Create an account in a tenant of its own, and sign in (when DECKSTREAM_ACCOUNTS_REGISTRATION
    is open; 403 otherwise)."""
    _from_this_site(request)
    started = await parts.sessions.register(body.username, body.password, _client(request))
    return _signed_in(request, response, parts, started)
