"""The upload gate: POST /v1/documents is refused from its headers, before its body is read,
and the tenant's upload limits are applied there too (a file refused later gives its count back).

Most tests call the app as ASGI with a ``receive`` that records every call: a refused request
never calls it, so not one byte of its body was read (nor spooled). Two tests run a real uvicorn
on a free port with a raw socket client, to measure that the answer comes before the body.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.problems import PROBLEM
from api.upload_guard import MULTIPART_OVERHEAD
from services.settings import Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub
from tests.unit.test_quotas import World, make_world, settings_with

LIMIT = 200_000
BOUNDARY = "deckstream-test-boundary"


def multipart(name: str, data: bytes, options: str | None = None) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    form = f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="options"\r\n\r\n{options}'
    return (
        head.encode()
        + data
        + (form.encode() if options is not None else b"")
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


class Recorded:
    """An ASGI receive that hands out a body in pieces and counts the calls, and a send that
    keeps the answer."""

    def __init__(self, body: bytes = b"", piece: int = 64 * 1024) -> None:
        self.pieces = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
        self.receives = 0
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if self.pieces:
            body = self.pieces.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(self.pieces)}
        await asyncio.Event().wait()  # the client is still there, sending nothing more
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))
        return data


def settings_for(home: Path, **limits: int) -> Settings:
    return Settings.model_validate(
        {"home": home, "api": {"token": TOKEN}, "limits": {"max_upload_bytes": LIMIT, **limits}}
    )


@pytest.fixture()
async def app(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, FakePublisher, Settings]]:
    settings, publisher = settings_for(tmp_path), FakePublisher()
    application = create_app(settings, publisher=publisher, feed=FakeHub())
    async with application.router.lifespan_context(application):
        yield application, publisher, settings


def scope(headers: dict[str, str], path: str = "/v1/documents", method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def upload_headers(length: int, *, auth: bool = True, **more: str) -> dict[str, str]:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(length)}
    if auth:
        headers["authorization"] = f"Bearer {TOKEN}"
    return {**headers, **more}


async def call(app: FastAPI, headers: dict[str, str], body: bytes = b"", **kw: str) -> Recorded:
    recorded = Recorded(body)
    await asyncio.wait_for(app(scope(headers, **kw), recorded.receive, recorded.send), 30)
    return recorded


def blob_tmp(settings: Settings) -> list[Path]:
    return list((settings.blob_dir / "tmp").iterdir())


@pytest.mark.parametrize(
    "auth", [{}, {"authorization": "Bearer wrong-token"}, {"authorization": f"Basic {TOKEN}"}]
)
async def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    app: tuple[FastAPI, FakePublisher, Settings], auth: dict[str, str]
) -> None:
    application, publisher, _ = app
    r = await call(application, {**upload_headers(100 * 1024 * 1024, auth=False), **auth})
    assert r.status == 401 and r.receives == 0
    presented = auth.get("authorization", "").startswith("Bearer")
    assert r.headers["www-authenticate"] == ('Bearer error="invalid_token"' if presented else "Bearer")
    assert r.headers["connection"] == "close"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.body["type"].endswith("/unauthorized") and r.body["status"] == 401
    assert publisher.sent == []


async def test_a_declared_size_over_the_limit_is_413_at_once(
    app: tuple[FastAPI, FakePublisher, Settings],
) -> None:
    application, publisher, _ = app
    r = await call(application, upload_headers(LIMIT + MULTIPART_OVERHEAD + 1))
    assert (r.status, r.receives, r.headers["connection"]) == (413, 0, "close")
    assert r.body["limit"] == LIMIT and "200,000-byte limit" in r.body["detail"]
    assert publisher.sent == []


async def test_a_chunked_upload_is_411_and_a_bad_length_400(
    app: tuple[FastAPI, FakePublisher, Settings],
) -> None:
    application, _, _ = app
    chunked = upload_headers(0, **{"transfer-encoding": "chunked"})
    del chunked["content-length"]
    r = await call(application, chunked)
    assert (r.status, r.receives, r.body["title"]) == (411, 0, "Length Required")
    assert "Content-Length" in r.body["detail"]
    for bad in ("12abc", "-1", "", "²", "1" * 5000):
        r = await call(application, upload_headers(0, **{"content-length": bad}))
        assert (r.status, r.receives) == (400, 0), bad
    twice = scope(upload_headers(10))
    twice["headers"].append((b"content-length", b"20"))
    recorded = Recorded()
    await application(twice, recorded.receive, recorded.send)
    assert (recorded.status, recorded.receives) == (400, 0)


async def test_a_body_that_is_not_a_form_is_415_unread(app: tuple[FastAPI, FakePublisher, Settings]) -> None:
    application, _, _ = app
    for content_type in ("application/x-www-form-urlencoded", "application/json", "text/plain"):
        r = await call(application, upload_headers(150_000, **{"content-type": content_type}))
        assert (r.status, r.receives) == (415, 0), content_type
    headers = upload_headers(150_000)
    del headers["content-type"]
    assert (await call(application, headers)).status == 415


async def test_more_bytes_than_declared_end_the_request_with_413_and_keep_nothing(
    app: tuple[FastAPI, FakePublisher, Settings],
) -> None:
    """A server that did not frame the body by its Content-Length (uvicorn does) would hand the
    app what the client sent; the gate counts it."""
    application, publisher, settings = app
    body = multipart("notes.txt", b"osmosis " * 100_000)  # 800 KB, declared as 1 KB
    r = await call(application, upload_headers(1024), body)
    assert r.status == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.receives == 1  # the first piece was already more than declared
    assert publisher.sent == [] and blob_tmp(settings) == []


async def test_a_body_over_the_limit_without_a_length_is_cut_at_the_limit(
    app: tuple[FastAPI, FakePublisher, Settings],
) -> None:
    application, publisher, settings = app
    headers = upload_headers(0)
    del headers["content-length"]
    body = multipart("notes.txt", b"osmosis " * 100_000)
    r = await call(application, headers, body)
    assert r.status == 413
    assert r.receives * 64 * 1024 <= LIMIT + MULTIPART_OVERHEAD + 64 * 1024  # stopped at the limit
    assert publisher.sent == [] and blob_tmp(settings) == []


async def test_an_honest_upload_passes_the_gate(app: tuple[FastAPI, FakePublisher, Settings]) -> None:
    application, publisher, _ = app
    body = multipart("notes.txt", b"Osmosis moves water across membranes. " * 50)
    r = await call(application, upload_headers(len(body)), body)
    assert r.status == 202, r.body
    ((_, event),) = publisher.sent
    assert event.filename == "notes.txt"  # type: ignore[attr-defined]


async def test_other_routes_are_not_gated(app: tuple[FastAPI, FakePublisher, Settings]) -> None:
    application, _, _ = app
    r = await call(application, {"content-length": "0"}, path="/v1/documents/x/cancel")
    assert r.status == 401 and "connection" not in r.headers  # the route's own check answered
    r = await call(application, {"authorization": f"Bearer {TOKEN}"}, method="GET")
    assert r.status == 200 and r.receives == 0
    r = await call(application, {}, path="/healthz", method="GET")
    assert r.status == 200


async def test_the_gate_checks_tokens_with_api_deps_check_token(
    app: tuple[FastAPI, FakePublisher, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate asks api.deps.check_token, looked up at each request: a change there (API
    keys, tenants) applies to the gate too."""
    import api.deps

    application, publisher, _ = app
    original, seen, refuse = api.deps.check_token, [], [False]

    def check_token(parts: Any, token: str) -> Any:
        seen.append(token)
        return api.deps.Unauthorized("refused by the test") if refuse[0] else original(parts, token)

    monkeypatch.setattr(api.deps, "check_token", check_token)
    body = multipart("notes.txt", b"Osmosis moves water across membranes. " * 50)
    assert (await call(application, upload_headers(len(body)), body)).status == 202
    assert seen[0] == TOKEN
    refuse[0] = True  # the same token, refused from now on
    refused = await call(application, upload_headers(len(body)), body)
    assert (refused.status, refused.receives) == (401, 0)  # by the gate: the route never read a byte
    assert len(publisher.sent) == 1


