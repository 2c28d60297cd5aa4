"""A single-node Apache Kafka 4.x broker (KRaft) run from Maven Central jars as a Java process."""

from infra.kafka.launcher import (
    Broker,
    broker_status,
    clear_state,
    ensure_topics,
    is_broker_process,
    kafka_dir,
    prune_stale_runs,
    read_state,
    resolve_jars,
    start_broker,
    state_path,
    stop_broker,
    write_state,
)

__all__ = [
    "Broker",
    "broker_status",
    "clear_state",
    "ensure_topics",
    "is_broker_process",
    "kafka_dir",
    "prune_stale_runs",
    "read_state",
    "resolve_jars",
    "start_broker",
    "state_path",
    "stop_broker",
    "write_state",
]
