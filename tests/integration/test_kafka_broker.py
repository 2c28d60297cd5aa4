"""The local broker: started from the Maven jars, topics created, records flow, it stops clean."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from infra.kafka.admin import ensure_topics
from infra.kafka.cluster import broker_status
from infra.kafka.launcher import (
    CLUSTER_FILE,
    Broker,
    data_dir,
    kafka_dir,
    reset_data,
    start_broker,
    state_path,
    stop_broker,
    write_state,
)
from infra.process import pid_alive, port_open
from services.events import topics
from services.events.topics import TopicSpec
from services.settings import get_settings
from streams.faust_fixes import _ConsumerThread

pytestmark = pytest.mark.kafka

PARTITIONS = get_settings().kafka.partitions


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = start_broker(tmp_path_factory.mktemp("home"))
    try:
        ensure_topics(started.bootstrap, topics.ALL, partitions=PARTITIONS)
        yield started
    finally:
        stop_broker(started)


def describe(bootstrap: str, resource: ConfigResource) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_configs([resource]).values()
    return {name: entry.value for name, entry in future.result(timeout=10).items()}


def test_every_pipeline_topic_exists_with_the_configured_partitions(broker: Broker) -> None:
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    for spec in topics.ALL:
        assert spec.name in metadata.topics, spec.name
        assert len(metadata.topics[spec.name].partitions) == PARTITIONS, spec.name


def test_topic_configs_come_from_the_topic_specs(broker: Broker) -> None:
    uploaded = describe(broker.bootstrap, ConfigResource(ResourceType.TOPIC, topics.UPLOADED.name))
    assert uploaded["retention.ms"] == "-1"
    assert uploaded["retention.bytes"] == "-1"
    decks = describe(broker.bootstrap, ConfigResource(ResourceType.TOPIC, topics.DECKS.name))
    assert decks["cleanup.policy"] == "compact"


def test_broker_never_creates_topics_on_its_own(broker: Broker) -> None:
    config = describe(broker.bootstrap, ConfigResource(ResourceType.BROKER, "1"))
    assert config["auto.create.topics.enable"] == "false"


def test_ensure_topics_is_idempotent_and_refuses_a_different_partition_count(broker: Broker) -> None:
    ensure_topics(broker.bootstrap, topics.ALL, partitions=PARTITIONS, timeout_s=10)
    with pytest.raises(RuntimeError, match=rf"{topics.UPLOADED.name}.*{PARTITIONS} partitions"):
        ensure_topics(broker.bootstrap, [topics.UPLOADED], partitions=PARTITIONS + 1, timeout_s=10)


async def test_a_record_makes_the_round_trip(broker: Broker) -> None:
    key, value = b"doc-" + uuid.uuid4().hex.encode(), b'{"uri": "blob://x"}'
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topics.UPLOADED.name, value=value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(sent.topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        batches = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
    finally:
        await consumer.stop()
    (record,) = batches[tp]
    assert (record.key, record.value, record.offset) == (key, value, sent.offset)


async def _three_records_in_each(bootstrap: str, tps: list[TopicPartition]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for tp in tps:
            for i in range(3):
                await producer.send_and_wait(tp.topic, value=b"%d" % i, key=b"k", partition=tp.partition)
    finally:
        await producer.stop()


async def _read_all(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
    """Read the partitions to their end (offset 3)."""
    for _ in range(20):
        if [await consumer.position(tp) for tp in tps] == [3] * len(tps):
            return
        await consumer.getmany(*tps, timeout_ms=1000)
    raise AssertionError(f"not read to the end: {[await consumer.position(tp) for tp in tps]}")


async def test_the_worker_fetches_nothing_when_no_partition_is_active(broker: Broker) -> None:
    """aiokafka reads an empty partition set as "every partition"; the worker's consumer thread
    must not, or records of paused partitions are consumed and then dropped by Faust."""
    topic = topics.CHUNKS_RETRY.name
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    await _three_records_in_each(broker.bootstrap, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        thread: Any = _ConsumerThread.__new__(_ConsumerThread)  # only what a fetch reads
        thread.consumer = SimpleNamespace(flow_active=True)
        active: set[Any] = set()
        assert await _ConsumerThread._fetch_records(thread, consumer, active, timeout=2.0) == {}
        active.add(tps[1])
        only = await _ConsumerThread._fetch_records(thread, consumer, active, timeout=10.0)
        assert set(only) == {tps[1]} and [r.offset for r in only[tps[1]]] == [0, 1, 2]
        assert await consumer.position(tps[0]) == 0  # nothing of the inactive partition was taken
    finally:
        await consumer.stop()


async def test_a_seek_to_committed_offsets_rewinds_partitions_never_committed(broker: Broker) -> None:
    """After a rebalance Faust re-reads from the committed offsets. aiokafka seeks only the
    partitions with a committed offset above 0; the worker also rewinds the others to their start."""
    topic = topics.DLQ.name
    tps = [TopicPartition(topic, p) for p in range(3)]
    await _three_records_in_each(broker.bootstrap, tps)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=f"seek-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({tps[1]: 0, tps[2]: 2})  # tps[0] has no committed offset at all
        await _read_all(consumer, tps)

        assert await consumer.seek_to_committed() == {tps[0]: None, tps[1]: 0, tps[2]: 2}
        aiokafka_alone = [await consumer.position(tp) for tp in tps]
        assert aiokafka_alone == [3, 3, 2]  # what was read of tps[0] and tps[1] would never come again

        await _read_all(consumer, tps[:2])
        thread: Any = _ConsumerThread.__new__(_ConsumerThread)
        thread._ensure_consumer = lambda: consumer
        thread.consumer = SimpleNamespace(_is_changelog_tp=lambda tp: False)
        committed = await _ConsumerThread._seek_to_committed(thread)
        assert committed == {tps[0]: None, tps[1]: 0, tps[2]: 2}
        assert [await consumer.position(tp) for tp in tps] == [0, 0, 2]
    finally:
        await consumer.stop()


def test_stop_ends_the_process_closes_the_port_and_clears_the_state(tmp_path: Path) -> None:
    home = tmp_path / "home"
    own = start_broker(home, timeout_s=90)
    try:
        write_state(home, own)
        status = broker_status(home)
        assert status is not None
        assert (status["pid"], status["bootstrap"]) == (own.pid, own.bootstrap)
    finally:
        stop_broker(own)
    assert not pid_alive(own.pid)
    assert not port_open(own.host, own.port)
    assert not own.run_dir.exists()
    assert (data_dir(home) / "meta.properties").exists()  # the log outlives the process
    assert not state_path(home).exists()
    assert broker_status(home) is None


def test_a_broker_that_cannot_start_fails_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"(?s)did not start.*Address already in use"):
            start_broker(home, port=port, timeout_s=60)
    assert list((home / "kafka").glob("run-*")) == []


async def test_a_restarted_broker_keeps_its_records_its_cluster_and_its_consumer_offsets(
    tmp_path: Path,
) -> None:
    home, kept = tmp_path / "home", TopicSpec("kept", "records that must outlive the broker")
    first = start_broker(home, timeout_s=90)
    try:
        ensure_topics(first.bootstrap, [kept], partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(kept.name, f"record {i}".encode())
        finally:
            await producer.stop()
        reader = AIOKafkaConsumer(
            kept.name, bootstrap_servers=first.bootstrap, group_id="reader", auto_offset_reset="earliest"
        )
        await reader.start()
        try:
            got = await reader.getmany(timeout_ms=10_000, max_records=2)
            assert sum(len(v) for v in got.values()) == 2
            await reader.commit()
        finally:
            await reader.stop()
        with pytest.raises(RuntimeError, match="stop it first"):
            reset_data(home)  # never under a running broker
    finally:
        stop_broker(first)
    cluster = json.loads((kafka_dir(home) / CLUSTER_FILE).read_text())["cluster_id"]

    second = start_broker(home, timeout_s=90)
    try:
        ensure_topics(second.bootstrap, [kept], partitions=1)  # there already: nothing created
        everything = AIOKafkaConsumer(
            kept.name, bootstrap_servers=second.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await everything.start()
        try:
            records: list[bytes] = []
            while len(records) < 5:
                batch = await everything.getmany(timeout_ms=10_000)
                assert batch, f"only {len(records)} of 5 records came back"
                records += [r.value for rs in batch.values() for r in rs]
        finally:
            await everything.stop()
        assert records == [f"record {i}".encode() for i in range(5)]
        reader = AIOKafkaConsumer(kept.name, bootstrap_servers=second.bootstrap, group_id="reader")
        await reader.start()
        try:
            assert await reader.committed(TopicPartition(kept.name, 0)) == 2  # the group goes on
        finally:
            await reader.stop()
    finally:
        stop_broker(second)
    assert "cluster.id=" + cluster in (data_dir(home) / "meta.properties").read_text()


def test_an_existing_topic_takes_its_specs_configs(broker: Broker) -> None:
    older = TopicSpec(
        f"older-{uuid.uuid4().hex[:8]}", "made by an older deckstream", {"retention.ms": "1000"}
    )
    ensure_topics(broker.bootstrap, [older], partitions=1)
    now = TopicSpec(
        older.name, "its role now: the latest state", {"cleanup.policy": "compact", "segment.ms": "3600000"}
    )
    ensure_topics(broker.bootstrap, [now], partitions=1)
    found = describe(broker.bootstrap, ConfigResource(ResourceType.TOPIC, now.name))
    assert (found["cleanup.policy"], found["segment.ms"]) == ("compact", "3600000")
    progress = describe(broker.bootstrap, ConfigResource(ResourceType.TOPIC, topics.PROGRESS.name))
    assert progress["cleanup.policy"] == "compact"
