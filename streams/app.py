"""The Faust app: topics, the lifecycle service and the agents, wired from the bootstrap.

Built by a function (not at import time) so settings decide the broker and partitions. The app
id (`deckstream-g1`: DECKSTREAM_GENERATION, the generation of new uploads) names the consumer
groups and table topics. Reprocessing does not change it: it republishes uploads as the next
generation, and these same groups read them (never a rewind in place; docs/architecture.md)."""

from __future__ import annotations

import faust

from services.bootstrap import build_worker
from services.events import topics
from services.settings import Settings
from streams import faust_fixes
from streams.agents import split, track, write_cards
from streams.codec import CODEC
from streams.dead_letters import RejectingTopic
from streams.lifecycle import WorkerLifecycle
from streams.outbox import Outbox


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The Faust app and its settings; those that differ from Faust's say why.

    Decision: docs/decisions/0012-worker-poll-commit-and-batch-settings.md
    """
    partitions = settings.kafka.partitions
    return faust_fixes.App(
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
        Topic=RejectingTopic,  # undecodable records become dead letters (streams/dead_letters.py)
        key_serializer="raw",
        value_serializer=CODEC,
    )


def build_app(settings: Settings) -> tuple[faust.App, WorkerLifecycle]:
    """The app and the service that opens what its agents use; run both: faust.Worker(app, life)."""
    parts = build_worker(settings)
    partitions = settings.kafka.partitions
    faust_fixes.streams_yield_less()
    app = faust_app(settings, parts.bootstrap)

    def topic(*specs: topics.TopicSpec, maxsize: int | None = None) -> faust.TopicT:
        made = app.topic(
            *(s.name for s in specs),
            partitions=partitions,
            key_serializer="raw",
            value_serializer=CODEC,
            internal=False,
        )
        # App.topic() takes maxsize but never passes it on (faust-streaming 0.15): set it on
        # the topic, before its queue exists (docs/decisions/0010-topic-buffer-sizes-set-on-the-topic.md).
        made.maxsize = maxsize
        return made

    life = WorkerLifecycle(parts, app=app)  # the app: its consumer's lag on the worker's /metrics
    # One consumer feeds every agent: when a channel is full the whole consumer waits. The bulk
    # lane gets a deep buffer so a book's backlog never holds back the interactive lane's chunks.
    uploads = topic(topics.UPLOADED)
    chunks = topic(topics.CHUNKS, maxsize=settings.kafka.bulk_buffer)
    interactive = topic(topics.CHUNKS_INTERACTIVE)
    retry = topic(topics.CHUNKS_RETRY)
    sinks = [uploads, chunks, interactive, retry]
    sinks += [
        topic(spec)
        for spec in (topics.PAGES, topics.CARDS, topics.LLM_CALLS, topics.DLQ, topics.PROGRESS, topics.DECKS)
    ]
    outbox = Outbox({t.get_topic_name(): t for t in sinks})
    split.register(app, life, parts.split, outbox, uploads)
    write_cards.register(
        app,
        life,
        parts.write_cards,
        outbox,
        bulk=chunks,
        interactive=interactive,
        retry=retry,
        concurrency=settings.llm.max_in_flight,
        retry_delay_s=settings.llm.retry_delay_s,
    )
    facts = topic(
        topics.UPLOADED, topics.PAGES, topics.CARDS, topics.CONTROL, maxsize=settings.kafka.bulk_buffer
    )
    track.register(app, life, parts.tracker, outbox, facts, partitions)
    return app, life
