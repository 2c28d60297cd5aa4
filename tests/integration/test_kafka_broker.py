"""The local broker: started from the Maven jars, topics created, records flow, it stops clean."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from infra.kafka.launcher import (
    Broker,
    broker_status,
    ensure_topics,
    start_broker,
    state_path,
    stop_broker,
    write_state,
)
from services import topics
from services.process import pid_alive, port_open
from services.settings import get_settings

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
    assert not own.data_dir.exists()
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
