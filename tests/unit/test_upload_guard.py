"""The upload gate: POST /v1/documents is refused from its headers, before its body is read.

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
from api.upload_guard import MULTIPART_OVERHEAD
from services.settings import Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub

LIMIT = 200_000
BOUNDARY = "deckstream-test-boundary"


def multipart(name: str, data: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


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
