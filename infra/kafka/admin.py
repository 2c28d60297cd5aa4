"""Topics on a running broker or cluster: created from their specs (the broker never creates one
on its own), an existing topic's configs brought to its spec's, and the replicas and in-sync
replicas that follow the cluster's size."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not declared so
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

# NewTopic's stub lives in cimpl; confluent_kafka.admin re-exports it without declaring so.
from confluent_kafka.cimpl import NewTopic

from infra.process import (
    wait_until,
)
from services.events.topics import TopicSpec

log = structlog.get_logger(__name__)
# librdkafka's own log lines (connection refused while the broker boots, ...) go to logging,
# not straight to stderr.
_rdkafka_log = logging.getLogger("deckstream.kafka.rdkafka")


def replication_for(nodes: int) -> int:
    """Copies of each topic on a cluster of ``nodes`` brokers: one per node, up to three."""
    return min(nodes, 3)


def min_insync_for(replicas: int) -> int:
    """Copies an acks=all write waits for: a majority, so an acknowledged write outlives any
    one node, and one node down blocks no write (3 copies: 2)."""
    return replicas // 2 + 1


def topic_replication_config(replicas: int) -> dict[str, str]:
    """The per-topic ``min.insync.replicas`` of a topic with ``replicas`` copies, so the topic
    keeps its guarantee on a cluster whose broker default differs. One copy: the default (1)."""
    return {"min.insync.replicas": str(min_insync_for(replicas))} if replicas > 1 else {}


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap}, logger=_rdkafka_log)


def _admin_answers(admin: AdminClient) -> bool:
    try:
        admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    partitions: int,
    replication: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create ``specs`` (idempotent) and wait until every one has ``partitions`` led partitions.

    Each topic has ``replication`` copies and, with more than one, the ``min.insync.replicas``
    that goes with them (``topic_replication_config``). A topic that already exists gets its
    spec's configs (a new retention or cleanup policy reaches a cluster made by an older
    deckstream). One with another partition count is an error: Kafka cannot shrink it, and
    growing it silently would move keys between partitions. One with another replica count is
    an error too: the settings do not match the cluster.
    """
    specs = list(specs)
    admin = _admin(bootstrap)
    configs = {s.name: {**s.config, **topic_replication_config(replication)} for s in specs}
    new = [
        NewTopic(s.name, num_partitions=partitions, replication_factor=replication, config=configs[s.name])
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise RuntimeError(f"creating topic {name!r} on {bootstrap} failed: {error}") from exc

    def all_ready() -> bool:
        try:
            metadata = admin.list_topics(timeout=5.0)
        except KafkaException:
            return False
        for spec in specs:
            topic = metadata.topics.get(spec.name)
            if topic is None or topic.error is not None:
                return False
            if len(topic.partitions) != partitions:
                raise RuntimeError(
                    f"topic {spec.name!r} has {len(topic.partitions)} partitions, expected {partitions}"
                )
            if (copies := len(topic.partitions[0].replicas)) != replication:
                raise RuntimeError(
                    f"topic {spec.name!r} has {copies} replicas, expected {replication}: set the "
                    "replication to the cluster's (DECKSTREAM_KAFKA_REPLICATION)"
                )
            if any(p.leader < 0 or p.error is not None for p in topic.partitions.values()):
                return False
        return True

    wait_until(all_ready, timeout_s, interval=0.2, what=f"topics {[s.name for s in specs]} on {bootstrap}")
    existing = {name: config for name, config in configs.items() if name not in created and config}
    _align_configs(admin, existing, timeout_s)
    log.info(
        "kafka.topics_ready",
        bootstrap=bootstrap,
        created=created,
        partitions=partitions,
        replication=replication,
    )


def _align_configs(admin: AdminClient, configs: dict[str, dict[str, str]], timeout_s: float) -> None:
    """Set these configs on their existing topics (the topics' other configs stay as they are)."""
    if not configs:
        return
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in config.items()
            ],
        )
        for name, config in configs.items()
    ]
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise RuntimeError(
                f"setting the configs of topic {resource.name!r} failed: {exc.args[0]}"
            ) from exc
