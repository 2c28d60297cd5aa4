"""/metrics as a scraper reads it: the collectors on real small objects, parsed back from the
Prometheus text format; the API route; the worker's metrics server.

The real consumers' lag (the API's progress feed, the worker's Faust consumer) is checked
against the broker in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from infra.process import free_port
from services.bootstrap import build_worker
from services.documents.views import Position
from services.events import topics
from services.events.models import encode, rejected
from services.events.progress_feed import ProgressFeed
from services.llm.breaker import CircuitBreaker
from services.llm.scheduler import InflightScheduler
from services.metrics import LagSource, ProcessMetrics, aiokafka_lag, api_metrics, worker_metrics
from services.settings import Settings
from streams.lifecycle import WorkerLifecycle, faust_lag
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub, progress

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(metrics: ProcessMetrics | bytes | str) -> Samples:
    """Every sample of an exposition: name -> sorted labels -> value."""
    text = metrics.exposition() if isinstance(metrics, ProcessMetrics) else metrics
    text = text.decode() if isinstance(text, bytes) else text
    found: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples[name].items()}


def dead_letter(topic: str, offset: int) -> bytes:
    record = SimpleNamespace(topic=topic, partition=0, offset=offset, key=b"doc", value=b"\x00junk")
    return encode(rejected(record, stage="test", reason="undecodable"))


async def test_api_metrics_count_documents_by_status_sse_clients_and_dead_letters() -> None:
    feed = ProgressFeed("unused:0")
    views = feed.views
    for offset, (doc, status) in enumerate(
        [("a", "generating"), ("b", "generating"), ("c", "completed"), ("d", "queued")]
    ):
        views.apply(Position(0, offset), progress(doc, status=status))
    views.apply(Position(0, 9), progress("d", status="extracting"))  # a later snapshot replaces one
    views.subscribe("a"), views.subscribe("c")
    feed.apply(topics.DEAD_LETTERS.name, Position(0, 0), dead_letter("documents.pages", 3))
    feed.apply(topics.DEAD_LETTERS.name, Position(0, 1), dead_letter("documents.pages", 4))
    feed.apply(topics.DEAD_LETTERS.name, Position(0, 2), dead_letter("chunks.cards", 1))

    samples = scrape(api_metrics(feed))

    assert by(samples, "deckstream_documents", "status") == {
        "queued": 0,
        "extracting": 1,
        "generating": 2,
        "completed": 1,
        "partial": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert samples["deckstream_sse_clients"] == {(): 2}
    assert by(samples, "deckstream_dead_letters", "source_topic") == {"documents.pages": 2, "chunks.cards": 1}
    assert samples["deckstream_consumer_lag"] == {}  # the feed's consumer is not started here
    assert samples["process_resident_memory_bytes"][()] > 0  # the standard process metrics too


async def test_worker_metrics_show_slots_in_use_callers_queued_and_an_open_breaker() -> None:
    scheduler = InflightScheduler(total=2)
    assert scheduler.try_acquire("book") and scheduler.try_acquire("book")
    waiting = [asyncio.create_task(scheduler.acquire(doc)) for doc in ("book", "notes", "slides")]
    await asyncio.sleep(0)  # the waiters queue up
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
    metrics = worker_metrics(scheduler, breaker)

    samples = scrape(metrics)
    assert samples["deckstream_llm_in_flight"] == {(): 2}
    assert samples["deckstream_llm_in_flight_limit"] == {(): 2}
    assert samples["deckstream_llm_queued"] == {(): 3}
    assert by(samples, "deckstream_llm_breaker_state", "state") == {"closed": 1, "open": 0, "half-open": 0}

    breaker.record_failure("503"), breaker.record_failure("503")
    scheduler.release("book")  # one waiter gets the slot
    samples = scrape(metrics)
    assert by(samples, "deckstream_llm_breaker_state", "state") == {"closed": 0, "open": 1, "half-open": 0}
    assert samples["deckstream_llm_in_flight"] == {(): 2}
    assert samples["deckstream_llm_queued"] == {(): 2}
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


def test_lag_sources_are_labelled_by_consumer_and_a_failing_one_is_left_out() -> None:
    def broken() -> dict[tuple[str, int], int]:
        raise RuntimeError("consumer gone")

    metrics = worker_metrics(InflightScheduler(1), CircuitBreaker())
    metrics.add_lag_source(
        LagSource("worker", lambda: {("documents.chunks", 1): 7, ("documents.chunks", 0): 0})
    )
    metrics.add_lag_source(LagSource("broken", broken))
    metrics.add_lag_source(LagSource("analytics-sink", lambda: {("jobs.progress", 3): 12}))

    lag = {
        (labels["consumer"], labels["topic"], labels["partition"]): value
        for labels, value in ((dict(k), v) for k, v in scrape(metrics)["deckstream_consumer_lag"].items())
    }
    assert lag == {
        ("worker", "documents.chunks", "0"): 0,
        ("worker", "documents.chunks", "1"): 7,
        ("analytics-sink", "jobs.progress", "3"): 12,
    }


async def test_aiokafka_lag_is_highwater_minus_position_of_partitions_known() -> None:
    """On a real (unstarted) aiokafka consumer: the partition state read is aiokafka's own."""
    consumer = AIOKafkaConsumer(bootstrap_servers="unused:0")
    fetched, unfetched = TopicPartition("jobs.progress", 0), TopicPartition("jobs.progress", 1)
    consumer.assign([fetched, unfetched])
    state = consumer._subscription.subscription.assignment.state_value(fetched)
    state.highwater = 10  # as a fetch response sets them
    state.seek(4)
    assert aiokafka_lag(consumer) == {("jobs.progress", 0): 6}
    assert aiokafka_lag(None) == {}


