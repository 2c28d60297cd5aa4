"""The Faust app of one generation: topics, the resources service and the agents.

Built by a function (not at import time) so settings decide the broker, partitions and the
generation. Reprocessing runs a new generation: a new app id, hence a new consumer group and
new table topics, reading documents.uploaded from the start (never a rewind in place).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Generator
from typing import Any

import faust

from services.events import topics
from services.settings import Settings
from streams import faust_fixes
from streams.agents import split, track, write_cards
from streams.codec import CODEC
from streams.lifecycle import PipelineResources


class App(faust.App):
    """faust.App without three passes of the event loop per message sent.

    Every `Topic.send()` first awaits `app.maybe_start_producer()`, which mode's `@stampede`
    wraps in up to three `asyncio.sleep(0)`: each send then waits for as many full passes of an
    event loop that is busy with 64 LLM calls. Measured on the generation bench: 1-3 ms per
    page sent, and 2.3 s to publish a book's 1,047 pages and chunks (0.2 s of it CPU). Once the
    producer runs, it is returned at once.
    """

    async def maybe_start_producer(self) -> Any:
        producer = self.producer
        if producer.started and not self.in_transaction:
            return producer
        return await super().maybe_start_producer()

    def on_rebalance_end(self) -> None:
        """Also start fetching the stream partitions held back during the rebalance (see
        `faust_fixes._Consumer.resume_partitions`)."""
        super().on_rebalance_end()
        consumer = self.consumer
        if isinstance(consumer, faust_fixes._Consumer):
            consumer.resume_held_back()


STREAM_YIELD_EVERY_S = 0.002


class _Ready:
    """An awaitable that is done at once (no pass of the event loop)."""

    def __await__(self) -> Generator[Any, Any, None]:
        yield from ()


_READY = _Ready()
_clock = time.monotonic
_last_yield = 0.0


def _sleep_now_and_then(delay: float, result: Any = None) -> Awaitable[Any]:
    """asyncio.sleep, except that sleep(0) gives way to others at most every 2 ms."""
    global _last_yield
    if delay == 0:
        now = _clock()
        if now - _last_yield < STREAM_YIELD_EVERY_S:
            return _READY
        _last_yield = now
    return asyncio.sleep(delay, result)


def _streams_yield_less() -> None:
    """Faust's stream iterator awaits sleep(0) before every event, so an agent takes one event
    per pass of the event loop. With 64 LLM calls in flight a pass takes 10-15 ms: the tracker
    got 4 events per batch while 350 pages waited, and a book's chunk count reached its user
    4.0 s after upload instead of 1.8 s. Here an iterator gives way when 2 ms have passed since
    any iterator last did."""
    try:
        from faust._cython import streams as cython_streams
    except ImportError:  # the pure-Python iterator takes asyncio.sleep as a local: left as is
        return
    cython_streams.sleep = _sleep_now_and_then


def bootstrap_of(settings: Settings) -> str:
    if not settings.kafka.bootstrap:
        raise RuntimeError("DECKSTREAM_KAFKA_BOOTSTRAP is not set (`deckstream up` sets it)")
    return settings.kafka.bootstrap


def build_app(settings: Settings) -> tuple[faust.App, PipelineResources]:
    """The app and the service its agents use; run both: faust.Worker(app, resources)."""
    bootstrap = bootstrap_of(settings)
    partitions = settings.kafka.partitions
    _streams_yield_less()
    app = App(
        f"deckstream-g{settings.generation}",
        broker=[f"{faust_fixes.SCHEME}://{b}" for b in bootstrap.split(",")],
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.kafka.replication,
        table_standby_replicas=0,
        stream_buffer_maxsize=32,  # agents without a size of their own below (uploads, interactive)
        # Faust's consumer runs in its own thread, and each poll is a round trip to it: two or
        # more passes of a loop busy with LLM calls (25-70 ms on the generation bench). At 50
        # records a poll, a book's pages, chunks and cards reached the agents at ~700 a second,
        # and its cards reached the tracker 0.7-0.9 s late (median); at 200, 0.2-0.3 s. Bigger
        # polls made the small document of the fairness bench wait behind them.
        broker_max_poll_records=200,
        # Commits by time only: a count-based commit runs inside Faust's fetch loop and first
        # flushes the producer, so every 50 acks stopped all delivery for a broker round trip.
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_wait_empty=True,
        broker_session_timeout=settings.kafka.session_timeout_s,  # a dead worker's partitions move on soon
        broker_heartbeat_interval=min(3.0, settings.kafka.session_timeout_s / 3),
        stream_processing_timeout=600,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Faust's 16 KB batch holds ~5 pages or chunks of one partition, and a full batch waits
        # for the broker's ack: a book was published one round trip per ~5 events.
        producer_max_batch_size=512 * 1024,  # the broker takes up to 1 MB
        web_enabled=False,
        key_serializer="raw",
        value_serializer=CODEC,
    )

    def topic(*specs: topics.TopicSpec, maxsize: int | None = None) -> faust.TopicT:
        made = app.topic(
            *(s.name for s in specs),
            partitions=partitions,
            key_serializer="raw",
            value_serializer=CODEC,
            internal=False,
        )
        # App.topic() takes maxsize but never passes it on (faust-streaming 0.15): set it on
        # the topic, before its queue exists; the agents' channels are clones and copy it.
        made.maxsize = maxsize
        return made

    res = PipelineResources(settings, bootstrap)
    # One consumer feeds every agent: when a channel is full the whole consumer waits. The bulk
    # lane gets a deep buffer so a book's backlog never holds back the interactive lane's chunks.
    chunks = topic(topics.CHUNKS, maxsize=settings.kafka.bulk_buffer)
    interactive = topic(topics.CHUNKS_INTERACTIVE)
    cards = topic(topics.CARDS)
    uploads = topic(topics.UPLOADED)
    split.register(app, res, uploads, topic(topics.PAGES), chunks, interactive, cards)
    write_cards.register(app, res, chunks, interactive, topic(topics.CHUNKS_RETRY), cards, topic(topics.DLQ))
    track.register(
        app,
        res,
        topic(
            topics.UPLOADED, topics.PAGES, topics.CARDS, topics.CONTROL, maxsize=settings.kafka.bulk_buffer
        ),
        topic(topics.PROGRESS),
        topic(topics.DECKS),
        interactive,
        uploads,
        partitions,
    )
    return app, res
