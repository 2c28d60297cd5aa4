"""Signing in to the web page: accounts with argon2id passwords, API keys exchanged once for a
session, HttpOnly SameSite cookies, CSRF, sign-out, throttling, registration; every refusal
answered with problem+json and recorded on the accounts topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import CSRF_HEADER, SESSION_COOKIE
from services.accounts import admin
from services.accounts.passwords import verify_password
from services.accounts.store import KeyStore
from services.events import topics
from services.events.models import (
    ApiKeyRevoked,
    Event,
    SessionEnded,
    SessionStarted,
    SignInFailed,
    UserCreated,
)
from services.handlers.sessions import PRUNE_ABOVE, THROTTLE_WINDOW_S, Throttle
from services.settings import Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub, progress

PASSWORD = "correct horse battery"


@dataclass
class World:
    client: TestClient
    publisher: FakePublisher
    hub: FakeHub
    store: KeyStore  # a copy of the accounts, to make events with (the API has its own)
    tenant_a: str
    tenant_b: str
    key_b: str
    document: str  # tenant A's


def make(tmp_path: Path, **accounts: Any) -> Iterator[World]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}, "accounts": accounts})
    publisher, hub = FakePublisher(), FakeHub()
    store = KeyStore(settings.tenant)
    app = create_app(settings, publisher=publisher, feed=hub)

    def feed(events: list[Any]) -> None:
        for event in events:
            store.apply(event)
            hub.feed(event, topic=topics.ACCOUNTS.name)

    a, b = (admin.create_tenant(store, name, by="test") for name in ("school A", "school B"))
    feed(a.events + b.events)
    feed(admin.create_user(store, a.tenant_id, "ada@example.org", PASSWORD, by="test").events)
    feed(admin.create_user(store, b.tenant_id, "bob", PASSWORD, by="test").events)
    with TestClient(app) as client:
        doc = "d" * 32
        hub.feed(progress(doc, "progress", "generating", tenant_id=a.tenant_id, filename="a.pdf"))
        yield World(client, publisher, hub, store, a.tenant_id, b.tenant_id, b.key.token, doc)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    yield from make(tmp_path)


def sign_in(w: World, username: str = "ada@example.org", password: str = PASSWORD) -> dict[str, Any]:
    r = w.client.post("/v1/auth/session", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def sent(w: World, kind: type[Event]) -> list[Any]:
    return [e for topic, e in w.publisher.sent if isinstance(e, kind) and topic == topics.ACCOUNTS.name]


def test_a_password_is_kept_only_as_an_argon2id_hash(world: World) -> None:
    user = world.store.people.user_named("ADA@example.org")  # user names are case-insensitive
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert verify_password(user.password_hash, PASSWORD) and not verify_password(
        user.password_hash, "wrong one!"
    )


def test_sign_in_sets_an_httponly_samesite_cookie_and_the_session_sees_only_its_tenant(world: World) -> None:
    r = world.client.post("/v1/auth/session", json={"username": "ada@example.org", "password": PASSWORD})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=dss_")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http on the one-box default; https sets it (below)
    body = r.json()
    assert body["username"] == "ada@example.org" and body["tenant_name"] == "school A"
    assert body["subject"].startswith("user:usr_") and body["operator"] is False
    assert (
        len(body["csrf_token"]) == 64 and r.cookies[SESSION_COOKIE] not in r.text
    )  # never the cookie in a body
    started = sent(world, SessionStarted)
    assert len(started) == 1 and started[0].tenant_id == world.tenant_a
    assert started[0].sha256 != r.cookies[SESSION_COOKIE]  # only its hash on the log
    # The cookie alone is a credential for reads: its tenant's documents, and no other's.
    listed = world.client.get("/v1/documents")
    assert listed.status_code == 200 and [d["document_id"] for d in listed.json()] == [world.document]
    assert world.client.get("/v1/auth/session").json()["csrf_token"] == body["csrf_token"]


def test_the_cookie_is_secure_when_asked(tmp_path: Path) -> None:
    for w in make(tmp_path, cookie_secure="always"):
        r = w.client.post("/v1/auth/session", json={"username": "bob", "password": PASSWORD})
        assert "secure" in r.headers["set-cookie"].lower()


def test_another_tenants_session_gets_404_on_a_document(world: World) -> None:
    sign_in(world, "bob")
    r = world.client.get(f"/v1/documents/{world.document}")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_wrong_passwords_and_unknown_users_get_the_same_401_and_are_audited(world: World) -> None:
    wrong = world.client.post("/v1/auth/session", json={"username": "ada@example.org", "password": "x" * 12})
    unknown = world.client.post("/v1/auth/session", json={"username": "nobody", "password": "x" * 12})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong user name or password"
    assert SESSION_COOKIE not in wrong.cookies
    reasons = [(e.username, e.reason, e.tenant_id) for e in sent(world, SignInFailed)]
    assert reasons == [
        ("ada@example.org", "wrong-password", world.tenant_a),
        ("nobody", "unknown-user", "default"),
    ]


def test_repeated_failures_are_throttled_even_with_the_right_password(world: World) -> None:
    for _ in range(5):
        r = world.client.post("/v1/auth/session", json={"username": "bob", "password": "not it at all"})
        assert r.status_code == 401
    r = world.client.post("/v1/auth/session", json={"username": "bob", "password": PASSWORD})
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) > 60 and r.json()["limit"] == "sign_in_failures"
    assert sent(world, SignInFailed)[-1].reason == "throttled"


def test_a_state_changing_request_with_the_cookie_needs_the_csrf_header(world: World) -> None:
    csrf = sign_in(world)["csrf_token"]
    path = f"/v1/documents/{world.document}/cancel"
    refused = world.client.post(path)
    assert refused.status_code == 403 and refused.json()["type"].endswith("/csrf")
    wrong = world.client.post(path, headers={CSRF_HEADER: "0" * 64})
    assert wrong.status_code == 403
    cross = world.client.post(path, headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"})
    assert cross.status_code == 403 and cross.json()["type"].endswith("/cross-origin")
    before = len(world.publisher.sent)
    r = world.client.post(path, headers={CSRF_HEADER: csrf, "Origin": "http://testserver"})
    assert r.status_code == 202, r.text
    assert len(world.publisher.sent) == before + 1  # the cancel command, and nothing for the refused ones


def test_an_upload_with_the_cookie_and_no_csrf_header_is_refused_before_its_body(world: World) -> None:
    csrf = sign_in(world)["csrf_token"]
    files = {"file": ("notes.txt", b"Mitochondria make ATP.\n" * 30)}
    refused = world.client.post("/v1/documents", files=files)
    assert refused.status_code == 403 and refused.headers["connection"] == "close"
    accepted = world.client.post("/v1/documents", files=files, headers={CSRF_HEADER: csrf})
    assert accepted.status_code == 202, accepted.text


def test_sign_out_ends_the_session_on_the_server(world: World) -> None:
    csrf = sign_in(world)["csrf_token"]
    old = world.client.cookies[SESSION_COOKIE]
    assert world.client.delete("/v1/auth/session").status_code == 403  # no CSRF header
    r = world.client.delete("/v1/auth/session", headers={CSRF_HEADER: csrf})
    assert r.status_code == 204
    assert "Max-Age=0" in r.headers["set-cookie"] or "expires=" in r.headers["set-cookie"].lower()
    assert [e.reason for e in sent(world, SessionEnded)] == ["signed-out"]
    # The cookie kept (by a copy, or a browser that ignored the clearing) no longer works.
    world.client.cookies.set(SESSION_COOKIE, old)
    r = world.client.get("/v1/documents")
    assert r.status_code == 401 and r.json()["type"].endswith("/session-ended")


def test_an_expired_session_is_refused_with_why(tmp_path: Path) -> None:
    for w in make(tmp_path, session_hours=0.5 / 3600):  # half a second
        sign_in(w)
        cookie = {
            SESSION_COOKIE: w.client.cookies[SESSION_COOKIE]
        }  # sent on, as by a browser with a slow clock
        w.client.cookies.clear()
        deadline = time.monotonic() + 10
        while (
            r := w.client.get("/v1/documents", cookies=cookie)
        ).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 401 and r.json()["type"].endswith("/session-expired")
        assert w.client.get("/v1/auth/session", cookies=cookie).status_code == 401


def test_a_key_is_exchanged_once_for_a_session_that_ends_with_the_key(world: World) -> None:
    r = world.client.post("/v1/auth/session", json={"key": world.key_b})
    assert r.status_code == 200, r.text
    assert r.json()["subject"].startswith("key:") and r.json()["tenant_id"] == world.tenant_b
    assert world.client.get("/v1/documents").status_code == 200
    key_id = r.json()["subject"].removeprefix("key:")
    world.hub.feed(
        ApiKeyRevoked(tenant_id=world.tenant_b, key_id=key_id, revoked_by="test"), topic=topics.ACCOUNTS.name
    )
    r = world.client.get("/v1/documents")
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_the_operator_token_gives_an_operator_session_and_a_bad_key_is_audited(world: World) -> None:
    r = world.client.post("/v1/auth/session", json={"key": TOKEN})
    assert r.status_code == 200 and r.json()["operator"] is True and r.json()["tenant_id"] == "default"
    bad = world.client.post("/v1/auth/session", json={"key": "dsk_abcdefghijkl_nope"})
    assert bad.status_code == 401
    assert [(e.key_id, e.reason) for e in sent(world, SignInFailed)] == [("abcdefghijkl", "unauthorized")]


def test_a_disabled_account_cannot_sign_in_and_its_sessions_end(world: World) -> None:
    sign_in(world)
    events = admin.disable_user(world.store, "ada@example.org", by="test")
    assert len(events) == 1  # this copy of the store never saw the session (the API's did)
    world.hub.feed(events[0], topic=topics.ACCOUNTS.name)
    assert world.client.get("/v1/documents").status_code == 401
    r = world.client.post("/v1/auth/session", json={"username": "ada@example.org", "password": PASSWORD})
    assert r.status_code == 401
    assert sent(world, SignInFailed)[-1].reason == "user-disabled"


def test_tokens_in_the_url_are_not_accepted(world: World) -> None:
    r = world.client.get("/v1/documents", params={"access_token": TOKEN})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "ada@example.org"},
        {"key": TOKEN, "username": "a", "password": "b"},
        {"password": "x"},
    ],
)
def test_a_malformed_sign_in_is_422(world: World, body: dict[str, str]) -> None:
    r = world.client.post("/v1/auth/session", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_registration_is_closed_by_default(world: World) -> None:
    r = world.client.post("/v1/auth/register", json={"username": "eve", "password": PASSWORD})
    assert r.status_code == 403 and r.json()["type"].endswith("/registration-closed")
    assert not sent(world, UserCreated)


def test_open_registration_makes_a_tenant_of_ones_own(tmp_path: Path) -> None:
    for w in make(tmp_path, registration="open"):
        r = w.client.post("/v1/auth/register", json={"username": "Eve", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json()["tenant_name"] == "Eve" and r.json()["username"] == "Eve"
        assert w.client.get("/v1/documents").json() == []  # signed in, and sees nothing of A's
        taken = w.client.post("/v1/auth/register", json={"username": "eve", "password": PASSWORD})
        assert taken.status_code == 409
        weak = w.client.post("/v1/auth/register", json={"username": "mallory", "password": "short"})
        assert weak.status_code == 422 and weak.json()["type"].endswith("/weak-password")
        spaced = w.client.post("/v1/auth/register", json={"username": "a b", "password": PASSWORD})
        assert spaced.status_code == 422


def test_one_persons_typos_do_not_lock_out_others_behind_the_same_address(world: World) -> None:
    for _ in range(6):  # ada is throttled; the address (everyone's here) is not
        world.client.post(
            "/v1/auth/session", json={"username": "ada@example.org", "password": "not it at all"}
        )
    assert (
        world.client.post("/v1/auth/session", json={"username": "bob", "password": PASSWORD}).status_code
        == 200
    )


def test_another_site_cannot_sign_a_visitor_in(world: World) -> None:
    body = {"username": "ada@example.org", "password": PASSWORD}
    r = world.client.post("/v1/auth/session", json=body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies
    assert not sent(world, SessionStarted)


def test_the_throttle_forgets_old_failures_of_made_up_names() -> None:
    throttle = Throttle(5)
    for i in range(PRUNE_ABOVE + 1):
        throttle.failed([f"name:guess{i}"], now=0.0)
    throttle.failed(["name:late"], now=THROTTLE_WINDOW_S + 1)  # the window has passed for the rest
    assert throttle.wait_s(["name:late"], THROTTLE_WINDOW_S + 1) is None
    assert len(throttle._failures) == 1