class FakeFaustConsumer:
    """What faust_lag reads of Faust's consumer (the real one: tests/integration/test_metrics.py)."""

    def __init__(self, highwaters: dict[TopicPartition, int | None], committed: dict[TopicPartition, int]):
        self.highwaters = highwaters
        self._committed_offset: defaultdict[TopicPartition, int | None] = defaultdict(lambda: None, committed)

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]


def test_faust_lag_counts_from_the_committed_offset_and_leaves_changelogs_out() -> None:
    chunks = [TopicPartition("documents.chunks", p) for p in range(3)]
    changelog = TopicPartition("deckstream-g1-tracker-changelog", 0)
    consumer = FakeFaustConsumer(
        {chunks[0]: 50, chunks[1]: 8, chunks[2]: None, changelog: 90}, {chunks[0]: 45}
    )
    lag = faust_lag(consumer, {changelog.topic})
    assert lag == {("documents.chunks", 0): 5, ("documents.chunks", 1): 8}  # never committed: from 0
    assert chunks[1] not in consumer._committed_offset  # read, not grown


class FakeAnalytics:
    """The API's analytics with a sink behind on one partition."""

    def __init__(self) -> None:
        self.sink = SimpleNamespace(lag=lambda: {(topics.PROGRESS.name, 2): 40})

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture()
def api_client(tmp_path: Path) -> Iterator[tuple[TestClient, FakeHub]]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": "t" * 24}})
    hub = FakeHub()
    app = create_app(settings, publisher=FakePublisher(), feed=hub, analytics=FakeAnalytics())  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield client, hub


def test_get_metrics_answers_without_a_token_in_the_prometheus_text_format(
    api_client: tuple[TestClient, FakeHub],
) -> None:
    client, hub = api_client
    hub.feed(progress("doc-1", status="generating"))
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert by(scrape(r.text), "deckstream_documents", "status")["generating"] == 1
    hub.feed(progress("doc-1", kind="done", status="completed", progress=1.0))
    statuses = by(scrape(client.get("/metrics").text), "deckstream_documents", "status")
    assert (statuses["generating"], statuses["completed"]) == (0, 1)  # read live, scrape by scrape
    lag = scrape(client.get("/metrics").text)["deckstream_consumer_lag"]
    assert lag == {(("consumer", "analytics-sink"), ("partition", "2"), ("topic", "jobs.progress")): 40}
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


async def test_the_worker_serves_metrics_on_its_port_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings.model_validate(
        {"home": tmp_path, "kafka": {"bootstrap": "unused:0"}, "worker": {"metrics_port": port}}
    )
    parts = build_worker(settings)
    tp = TopicPartition("documents.chunks", 2)
    app: Any = SimpleNamespace(
        consumer=FakeFaustConsumer({tp: 12}, {tp: 2}), tables=SimpleNamespace(changelog_topics=set())
    )
    life = WorkerLifecycle(parts, app=app)
    life._serve_metrics()
    try:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
        samples = scrape(r.text)
        assert samples["deckstream_llm_in_flight"] == {(): 0}
        assert samples["deckstream_consumer_lag"] == {
            (("consumer", "worker"), ("partition", "2"), ("topic", "documents.chunks")): 10
        }
    finally:
        await life.on_stop()
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/metrics")
