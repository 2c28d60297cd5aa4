"""docker-compose.kafka.yml describes a working 3-node KRaft cluster, and its header works.

Docker is not available here, so the file is checked for the mistakes that would stop the
cluster from forming or clients from connecting: mismatched quorum voters, duplicate node
ids or ports, advertised addresses that do not match the published ports, replication
settings the cluster cannot satisfy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"
BOOTSTRAP = "localhost:19092,localhost:29092,localhost:39092"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return dict(doc["services"])


def env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """'NAME://host:port,...' -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_three_kafka_4_nodes_with_both_roles(services: dict[str, dict[str, Any]]) -> None:
    assert len(services) == 3
    for service in services.values():
        assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", service["image"])
        assert set(env(service)["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}


def test_node_ids_are_distinct_and_match_the_quorum(services: dict[str, dict[str, Any]]) -> None:
    envs = [env(s) for s in services.values()]
    node_ids = {int(e["KAFKA_NODE_ID"]) for e in envs}
    assert len(node_ids) == 3

    voters_strings = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs}
    assert len(voters_strings) == 1, "every node must see the same quorum"
    voters = {}
    for voter in voters_strings.pop().split(","):
        node_id, _, address = voter.partition("@")
        host, _, port = address.partition(":")
        voters[int(node_id)] = (host, int(port))
    assert set(voters) == node_ids

    for service in services.values():
        e = env(service)
        host, port = voters[int(e["KAFKA_NODE_ID"])]
        assert host == service["hostname"], "a voter must name the node that has that id"
        assert listeners(e["KAFKA_LISTENERS"])[e["KAFKA_CONTROLLER_LISTENER_NAMES"]][1] == port


def test_one_cluster_id_in_kafka_uuid_form(services: dict[str, dict[str, Any]]) -> None:
    ids = {env(s)["CLUSTER_ID"] for s in services.values()}
    assert len(ids) == 1
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", ids.pop())


def test_each_node_is_reachable_from_the_host_at_its_own_port(services: dict[str, dict[str, Any]]) -> None:
    host_ports = []
    for service in services.values():
        e = env(service)
        (mapping,) = service["ports"]
        host_port, container_port = (int(p) for p in str(mapping).split(":"))
        host_ports.append(host_port)
        advertised = listeners(e["KAFKA_ADVERTISED_LISTENERS"])
        external = [name for name, (host, _) in advertised.items() if host == "localhost"]
        assert len(external) == 1
        # Clients are told localhost:<published port>; the published port leads to that listener.
        assert advertised[external[0]] == ("localhost", host_port)
        assert listeners(e["KAFKA_LISTENERS"])[external[0]][1] == container_port
        # Brokers replicate over the internal listener, addressed by the node's hostname.
        assert advertised[e["KAFKA_INTER_BROKER_LISTENER_NAME"]][0] == service["hostname"]
    assert sorted(host_ports) == [19092, 29092, 39092]


def test_replication_is_three_with_two_in_sync(services: dict[str, dict[str, Any]]) -> None:
    for service in services.values():
        e = env(service)
        for key in (
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ):
            assert e[key] == "3", key
        assert e["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_header_tells_how_to_point_deckstream_at_the_cluster(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    header = COMPOSE.read_text().split("\n\n", 1)[0]
    assert f"DECKSTREAM_KAFKA_BOOTSTRAP={BOOTSTRAP}" in header
    assert "DECKSTREAM_KAFKA_REPLICATION=3" in header

    advertised = {
        f"localhost:{port}"
        for s in services.values()
        for host, port in listeners(env(s)["KAFKA_ADVERTISED_LISTENERS"]).values()
        if host == "localhost"
    }
    assert set(BOOTSTRAP.split(",")) == advertised

    # The documented variables are the ones the settings tree actually reads.
    monkeypatch.setenv("DECKSTREAM_KAFKA_BOOTSTRAP", BOOTSTRAP)
    monkeypatch.setenv("DECKSTREAM_KAFKA_REPLICATION", "3")
    settings = Settings()
    assert settings.kafka.bootstrap == BOOTSTRAP
    assert settings.kafka.replication == 3
