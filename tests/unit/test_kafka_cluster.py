"""The local cluster's pure parts: how many copies a cluster size gives each topic, each node's
properties, its ports, the node count a home records, and the state `deckstream kafka
status|down` read. No JVM here; three real nodes are in tests/integration/test_three_brokers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.kafka.admin import min_insync_for, replication_for, topic_replication_config
from infra.kafka.cluster import (
    Cluster,
    NodePorts,
    _node_ports,
    broker_status,
    node_properties,
    read_cluster_state,
    start_cluster,
)
from infra.kafka.launcher import (
    CLUSTER_FILE,
    LAYOUT,
    Broker,
    cluster_id,
    data_dir,
    kafka_dir,
    node_data_dir,
    read_state,
    start_broker,
    write_state,
)
from services.errors import BrokerHomeMismatch

VOTERS = [NodePorts(1, 19092, 19093), NodePorts(2, 29092, 29093), NodePorts(3, 39092, 39093)]


def parsed(text: str) -> dict[str, str]:
    """A properties file as Kafka reads it: comments skipped, the last value of a key wins."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize(("nodes", "replicas", "in_sync"), [(1, 1, 1), (2, 2, 2), (3, 3, 2), (5, 3, 2)])
def test_a_cluster_keeps_a_copy_per_node_up_to_three_and_writes_wait_for_a_majority(
    nodes: int, replicas: int, in_sync: int
) -> None:
    assert replication_for(nodes) == replicas
    assert min_insync_for(replication_for(nodes)) == in_sync


def test_topics_carry_their_in_sync_minimum_only_when_they_have_copies() -> None:
    assert topic_replication_config(1) == {}  # one node: the broker's default, as before clusters
    assert topic_replication_config(3) == {"min.insync.replicas": "2"}
    assert topic_replication_config(5) == {"min.insync.replicas": "3"}


def test_each_node_is_broker_and_controller_of_one_static_quorum(tmp_path: Path) -> None:
    nodes = [parsed(node_properties(node, VOTERS, tmp_path / f"node-{node.node_id}")) for node in VOTERS]
    assert {n["controller.quorum.voters"] for n in nodes} == {
        "1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
    }
    for node, props in zip(VOTERS, nodes, strict=True):
        assert props["node.id"] == str(node.node_id)
        assert props["process.roles"] == "broker,controller"
        assert (
            props["listeners"]
            == f"PLAINTEXT://127.0.0.1:{node.client},CONTROLLER://127.0.0.1:{node.controller}"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{node.client}"
        assert props["log.dirs"] == str(tmp_path / f"node-{node.node_id}")


def test_every_topic_a_node_makes_has_three_copies_two_in_sync_and_none_is_made_by_a_typo(
    tmp_path: Path,
) -> None:
    props = parsed(node_properties(VOTERS[0], VOTERS, tmp_path))
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key
    assert props["auto.create.topics.enable"] == "false"


def test_a_killed_node_is_fenced_within_seconds_not_kafkas_nine(tmp_path: Path) -> None:
    props = parsed(node_properties(VOTERS[0], VOTERS, tmp_path))
    session, heartbeat = int(props["broker.session.timeout.ms"]), int(props["broker.heartbeat.interval.ms"])
    assert session <= 3000 and heartbeat * 4 <= session  # several heartbeats per session: no false fencing


def test_node_ports_are_distinct_and_clients_follow_a_given_first_port() -> None:
    free = _node_ports(3, None)
    assert [n.node_id for n in free] == [1, 2, 3]
    assert len({p for n in free for p in (n.client, n.controller)}) == 6
    fixed = _node_ports(3, 41000)
    assert [n.client for n in fixed] == [41000, 41001, 41002]
    assert not {n.controller for n in fixed} & {41000, 41001, 41002}


def test_one_node_keeps_its_data_where_single_node_homes_always_had_it(tmp_path: Path) -> None:
    assert node_data_dir(tmp_path, 1, 1) == data_dir(tmp_path)
    assert node_data_dir(tmp_path, 2, 3) == data_dir(tmp_path) / "node-2"


def record(home: Path, **fields: object) -> None:
    kafka_dir(home).mkdir(parents=True, exist_ok=True)
    (kafka_dir(home) / CLUSTER_FILE).write_text(
        json.dumps({"layout": LAYOUT, "cluster_id": "mine", **fields})
    )


def test_a_new_home_records_its_node_count(tmp_path: Path) -> None:
    cluster_id(tmp_path, nodes=3)
    assert json.loads((kafka_dir(tmp_path) / CLUSTER_FILE).read_text())["nodes"] == 3


def test_a_single_node_home_from_before_clusters_is_refused_as_three_and_kept(tmp_path: Path) -> None:
    record(tmp_path)  # no node count: written before clusters
    data_dir(tmp_path).mkdir()
    (data_dir(tmp_path) / "meta.properties").write_text("cluster.id=mine\nnode.id=1\nversion=1\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(
        BrokerHomeMismatch, match=r"a 1-node Kafka cluster; it cannot start as 3 nodes"
    ) as refused:
        start_cluster(tmp_path, brokers=3, timeout_s=5)  # refused before Maven or Java are asked anything
    assert "--brokers 1" in refused.value.reason and "Nothing was changed" in refused.value.reason
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert cluster_id(tmp_path) == "mine"  # and it still starts as the single node it is


def test_a_three_node_home_is_refused_as_one(tmp_path: Path) -> None:
    record(tmp_path, nodes=3)
    with pytest.raises(
        BrokerHomeMismatch, match=r"a 3-node Kafka cluster; it cannot start as 1 node\."
    ) as refused:
        start_broker(tmp_path, timeout_s=5)
    assert "deckstream kafka up --brokers 3" in refused.value.reason
    assert not data_dir(tmp_path).exists()


def test_a_node_of_another_cluster_is_refused(tmp_path: Path) -> None:
    record(tmp_path, nodes=3)
    node = node_data_dir(tmp_path, 2, 3)
    node.mkdir(parents=True)
    (node / "meta.properties").write_text("cluster.id=someone-else\nnode.id=2\nversion=1\n")
    with pytest.raises(BrokerHomeMismatch, match=r"node-2 belongs to cluster someone-else"):
        cluster_id(tmp_path, nodes=3)


def test_start_cluster_is_for_two_nodes_or_more(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_broker runs one"):
        start_cluster(tmp_path, brokers=1)


def test_a_recorded_cluster_reads_back_and_is_not_running_when_its_nodes_are_gone(tmp_path: Path) -> None:
    gone = 2**22 + 1  # above the default pid_max: no such process
    nodes = [
        Broker(
            f"127.0.0.1:{p.client}",
            gone,
            tmp_path / f"run-{p.node_id}" / "broker.log",
            tmp_path / f"run-{p.node_id}",
        )
        for p in VOTERS
    ]
    cluster = Cluster(tmp_path, "384m", VOTERS, nodes)
    write_state(tmp_path, cluster)
    found = read_cluster_state(tmp_path)
    assert found is not None
    assert (found.bootstrap, found.ports, found.heap) == (cluster.bootstrap, VOTERS, "384m")
    assert found.bootstrap == "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
    assert read_state(tmp_path) is None  # not mistaken for a single broker
    assert broker_status(tmp_path) is None