# The tenant's upload limits, from the headers too.

NOTES = multipart("notes.txt", b"Osmosis moves water across membranes. " * 50)


@asynccontextmanager
async def tenants(tmp_path: Path, **quotas: int) -> AsyncIterator[World]:
    """The app with two tenants (A and B, keys of their own) and these upload limits, started."""
    world = make_world(settings_with(tmp_path, **quotas))
    async with world.app.router.lifespan_context(world.app):
        yield world


def as_tenant(world: World, length: int, key: str = "a") -> dict[str, str]:
    tenant = world.a if key == "a" else world.b
    return upload_headers(length, auth=False, authorization=tenant.headers["Authorization"])


async def test_an_upload_over_the_tenants_limit_is_429_before_its_body_is_read(tmp_path: Path) -> None:
    async with tenants(tmp_path, uploads_per_minute=1) as world:
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 202
        r = await call(world.app, as_tenant(world, 50 * 1024 * 1024), NOTES)
        assert (r.status, r.receives, r.headers["connection"]) == (429, 0, "close")
        assert r.headers["content-type"] == "application/problem+json"
        assert 59 <= int(r.headers["retry-after"]) <= 60
        assert r.body["limit"] == "uploads_per_minute" and r.body["retry_after_s"] == int(
            r.headers["retry-after"]
        )
        assert (await call(world.app, as_tenant(world, len(NOTES), "b"), NOTES)).status == 202  # B's own
        operator = upload_headers(len(NOTES))  # the operator's key is not held to tenant limits
        assert {(await call(world.app, operator, NOTES)).status for _ in range(2)} == {202}
        assert len(world.parts.views.docs) == 4  # A's first, B's, the operator's two


