"""Prometheus metrics of one live process, read when scraped.

    metrics = api_metrics(feed)          # or worker_metrics(scheduler, breaker)
    metrics.add_lag_source(LagSource("analytics-sink", sink_lag))
    body = metrics.exposition()          # GET /metrics

Each collector reads live state at scrape time (no background updater). Consumer lag comes from
`LagSource`s: a consumer name (the `consumer` label) and a function returning the records it is
behind, by (topic, partition); any consumer of a process adds its own. Lag sources and collectors
may be called from the scraping thread (the worker's metrics server): they read values and never
await. The standard process metrics (CPU, memory, open files) come with every registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from services.documents.state import TERMINAL
from services.documents.views import DocumentViews
from services.events.progress_feed import ProgressFeed
from services.llm.breaker import CircuitBreaker
from services.llm.scheduler import InflightScheduler

log = structlog.get_logger(__name__)

Lag = Mapping[tuple[str, int], int]  # (topic, partition) -> records not yet consumed
STATUSES = ("queued", "extracting", "generating", *sorted(TERMINAL))  # always shown, 0 when none
BREAKER_STATES = ("closed", "open", "half-open")


@dataclass(frozen=True, slots=True)
class LagSource:
    """A consumer whose lag /metrics shows: `read()` gives the records it is behind by (topic,
    partition), for the partitions it knows of now. It runs at scrape time, maybe in another
    thread than the consumer's: it only reads values. If it raises, this scrape leaves it out."""

    consumer: str
    read: Callable[[], Lag]


def aiokafka_lag(consumer: AIOKafkaConsumer | None) -> dict[tuple[str, int], int]:
    """highwater - position of each partition assigned to an aiokafka consumer (None: not
    started), for those both are known of (a partition's highwater comes with its first fetch).

    The position is read from the consumer's partition state (aiokafka 0.14, pinned): its public
    `position()` is a coroutine, and this runs where nothing may be awaited.
    """
    if consumer is None:
        return {}
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        try:
            high = consumer.highwater(tp)
            state = consumer._subscription.subscription.assignment.state_value(tp)
        except (AssertionError, AttributeError, KeyError):  # revoked or reassigned meanwhile
            continue
        if high is None or not state.has_valid_position:
            continue
        lags[(tp.topic, tp.partition)] = max(0, high - state.position)
    return lags


class LagCollector(Collector):
    """`deckstream_consumer_lag{consumer, topic, partition}` of every lag source added."""

    def __init__(self, sources: Iterable[LagSource] = ()) -> None:
        self._sources = list(sources)

    def add(self, source: LagSource) -> None:
        self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "deckstream_consumer_lag",
            "Records not yet consumed (highwater - offset), by consumer, topic and partition.",
            labels=["consumer", "topic", "partition"],
        )
        for source in list(self._sources):
            try:
                lags = source.read()
            except Exception as exc:  # a source's bug must not cost every other metric
                log.warning("consumer lag unreadable", consumer=source.consumer, error=repr(exc))
                continue
            for (topic, partition), lag in sorted(lags.items()):
                family.add_metric([source.consumer, topic, str(partition)], lag)
        yield family


class ApiCollector(Collector):
    """The API's read model: documents by status, SSE clients, dead letters by source topic."""

    def __init__(self, views: DocumentViews, dead_letters: Callable[[], Mapping[str, int]]) -> None:
        self.views, self.dead_letters = views, dead_letters

    def collect(self) -> Iterator[Metric]:
        by_status = Counter(view.snapshot.status for view in list(self.views.docs.values()))
        documents = GaugeMetricFamily(
            "deckstream_documents",
            "Documents by the status of their newest generation.",
            labels=["status"],
        )
        for status in sorted({*STATUSES, *by_status}):
            documents.add_metric([status], by_status[status])
        yield documents
        yield GaugeMetricFamily(
            "deckstream_sse_clients", "Open Server-Sent Events streams.", value=self.views.subscribers()
        )
        dead = GaugeMetricFamily(
            "deckstream_dead_letters",
            "Records in pipeline.dlq (no stage could use them), by the topic they came from.",
            labels=["source_topic"],
        )
        for topic, count in self.dead_letters().items():
            dead.add_metric([topic], count)
        yield dead


class WorkerCollector(Collector):
    """The worker's LLM calls: slots held, callers queued for one, and the breaker's state."""

    def __init__(self, scheduler: InflightScheduler, breaker: CircuitBreaker) -> None:
        self.scheduler, self.breaker = scheduler, breaker

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "deckstream_llm_in_flight",
            "LLM slots held: a call running, or about to run once the breaker lets it.",
            value=self.scheduler.in_use,
        )
        yield GaugeMetricFamily(
            "deckstream_llm_in_flight_limit",
            "LLM slots of this worker (DECKSTREAM_LLM_MAX_IN_FLIGHT).",
            value=self.scheduler.total,
        )
        yield GaugeMetricFamily(
            "deckstream_llm_queued",
            "Callers waiting for an LLM slot, both lanes.",
            value=self.scheduler.waiting,
        )
        state = self.breaker.state
        breaker = GaugeMetricFamily(
            "deckstream_llm_breaker_state",
            "The LLM circuit breaker: 1 for its current state, 0 for the others.",
            labels=["state"],
        )
        for name in BREAKER_STATES:
            breaker.add_metric([name], 1 if name == state else 0)
        yield breaker


class ProcessMetrics:
    """One process's registry: its collectors, its consumers' lag and the process metrics.

    One registry per process, not prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR):
    the API and each worker are separate processes with separate ports, scraped one by one.
    """

    def __init__(self, *collectors: Collector, lag_sources: Iterable[LagSource] = ()) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self._lag = LagCollector(lag_sources)
        for collector in (*collectors, self._lag):
            self.registry.register(collector)

    def add_lag_source(self, source: LagSource) -> None:
        self._lag.add(source)

    def exposition(self) -> bytes:
        """The Prometheus text format (prometheus_client.CONTENT_TYPE_LATEST)."""
        return generate_latest(self.registry)


def api_metrics(feed: ProgressFeed, *lag_sources: LagSource) -> ProcessMetrics:
    """The API's: documents, SSE clients, dead letters, and the lag of its progress feed (plus
    any other consumer the API runs, given as `lag_sources`)."""
    feed_lag = LagSource("api-feed", lambda: aiokafka_lag(feed._consumer))
    return ProcessMetrics(ApiCollector(feed.views, feed.dead_letters), lag_sources=(feed_lag, *lag_sources))


def worker_metrics(
    scheduler: InflightScheduler, breaker: CircuitBreaker, *lag_sources: LagSource
) -> ProcessMetrics:
    """A worker's: its LLM calls and breaker, and its consumers' lag."""
    return ProcessMetrics(WorkerCollector(scheduler, breaker), lag_sources=lag_sources)
