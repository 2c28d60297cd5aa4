"""The Faust app of one generation: topics, the resources service and the agents.

Built by a function (not at import time) so settings decide the broker, partitions and the
generation. Reprocessing runs a new generation: a new app id, hence a new consumer group and
new table topics, reading documents.uploaded from the start (never a rewind in place).
"""

from __future__ import annotations

import faust

from services.events import topics
from services.settings import Settings
from streams import faust_fixes
from streams.agents import split, track, write_cards
from streams.codec import CODEC
from streams.lifecycle import PipelineResources


def bootstrap_of(settings: Settings) -> str:
    if not settings.kafka.bootstrap:
        raise RuntimeError("DECKSTREAM_KAFKA_BOOTSTRAP is not set (`deckstream up` sets it)")
    return settings.kafka.bootstrap


def build_app(settings: Settings) -> tuple[faust.App, PipelineResources]:
    """The app and the service its agents use; run both: faust.Worker(app, resources)."""
    bootstrap = bootstrap_of(settings)
    partitions = settings.kafka.partitions
    faust_fixes.streams_yield_less()
    app = faust_fixes.App(
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