async def test_a_refusal_from_the_headers_is_not_counted(tmp_path: Path) -> None:
    async with tenants(tmp_path, uploads_per_minute=1) as world:
        too_large = await call(world.app, as_tenant(world, 500 * 1024 * 1024), NOTES)
        not_a_form = await call(
            world.app, {**as_tenant(world, len(NOTES)), "content-type": "text/plain"}, NOTES
        )
        assert (too_large.status, not_a_form.status) == (413, 415)
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 202
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 429


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (multipart("empty.txt", b""), 400),
        (multipart("notes.pptx", b"\x00\x01 not a zip at all"), 415),
        (multipart("notes.txt", b"Osmosis. " * 50, options='{"cards_per_chunk": 99}'), 422),
        (NOTES.replace(b'name="file"', b'name="attachment"'), 422),  # no `file` part
    ],
    ids=["empty", "unsupported", "bad-options", "no-file"],
)
async def test_a_file_refused_after_its_body_gives_its_count_back(
    tmp_path: Path, body: bytes, status: int
) -> None:
    """A rejected file does not use up the tenant's uploads per minute: with a limit of one, the
    next good file is still accepted."""
    async with tenants(tmp_path, uploads_per_minute=1) as world:
        refused = await call(world.app, as_tenant(world, len(body)), body)
        assert refused.status == status and refused.receives > 0, refused.body  # refused from the bytes
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 202
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).body[
            "limit"
        ] == "uploads_per_minute"


class Held(Recorded):
    """A client that sends the first piece of its body, then nothing until `go` (or `leave`)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body, piece=len(body) // 2)
        self.sent_first, self.gate = asyncio.Event(), asyncio.Event()
        self.gone = False

    async def receive(self) -> dict[str, Any]:
        if self.receives == 1:
            self.sent_first.set()
            await self.gate.wait()
            if self.gone:
                self.receives += 1
                return {"type": "http.disconnect"}
        return await super().receive()

    def go(self) -> None:
        self.gate.set()

    def leave(self) -> None:
        self.gone = True
        self.gate.set()


async def test_uploads_on_their_way_count_as_in_flight_and_a_client_gone_gives_its_count_back(
    tmp_path: Path,
) -> None:
    """Two uploads sent together cannot both pass a limit of one document in flight: the first
    counts from its headers on, while its body is still coming. Given up mid-body, it counts no
    more (nor against the uploads per minute)."""
    async with tenants(tmp_path, documents_in_flight=1, uploads_per_minute=1) as world:
        first = Held(NOTES)
        sending = asyncio.create_task(
            world.app(scope(as_tenant(world, len(NOTES))), first.receive, first.send)
        )
        async with asyncio.timeout(10):
            await first.sent_first.wait()  # past the gate, its body half read
        second = await call(world.app, as_tenant(world, len(NOTES)), NOTES)
        assert (second.status, second.receives) == (429, 0)
        assert second.body["limit"] == "documents_in_flight"
        first.leave()
        async with asyncio.timeout(10):
            await sending
        assert first.status == 400 and world.parts.views.docs == {}  # the form was cut short
        again = await call(world.app, as_tenant(world, len(NOTES)), NOTES)
        assert again.status == 202, again.body


async def test_an_upload_the_server_fails_is_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of ours (here a bug: no answer reaches the gate) does not use up the tenant's
    uploads per minute."""
    async with tenants(tmp_path, uploads_per_minute=1) as world:
        accept = world.parts.upload

        async def broken(*args: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(world.parts, "upload", broken)
        with pytest.raises(RuntimeError, match="a bug"):
            await call(world.app, as_tenant(world, len(NOTES)), NOTES)
        monkeypatch.setattr(world.parts, "upload", accept)
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 202
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 429


async def test_an_upload_accepted_while_another_is_on_its_way_is_counted_once(tmp_path: Path) -> None:
    async with tenants(tmp_path, documents_in_flight=2) as world:
        first = Held(NOTES)
        sending = asyncio.create_task(
            world.app(scope(as_tenant(world, len(NOTES))), first.receive, first.send)
        )
        async with asyncio.timeout(10):
            await first.sent_first.wait()
        first.go()
        async with asyncio.timeout(30):
            await sending
        assert first.status == 202
        # One document in flight (the accepted one, not twice): room for exactly one more.
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).status == 202
        assert (await call(world.app, as_tenant(world, len(NOTES)), NOTES)).body[
            "limit"
        ] == "documents_in_flight"


