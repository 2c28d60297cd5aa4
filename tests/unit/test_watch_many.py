"""One stream of many documents (`GET /v1/events`, services.handlers.watch_many), no Kafka here:
its ids (one mark per partition) resume every document at once, with no gap and no repeat, from
any event, while events keep coming; it tells each document's events as that document's own
stream does; it takes in a tenant's new documents; it counts as one stream against the caps and
lets go of its subscriptions. The live stack: tests/integration/test_events_multiplex.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import Caller, PartsDep, get_caller
from services.documents import views as views_module
from services.documents.views import DocumentViews, Position
from services.domain import Card
from services.errors import AtCapacity, DocumentNotFound, RateLimited, Refused
from services.events import topics
from services.events.models import ChunkFailure, DocumentProgress, PageInfo, encode
from services.handlers.watch import parse_cursor as parse_one
from services.handlers.watch import watch
from services.handlers.watch_many import (
    MAX_DOCUMENTS,
    Cursor,
    followed,
    parse_cursor,
    scope_of,
    watch_many,
)
from services.settings import Settings
from services.storage.blobs import LocalBlobStore
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub
from tests.unit.test_quotas import Stream, make_world, settings_with

Told = tuple[str, str, dict[str, Any]]  # (id, name, data) as the stream yields them
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MINE = ["a", "b", "c"]  # tenant t's: a and b on partition 0, c on partition 1
DEADLINE_S = 5.0


def event(doc: str, kind: str = "progress", tenant: str = "t", **kw: Any) -> DocumentProgress:
    base: dict[str, Any] = dict(
        tenant_id=tenant,
        document_id=doc,
        generation=1,
        kind=kind,
        status="completed" if kind == "done" else "generating",
        filename=f"{doc}.txt",
        created_at=1,
        pages_total=3,
        pages_done=1,
        chunks_total=3,
        chunks_done=1,
        chunks_failed=0,
        cards=1,
        progress=0.5,
    )
    return DocumentProgress(**{**base, **kw})


def cards(doc: str, n: int) -> list[Card]:
    return [
        Card(f"{doc}-card{i}", "basic", f"Q{i} of {doc}?", "A.", f"{doc}.txt", 1, "1", ("Intro",), 0, "v1")
        for i in range(n)
    ]


def script() -> list[tuple[Position, DocumentProgress]]:
    """Tenant t's three documents and tenant u's x, interleaved across two partitions as a feed
    applies them; card records become several client events each."""
    page = PageInfo(number=1, label="1", section=["Intro"], method="text", chars=10, tokens=3)
    p0 = [
        event("a"),
        event("b"),
        event("x", tenant="u"),
        event("a", "card", new_cards=cards("a", 2)),
        event("b", "page", page=page),
        event("a", "done", progress=1.0),
        event("b", "card", new_cards=cards("b", 1)),
        event("x", "done", tenant="u"),
        event("b", "done", progress=1.0),
    ]
    p1 = [
        event("c"),
        event("c", "chunk_failed", failure=ChunkFailure(chunk_index=1, reason="LLM timed out")),
        event("c", "card", new_cards=cards("c", 3)),
        event("c", "done", status="partial", progress=1.0),
    ]
    # Offsets start apart so that neither partition's marks could pass for the other's.
    zero = [(Position(0, 100 + i), ev) for i, ev in enumerate(p0)]
    one = [(Position(1, 7 + i), ev) for i, ev in enumerate(p1)]
    out: list[tuple[Position, DocumentProgress]] = []
    while zero or one:
        for part in (zero, one):
            if part:
                out.append(part.pop(0))
    return out + zero + one


def applied(records: list[tuple[Position, DocumentProgress]]) -> DocumentViews:
    views = DocumentViews()
    for pos, ev in records:
        views.apply(pos, ev)
    return views


async def told(
    views: DocumentViews, blobs: LocalBlobStore, ids: list[str] | None, after: str | None = None
) -> list[Told]:
    scope = scope_of(ids)
    return [e async for e in watch_many(views, blobs, "t", ids, parse_cursor(after, scope))]


def by_document(events: list[Told]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for _, name, data in events:
        out.setdefault(data["document_id"], []).append((name, data))
    return out


@pytest.fixture()
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path)


# --- The id ----------------------------------------------------------------------------------------


async def test_an_id_round_trips_and_its_size_follows_the_partitions_not_the_documents(
    blobs: LocalBlobStore,
) -> None:
    cursor = Cursor(scope_of(["b", "a"]), {3: (12, 0), 0: (9_000_000_000, 41)})
    assert str(cursor) == f"{scope_of(['a', 'b'])}.0-9000000000-41.3-12-0"  # any order of names
    assert parse_cursor(str(cursor), cursor.scope).marks == cursor.marks
    assert scope_of(None) != scope_of(["a"]) != scope_of(["a", "b"])

    views, many = DocumentViews(), [f"d{n}" for n in range(500)]
    for n, doc in enumerate(many):  # over 4 partitions
        views.apply(Position(n % 4, n), event(doc, "done", progress=1.0))
    events = await told(views, blobs, many)
    assert len(by_document(events)) == 500
    assert max(len(i) for i, _, _ in events) <= len(scope_of(many) + ".3-499-1" * 4)


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "0-12-3",  # an id of one document's stream
        "{scope}.0-12",
        "{scope}.0-12-3.0-14-0",  # a partition twice
        "{scope}.0--1-0",
        "{scope}.0-+1-0",
        "{scope}.0-1-2.",
        "{scope}-0-1-2",
        "{scope_upper}.0-1-2",
        "{scope}" + ".0-1-2" * 1000,  # far more than any partition count
    ],
)
def test_a_malformed_last_event_id_is_a_400_that_says_so(bad: str) -> None:
    scope = scope_of(MINE)
    with pytest.raises(Refused) as refused:
        parse_cursor(bad.format(scope=scope, scope_upper=scope.upper()), scope)
    assert refused.value.http_status == 400 and refused.value.code == "bad-last-event-id"
    assert "not an id of this stream" in refused.value.reason and len(refused.value.reason) < 200


def test_an_id_of_a_stream_of_other_documents_is_refused_not_resumed_from() -> None:
    # Its marks say nothing of documents it did not follow: resuming would skip their events.
    with pytest.raises(Refused) as refused:
        parse_cursor(f"{scope_of(['a'])}.0-5-0", scope_of(["a", "b"]))
    assert refused.value.http_status == 400 and "follows other documents" in refused.value.reason
    assert parse_cursor(None, "abcdef12").marks == {} == parse_cursor("", "abcdef12").marks


def test_documents_named_must_all_be_the_callers_and_a_foreign_one_answers_like_a_missing_one() -> None:
    views = applied(script())
    assert followed(views, "t", None) is None
    assert followed(views, "t", " b,a,,b ") == ["b", "a"]
    for tenant, names, missing in (("t", "a,x", "x"), ("t", "a,nope", "nope"), ("u", "x,a", "a")):
        with pytest.raises(DocumentNotFound) as refused:
            followed(views, tenant, names)
        assert refused.value.http_status == 404 and refused.value.reason == f"no document {missing}"
    with pytest.raises(Refused) as empty:
        followed(views, "t", " , ")
    assert (empty.value.http_status, empty.value.code) == (400, "no-documents")
    with pytest.raises(Refused) as many:  # said before any is looked up
        followed(views, "t", ",".join(f"d{i}" for i in range(MAX_DOCUMENTS + 1)))
    assert (many.value.http_status, many.value.code) == (400, "too-many-documents")


# --- The merge and resuming ------------------------------------------------------------------------


async def test_each_document_is_told_as_its_own_stream_tells_it_and_nothing_else(
    blobs: LocalBlobStore,
) -> None:
    views = applied(script())
    events = await told(views, blobs, MINE)
    assert set(by_document(events)) == set(MINE)  # tenant u's x is not followed
    for doc in MINE:
        alone = [
            (name, {"document_id": doc, **data}) async for _, name, data in watch(views, blobs, doc, (-1, -1))
        ]
        assert by_document(events)[doc] == alone
    assert by_document(events)["c"][2] == (
        "chunk_failed",
        {"document_id": "c", "chunk_index": 1, "reason": "LLM timed out"},
    )
    assert len({i for i, _, _ in events}) == len(events)  # every id tells a new place
    assert views.subscribers() == 0  # ended after the last `done`, and let go


async def test_resuming_from_any_event_gives_exactly_the_rest(blobs: LocalBlobStore) -> None:
    views = applied(script())
    everything = await told(views, blobs, MINE)
    for cut in range(len(everything)):
        rest = await told(views, blobs, MINE, after=everything[cut][0])
        assert rest == everything[cut + 1 :], f"resumed after event {cut}"
    assert await told(views, blobs, list(reversed(MINE)), after=everything[-1][0]) == []


async def test_a_stream_dropped_and_resumed_while_events_come_loses_and_repeats_nothing(
    blobs: LocalBlobStore,
) -> None:
    records = script()
    views = applied(records[:4])  # some kept before anyone follows, the rest live
    live = records[4:]
    scope = scope_of(MINE)
    whole = watch_many(views, blobs, "t", MINE, Cursor(scope))
    whole_task = asyncio.create_task(_drain(whole))
    await asyncio.sleep(0)  # it reads what is kept and waits for more
    first = watch_many(views, blobs, "t", MINE, Cursor(scope))
    got = [await _next(first) for _ in range(5)]
    await first.aclose()  # the connection drops
    assert views.subscribers() == 1  # the uninterrupted one
    for pos, ev in live[:5]:  # while nobody resumes
        views.apply(pos, ev)
        await asyncio.sleep(0)
    second = asyncio.create_task(_drain(watch_many(views, blobs, "t", MINE, parse_cursor(got[-1][0], scope))))
    for pos, ev in live[5:]:
        views.apply(pos, ev)
        await asyncio.sleep(0)  # lets the readers take each event as it comes
    uninterrupted, resumed = await whole_task, await second
    assert by_document(got + resumed) == by_document(uninterrupted)
    assert [n for n, _ in by_document(uninterrupted)["b"]] == [
        "progress", "progress", "page", "progress", "card", "progress", "done",
    ]  # fmt: skip
    assert len({i for i, _, _ in got + resumed}) == len(got + resumed)
    assert views.subscribers() == 0


async def _drain(stream: AsyncIterator[Told]) -> list[Told]:
    async with asyncio.timeout(DEADLINE_S):  # a stream that should end but waits fails, not hangs
        return [e async for e in stream]


async def _next(stream: AsyncIterator[Told]) -> Told:
    async with asyncio.timeout(DEADLINE_S):
        return await anext(stream)


async def test_a_reader_that_lags_is_ended_without_a_hole_and_resumes_exactly(
    blobs: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views_module, "QUEUE_LIMIT", 2)
    records = script()
    views, scope = DocumentViews(), scope_of(MINE)
    for doc in MINE:
        views.register_upload(event(doc, status="queued", progress=0.0))
    slow = watch_many(views, blobs, "t", MINE, Cursor(scope))
    alone = watch(views, blobs, "c", (-1, -1))  # one document's stream lags the same way
    views.apply(*records[0])  # a's first
    views.apply(*records[1])  # c's first
    got, got_c = [await _next(slow)], [await _next(alone)]
    for pos, ev in records[2:]:  # more than the queue holds, while nobody reads
        views.apply(pos, ev)
    got += await _drain(slow)
    got_c += await _drain(alone)
    assert views.subscribers() == 0  # ended: not waiting for events it could no longer tell
    rest = await told(views, blobs, MINE, after=got[-1][0])
    assert by_document(got + rest) == by_document(await told(views, blobs, MINE))
    rest_c = await _drain(watch(views, blobs, "c", parse_one(got_c[-1][0])))
    assert got_c + rest_c == await _drain(watch(views, blobs, "c", (-1, -1)))


async def test_a_done_document_whose_events_are_gone_is_told_again_and_skipped_once_sent(
    blobs: LocalBlobStore,
) -> None:
    from services.documents.decks import store_chunk_cards
    from services.documents.ledger import store_ledger

    views = DocumentViews(keep_done=2)  # c and then a are done first: their events give way
    page = PageInfo(number=1, label="1", section=[], method="text", chars=10, tokens=3)
    for doc, n in (("a", 2), ("c", 3)):
        store_ledger(blobs, doc, 1, [page])
        store_chunk_cards(blobs, doc, 1, 0, cards(doc, n))
    for pos, ev in script():
        views.apply(pos, ev)
    assert [views.docs[d].history_dropped for d in MINE] == [True, False, True]
    events = await told(views, blobs, MINE)
    assert [n for n, _ in by_document(events)["a"]] == ["progress", "page", "card", "card", "done"]
    assert await told(views, blobs, MINE, after=events[-1][0]) == []  # all sent: ends at once
    for cut in range(len(events)):
        assert await told(views, blobs, MINE, after=events[cut][0]) == events[cut + 1 :]


# --- Following a whole tenant ----------------------------------------------------------------------


async def test_following_a_tenant_takes_in_its_new_documents_and_no_one_elses(blobs: LocalBlobStore) -> None:
    views = DocumentViews()
    views.apply(Position(0, 0), event("old", "done", progress=1.0))
    stream = watch_many(views, blobs, "t", None, Cursor(scope_of(None)))
    assert [(n, d["document_id"]) for _, n, d in [await _next(stream), await _next(stream)]] == [
        ("progress", "old"),
        ("done", "old"),
    ]
    reading = asyncio.create_task(_next(stream))
    views.register_upload(event("new", status="queued", progress=0.0))  # uploaded through this API
    views.apply(Position(0, 1), event("theirs", tenant="u"))
    views.apply(Position(1, 0), event("elsewhere"))  # first seen in the feed (another API took it)
    views.apply(Position(0, 2), event("new", "card", new_cards=cards("new", 1)))
    views.apply(Position(0, 3), event("new", "done", progress=1.0))
    got = [await reading] + [await _next(stream) for _ in range(4)]
    assert [(n, d["document_id"]) for _, n, d in got] == [
        ("progress", "elsewhere"),
        ("progress", "new"),
        ("card", "new"),
        ("progress", "new"),
        ("done", "new"),
    ]
    assert views.subscribers() == views.subscribers_of("t") == 1 and views.subscribers_of("u") == 0
    # A reload resumes with the last id: nothing again, the next event of any document.
    resumed = watch_many(views, blobs, "t", None, parse_cursor(got[-1][0], scope_of(None)))
    reading = asyncio.create_task(_next(resumed))
    views.apply(Position(1, 1), event("elsewhere", "done", progress=1.0))
    assert [(n, d["document_id"]) for _, n, d in [await reading, await _next(resumed)]] == [
        ("progress", "elsewhere"),
        ("done", "elsewhere"),
    ]
    await stream.aclose()
    await resumed.aclose()
    assert views.subscribers() == 0


# --- The caps ------------------------------------------------------------------------------------


def test_a_stream_of_many_documents_counts_once_against_the_caps() -> None:
    views = applied(script())
    many = views.subscribe_many("t", MINE, tenant_cap=3, total_cap=4)
    whole = views.subscribe_many("empty", None, tenant_cap=3, total_cap=4)  # a tenant with no document yet
    one = views.subscribe("a", tenant_cap=3, total_cap=4)
    assert (views.subscribers(), views.subscribers_of("t"), views.subscribers_of("empty")) == (3, 2, 1)
    views.subscribe_many("t", None, tenant_cap=3, total_cap=4)
    with pytest.raises(RateLimited) as tenant:
        views.subscribe_many("t", ["c"], tenant_cap=3, total_cap=5)
    assert tenant.value.limit == "sse_streams" and tenant.value.http_status == 429
    with pytest.raises(AtCapacity) as server:
        views.subscribe_many("u", ["x"], tenant_cap=3, total_cap=4)
    assert server.value.limit == "max_subscribers" and server.value.http_status == 503
    views.unsubscribe_many("t", many)
    views.unsubscribe_many("empty", whole)
    views.unsubscribe("a", one)
    assert views.subscribers() == 1


async def test_concurrent_streams_of_many_cannot_slip_past_the_tenants_cap(tmp_path: Path) -> None:
    n = 3
    world = make_world(settings_with(tmp_path, sse_streams=n))
    async with world.app.router.lifespan_context(world.app):
        # Every request is held past authentication until all have come that far: a cap
        # checked apart from the subscription would let them all through.
        together = asyncio.Barrier(n + 4)

        async def held_caller(request: Request, parts: PartsDep) -> Caller:
            await together.wait()
            return get_caller(request, parts)

        world.app.dependency_overrides[get_caller] = held_caller
        streams = [Stream(world.app, "-", world.a.headers) for _ in range(n + 4)]
        for s in streams:
            s.path = "/v1/events"  # every document of tenant A (none yet)
        tasks = [asyncio.create_task(s.run()) for s in streams]
        async with asyncio.timeout(10):
            await asyncio.gather(*(s.answered.wait() for s in streams))
        world.app.dependency_overrides.clear()
        assert sorted(s.status or 0 for s in streams) == [200] * n + [429] * 4
        assert world.parts.views.subscribers() == n
        for s in streams:
            s.close()
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert world.parts.views.subscribers() == 0  # every stream let go of its place


# --- The route -------------------------------------------------------------------------------------


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[TestClient]:
    hub = FakeHub()
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    with TestClient(create_app(settings, publisher=FakePublisher(), feed=hub)) as client:
        for pos, ev in script():  # the operator's tenant's documents
            hub.apply(topics.PROGRESS.name, pos, encode(ev.model_copy(update={"tenant_id": settings.tenant})))
        yield client


def sse(client: TestClient, query: str, **headers: str) -> Any:
    with client.stream("GET", f"/v1/events{query}", headers={**AUTH, **headers}) as r:
        r.read()
        return r


def test_the_route_streams_named_documents_to_done_and_answers_problems(served: TestClient) -> None:
    client = served
    r = sse(client, "?documents=a,c")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = r.text.splitlines()
    ids = [line[4:] for line in lines if line.startswith("id: ")]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names.count("done") == 2 and len(ids) == len(names) == len(set(ids))
    middle = ids[len(ids) // 2]
    again = sse(client, "?documents=c,a", **{"Last-Event-ID": middle})  # the same stream
    assert [line[4:] for line in again.text.splitlines() if line.startswith("id: ")] == ids[
        len(ids) // 2 + 1 :
    ]
    by_param = sse(client, f"?documents=a,c&last_event_id={middle}")  # a reloaded page
    assert by_param.text == again.text
    # A browser reconnects to a stream that ended, with its last id: 204 stops it for good.
    assert sse(client, "?documents=a,c", **{"Last-Event-ID": ids[-1]}).status_code == 204
    assert sse(client, "?documents=a,c", **{"Last-Event-ID": ids[-2]}).text.count("event: ") == 1

    for query, headers, status, code in (
        ("?documents=a,nope", {}, 404, "not-found"),
        ("?documents=", {}, 400, "no-documents"),
        ("?documents=a,c", {"Last-Event-ID": "0-12-3"}, 400, "bad-last-event-id"),
        ("?documents=a", {"Last-Event-ID": middle}, 400, "bad-last-event-id"),
        ("", {"Last-Event-ID": middle}, 400, "bad-last-event-id"),
    ):
        r = sse(client, query, **headers)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", query
        assert r.json()["type"].endswith(f"/{code}") and r.json()["instance"] == "/v1/events"
    assert client.app.state.deckstream.views.subscribers() == 0  # type: ignore[attr-defined]
