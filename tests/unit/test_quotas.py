"""Each tenant's limits (uploads per minute, documents in flight, pages per day, event streams)
answer 429 with Retry-After and the limit's name, for the tenant over it only; 0 is unlimited;
concurrent event streams cannot slip past a cap; and one tenant's backlog of LLM calls takes
turns with another tenant's instead of running ahead of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import CallerDep, PartsDep, get_document
from services.accounts import admin
from services.accounts.store import KeyStore
from services.bootstrap import ApiParts
from services.documents.views import DocumentView, DocumentViews
from services.errors import RateLimited
from services.events import topics
from services.events.models import now_ms
from services.llm.scheduler import InflightScheduler
from services.quotas import Quotas
from services.settings import QuotaSettings, Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub, progress

UNLIMITED = {"uploads_per_minute": 0, "documents_in_flight": 0, "pages_per_day": 0, "sse_streams": 0}
NOTES = b"Photosynthesis turns light into chemical energy in the chloroplast.\n" * 20


@dataclass
class Tenant:
    id: str
    headers: dict[str, str]


@dataclass
class World:
    app: FastAPI
    hub: FakeHub
    a: Tenant
    b: Tenant

    @property
    def parts(self) -> ApiParts:
        parts: ApiParts = self.app.state.deckstream
        return parts


def settings_with(tmp_path: Path, max_subscribers: int = 1000, **quotas: int) -> Settings:
    return Settings.model_validate(
        {
            "home": tmp_path,
            "api": {"token": TOKEN, "max_subscribers": max_subscribers},
            "quotas": {**UNLIMITED, **quotas},
        }
    )


def make_world(settings: Settings) -> World:
    hub = FakeHub()
    app = create_app(settings, publisher=FakePublisher(), feed=hub)
    store = KeyStore(settings.tenant)
    issued = [admin.create_tenant(store, name, by="test") for name in ("school A", "school B")]
    for event in (e for i in issued for e in i.events):
        hub.feed(event, topic=topics.ACCOUNTS.name)
    a, b = (Tenant(i.tenant_id, {"Authorization": f"Bearer {i.key.token}"}) for i in issued)
    return World(app, hub, a, b)


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[World, TestClient]]:
    world = make_world(settings)
    with TestClient(world.app) as client:
        yield world, client


def upload(client: TestClient, tenant: Tenant) -> Any:
    return client.post("/v1/documents", headers=tenant.headers, files={"file": ("notes.txt", NOTES)})


def assert_limited(r: Any, limit: str, at_least_s: int = 1) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= at_least_s
    body: dict[str, Any] = r.json()
    assert body["limit"] == limit and body["status"] == 429 and body["retry_after_s"] >= at_least_s
    return body


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_uploads_per_minute_is_per_tenant_and_the_window_slides(tmp_path: Path) -> None:
    with serving(settings_with(tmp_path, uploads_per_minute=2)) as (world, client):
        clock = Clock()
        world.parts.quotas.clock = clock
        assert [upload(client, world.a).status_code for _ in range(2)] == [202, 202]
        clock.now += 20
        assert_limited(upload(client, world.a), "uploads_per_minute", at_least_s=40)
        assert upload(client, world.b).status_code == 202  # B is not held to A's count
        clock.now += 40  # the first two leave the window
        assert upload(client, world.a).status_code == 202


def test_documents_in_flight_frees_up_as_documents_finish(tmp_path: Path) -> None:
    with serving(settings_with(tmp_path, documents_in_flight=1)) as (world, client):
        first = upload(client, world.a)
        assert first.status_code == 202
        assert_limited(upload(client, world.a), "documents_in_flight")
        assert upload(client, world.b).status_code == 202
        doc = first.json()["document_id"]
        world.hub.feed(progress(doc, "done", "completed", tenant_id=world.a.id, created_at=now_ms()))
        assert upload(client, world.a).status_code == 202


def test_pages_per_day_counts_the_last_24_hours(tmp_path: Path) -> None:
    with serving(settings_with(tmp_path, pages_per_day=10)) as (world, client):
        clock = Clock()
        world.parts.quotas.clock = clock
        at = int(clock.now * 1000)
        world.hub.feed(progress("old", "done", "completed", tenant_id=world.a.id, created_at=at - 86_400_001))
        world.hub.feed(progress("b1", "done", "completed", tenant_id=world.a.id, created_at=at - 3_600_000))
        world.hub.feed(
            progress("b2", "done", "completed", tenant_id=world.a.id, created_at=at, pages_total=8)
        )
        # 2 + 8 pages in the last 24 h ("old" is out of it): A is at its limit until b1 leaves it.
        body = assert_limited(upload(client, world.a), "pages_per_day", at_least_s=23 * 3600)
        assert body["retry_after_s"] == 23 * 3600
        assert upload(client, world.b).status_code == 202
        clock.now += 23 * 3600 + 1
        assert upload(client, world.a).status_code == 202


def test_zero_is_unlimited_and_the_operator_is_not_held_to_tenant_limits(tmp_path: Path) -> None:
    with serving(settings_with(tmp_path)) as (world, client):
        assert {upload(client, world.a).status_code for _ in range(8)} == {202}
    limited = settings_with(tmp_path / "limited", uploads_per_minute=1, documents_in_flight=1)
    with serving(limited) as (world, client):
        operator = Tenant(limited.tenant, {"Authorization": f"Bearer {TOKEN}"})
        assert {upload(client, operator).status_code for _ in range(3)} == {202}


def test_defaults() -> None:
    assert QuotaSettings() == QuotaSettings(
        uploads_per_minute=30, documents_in_flight=20, pages_per_day=5000, sse_streams=50
    )


# --- Event streams: the caps are checked and counted as a stream opens --------------------------


class Stream:
    """One GET of an event stream straight through the ASGI app, held open until `close`."""

    def __init__(self, app: FastAPI, document_id: str, headers: dict[str, str]) -> None:
        self.app, self.path, self.headers = app, f"/v1/documents/{document_id}/events", headers
        self.status: int | None = None
        self.answered = asyncio.Event()
        self.body = b""
        self._gone = asyncio.Event()
        self._asked = False

    async def run(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"test"),
                *((k.lower().encode(), v.encode()) for k, v in self.headers.items()),
            ],
            "client": ("test", 1),
            "server": ("test", 80),
            "state": {},
        }
        await self.app(scope, self._receive, self._send)
        self.answered.set()

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status == 200:
                self.answered.set()
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def close(self) -> None:
        self._gone.set()


@pytest.mark.parametrize(("cap", "limited"), [("sse_streams", 429), ("max_subscribers", 503)])
async def test_concurrent_streams_cannot_slip_past_a_cap(tmp_path: Path, cap: str, limited: int) -> None:
    n = 3
    settings = (
        settings_with(tmp_path, sse_streams=n)
        if cap == "sse_streams"
        else settings_with(tmp_path, max_subscribers=n)
    )
    world = make_world(settings)
    async with world.app.router.lifespan_context(world.app):
        world.hub.feed(progress("a-doc", tenant_id=world.a.id, created_at=now_ms()))
        world.hub.feed(progress("b-doc", tenant_id=world.b.id, created_at=now_ms()))
        # Every request is held just before the route until all of them have come that far (past
        # authentication): a cap checked apart from the subscription would let them all through.
        together = asyncio.Barrier(n + 5)

        async def held_document(document_id: str, parts: PartsDep, caller: CallerDep) -> DocumentView:
            await together.wait()
            return get_document(document_id, parts, caller)

        world.app.dependency_overrides[get_document] = held_document
        streams = [Stream(world.app, "a-doc", world.a.headers) for _ in range(n + 5)]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        async with asyncio.timeout(10):
            await asyncio.gather(*(s.answered.wait() for s in streams))
        world.app.dependency_overrides.clear()
        assert sorted(s.status or 0 for s in streams) == [200] * n + [limited] * 5
        assert world.parts.views.subscribers() == n
        refused = next(s for s in streams if s.status == limited)
        assert b'"limit":"' + cap.encode() + b'"' in refused.body.replace(b" ", b"")
        if cap == "sse_streams":  # tenant B has streams of its own
            other = Stream(world.app, "b-doc", world.b.headers)
            tasks.append(asyncio.create_task(other.run()))
            async with asyncio.timeout(10):
                await other.answered.wait()
            assert other.status == 200
            streams.append(other)
        for s in streams:
            s.close()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert world.parts.views.subscribers() == 0  # every stream let go of its place


# --- The limits themselves, with a clock of their own --------------------------------------------


def test_a_refused_upload_is_not_counted() -> None:
    clock = Clock()
    quotas = Quotas(QuotaSettings(**{**UNLIMITED, "uploads_per_minute": 1}), 1000, clock=clock)
    views = DocumentViews()
    quotas.admit_upload(views, "a")
    for _ in range(5):
        clock.now += 10
        with pytest.raises(RateLimited) as refused:
            quotas.admit_upload(views, "a")
        assert refused.value.limit == "uploads_per_minute"
    assert refused.value.retry_after_s == pytest.approx(10)
    clock.now += 10
    quotas.admit_upload(views, "a")  # a minute after the only upload counted


def test_an_upload_refused_after_admission_is_given_back_and_an_accepted_one_is_kept() -> None:
    """The gate admits an upload from its headers; the answer to its body settles it."""
    quotas = Quotas(QuotaSettings(**{**UNLIMITED, "uploads_per_minute": 2}), 1000, clock=Clock())
    views = DocumentViews()
    for _ in range(3):  # files refused one after another (empty, unreadable, ...): none counts
        ticket = quotas.admit_upload(views, "a")
        assert ticket is not None
        quotas.end_upload(ticket, accepted=False)
    for _ in range(2):
        ticket = quotas.admit_upload(views, "a")
        assert ticket is not None
        quotas.end_upload(ticket, accepted=True)
    with pytest.raises(RateLimited) as refused:
        quotas.admit_upload(views, "a")
    assert refused.value.limit == "uploads_per_minute"
    assert quotas.admit_upload(views, "a", exempt=True) is None  # the operator's: nothing to settle


def test_uploads_admitted_and_not_yet_answered_count_as_in_flight() -> None:
    quotas = Quotas(QuotaSettings(**{**UNLIMITED, "documents_in_flight": 2}), 1000)
    views = DocumentViews()
    first, _ = quotas.admit_upload(views, "a"), quotas.admit_upload(views, "a")
    with pytest.raises(RateLimited) as refused:
        quotas.admit_upload(views, "a")
    assert refused.value.limit == "documents_in_flight"
    assert quotas.admit_upload(views, "b") is not None  # another tenant's uploads are its own
    assert first is not None
    quotas.end_upload(first, accepted=False)
    assert quotas.admit_upload(views, "a") is not None


# --- Fair share of the LLM between tenants --------------------------------------------------------


async def settle(rounds: int = 10) -> None:
    """Let every runnable task run until it blocks (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_tenants_backlog_does_not_starve_another_tenants_upload() -> None:
    sched = InflightScheduler(total=2)
    started: list[str] = []
    gates: list[asyncio.Event] = []

    async def call(tenant: str, document: str) -> None:
        async with sched.slot(document, tenant=tenant):
            started.append(tenant)
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()

    async def finish_oldest() -> None:
        gates.pop(0).set()
        await settle()

    tasks = [asyncio.create_task(call("A", "book")) for _ in range(50)]
    await settle()
    tasks += [asyncio.create_task(call("B", "notes")) for _ in range(2)]
    await settle()
    assert started == ["A", "A"] and sched.waiting == 50
    await finish_oldest()
    assert started[2] == "B"  # the very next slot, not after A's 48 waiting
    await finish_oldest()
    # A's slot freed: A and B now hold one each (the fair share), until B's first call ends.
    assert started[3] == "A" and sched.held_by_tenant("A") == sched.held_by_tenant("B") == 1
    await finish_oldest()
    assert started[4] == "B" and started.count("B") == 2  # B's two calls within three releases
    while gates or len(started) < 52:
        await finish_oldest()
    await asyncio.gather(*tasks)
    assert sched.in_use == 0 and sched.held_by_tenant("A") == sched.held_by_tenant("B") == 0


async def test_tenants_take_turns_and_lanes_still_come_first() -> None:
    sched = InflightScheduler(total=1)
    started: list[str] = []
    release = asyncio.Event()

    async def call(name: str, tenant: str, priority: int = 0) -> None:
        async with sched.slot(f"{tenant}-doc", priority, tenant=tenant):
            started.append(name)
            await release.wait()

    first = asyncio.create_task(call("A0", "A"))
    await settle()
    queued = [asyncio.create_task(call(f"A{i}", "A")) for i in range(1, 4)]
    queued += [asyncio.create_task(call(f"B{i}", "B")) for i in range(2)]
    queued.append(asyncio.create_task(call("C-interactive", "C", priority=1)))
    await settle()
    release.set()
    await asyncio.gather(first, *queued)
    assert started == ["A0", "C-interactive", "B0", "A1", "B1", "A2", "A3"]