def test_the_schema_documents_every_refusal_as_problem_json(
    app: tuple[FastAPI, FakePublisher, Settings],
) -> None:
    """What the fuzzer (tests/integration/test_fuzz.py) holds the live API to, without a broker:
    every error answer of every route is the problem schema, FastAPI's own 422 and 400 too."""
    document = app[0].openapi()
    problem_json = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    upload = document["paths"]["/v1/documents"]["post"]["responses"]
    assert set(upload) == {"202", "400", "401", "403", "411", "413", "415", "422", "429"}
    assert upload["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    wrong = [
        f"{method.upper()} {path} {status}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        if int(status) >= 400 and answer.get("content") != problem_json and path != "/readyz"
    ]
    assert wrong == []
    with_body = [op for item in document["paths"].values() for op in item.values() if "requestBody" in op]
    assert with_body and all("400" in op["responses"] for op in with_body)  # a body not UTF-8
    assert "HTTPValidationError" not in json.dumps(document)


# A real server: the answer arrives before the body was sent.


@asynccontextmanager
async def serving(settings: Settings, publisher: FakePublisher) -> AsyncIterator[int]:
    """A real uvicorn on a free port, for the test's duration: yields the port."""
    listening = socket.create_server(("127.0.0.1", 0))  # connections wait in its backlog until it serves
    app = create_app(settings, publisher=publisher, feed=FakeHub())
    # A failing test may leave a request waiting for its body: shutdown does not wait for it.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        yield listening.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float = 15.0) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not)."""
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout_s):
            data += chunk
    except ConnectionResetError:  # closed with our unread bytes in its buffer: a reset, not a FIN
        pass
    return data


async def test_an_unauthenticated_100_mb_upload_is_answered_before_it_is_sent(tmp_path: Path) -> None:
    settings, publisher = (
        Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}}),
        FakePublisher(),
    )
    assert settings.limits.max_upload_bytes >= 100 * 1024 * 1024  # the size alone would be accepted
    async with serving(settings, publisher) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            "POST /v1/documents HTTP/1.1\r\nHost: deckstream\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
        ).encode()
        try:
            writer.write(request)  # the headers only: not one byte of the 100 MB body
            await writer.drain()
            answer = await read_until_closed(reader)  # the answer came, and the server hung up
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"www-authenticate: Bearer" in answer
    assert len(request) < 1024 * 1024  # all we had sent when it answered
    assert publisher.sent == [] and blob_tmp(settings) == []


async def test_a_lying_content_length_is_cut_off_and_keeps_nothing(tmp_path: Path) -> None:
    """Declares 1 KB, sends 5 MB. uvicorn reads the declared 1 KB as the body (a form cut short)
    and the rest as a next request it cannot parse: the connection ends with a 4xx, nothing
    is accepted, nothing is left in the blob store."""
    settings, publisher = (
        Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}}),
        FakePublisher(),
    )
    body = multipart("notes.txt", b"osmosis " * (5 * 1024 * 1024 // 8))
    async with serving(settings, publisher) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            writer.write(
                (
                    "POST /v1/documents HTTP/1.1\r\nHost: deckstream\r\n"
                    f"Authorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    "Content-Length: 1024\r\n\r\n"
                ).encode()
            )
            try:
                for i in range(0, len(body), 64 * 1024):
                    writer.write(body[i : i + 64 * 1024])
                    await writer.drain()
            except ConnectionError:  # the server closed the connection: what we expect
                pass

        sending = asyncio.create_task(send())
        try:
            answer = await read_until_closed(reader)
            await asyncio.wait_for(sending, 30)
        finally:
            sending.cancel()
            writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    assert status in (400, 413, 422), answer[:300]
    assert publisher.sent == [] and blob_tmp(settings) == []
