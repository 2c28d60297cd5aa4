"""A local Kafka cluster of several KRaft nodes on loopback (``deckstream kafka up --brokers 3``).

Every node is broker and controller of one static quorum; each keeps its data in
``home/kafka/data/node-<id>/``, formatted once for the home's cluster id, and ``cluster.json``
records the node count so a home is never started with another. Topics get one copy per node
(up to three) and a majority in sync (``infra.kafka.admin``). ``broker_status`` says what the
home's state file records as running: a broker, or a cluster while a majority of it answers.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import KafkaException

from infra.kafka.admin import _admin, min_insync_for, replication_for
from infra.kafka.jars import resolve_jars
from infra.kafka.launcher import (
    LOOPBACK,
    Broker,
    _broker_from_state,
    _format_storage,
    _formatted,
    _jvm,
    _launch,
    _render_properties,
    _since,
    _started_or_abandoned,
    _wait_ready,
    clear_state,
    cluster_id,
    is_broker_process,
    kafka_dir,
    node_data_dir,
    read_state,
    state_path,
    stop_broker,
)
from infra.process import (
    free_port,
    pid_alive,
    port_open,
    wait_until,
)

log = structlog.get_logger(__name__)

# A killed node stays in every partition's ISR until the controller fences it, when its
# session expires, and an acks=all write waits for the whole ISR: with Kafka's 9 s session
# every partition stalled 9-12 s after a kill, with 3 s (heartbeats every 0.5 s) 3-5 s
# (docs/reliability.md). Loopback loses no heartbeat, so the short session fences no live node.
SESSION_SETTINGS = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


@dataclass(frozen=True)
class NodePorts:
    """A cluster node's id and its loopback ports: clients on ``client``, the quorum on
    ``controller``."""

    node_id: int
    client: int
    controller: int


def cluster_settings(node: NodePorts, voters: list[NodePorts]) -> dict[str, str]:
    """What a node of a cluster of ``voters`` sets instead of the single-node template's values."""
    copies = replication_for(len(voters))
    replicas, in_sync = str(copies), str(min_insync_for(copies))
    return {
        "node.id": str(node.node_id),
        # A static quorum: every node votes, and format needs no --initial-controllers.
        "controller.quorum.voters": ",".join(f"{v.node_id}@{LOOPBACK}:{v.controller}" for v in voters),
        "default.replication.factor": replicas,
        "min.insync.replicas": in_sync,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": in_sync,
        **SESSION_SETTINGS,
    }


def node_properties(node: NodePorts, voters: list[NodePorts], log_dirs: Path) -> str:
    """A cluster node's ``server.properties``: the single-node template, then the cluster's
    values (in a properties file the last value of a key wins)."""
    settings = "\n".join(f"{key}={value}" for key, value in cluster_settings(node, voters).items())
    head = f"\n# Node {node.node_id} of {len(voters)}: these replace the single-node values above.\n"
    return _render_properties(node.client, node.controller, log_dirs) + head + settings + "\n"


def _node_ports(nodes: int, first_port: int | None) -> list[NodePorts]:
    """Distinct loopback ports: clients on ``first_port`` and the ports after it (default: free
    ones), each node's quorum listener on a free one."""
    clients = list(range(first_port, first_port + nodes)) if first_port is not None else []
    taken = set(clients)

    def fresh() -> int:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        return port

    clients = clients or [fresh() for _ in range(nodes)]
    return [NodePorts(n, client, fresh()) for n, client in enumerate(clients, 1)]


@dataclass
class Cluster:
    """A running local cluster: its nodes (each broker and controller) in node-id order.

    The ports stay for the cluster's life, so a restarted node rejoins where its peers expect it.
    """

    home: Path
    heap: str
    ports: list[NodePorts]
    nodes: list[Broker] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    def log_dir(self, node_id: int) -> Path:
        return node_data_dir(self.home, node_id, len(self.ports))

    def restart(
        self, node_id: int, *, timeout_s: float = 120.0, die_with_parent_process: bool = True
    ) -> Broker:
        """Start node ``node_id`` again (after a kill or a stop) on its data and its ports; returns
        once it serves. A node killed less than a broker session ago first waits for that session
        to expire (its peers refuse a second registration until then)."""
        stop_broker(self.node(node_id))  # reaps a killed node, removes its run directory
        node = self.ports[node_id - 1]
        jvm = _jvm(resolve_jars(kafka_dir(self.home) / "lib"), self.heap)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=kafka_dir(self.home)))
        launched: list[Broker] = []
        with _started_or_abandoned(f"Kafka node {node_id}", [run_dir], launched):
            props = _write_node_properties(run_dir, node, self.ports, self.log_dir(node_id))
            launched.append(broker := _launch(jvm, props, node.client, die_with_parent_process))
            assert broker.process is not None
            _wait_ready(broker, broker.process, time.monotonic() + timeout_s)
        self.nodes[node_id - 1] = broker
        log.info("kafka.node_restarted", node_id=node_id, bootstrap=broker.bootstrap, pid=broker.pid)
        return broker

    def to_state(self) -> dict[str, Any]:
        nodes = zip(self.ports, self.nodes, strict=True)
        return {
            "bootstrap": self.bootstrap,
            "heap": self.heap,
            "nodes": [
                {"node_id": p.node_id, "controller_port": p.controller, **n.to_state()} for p, n in nodes
            ],
        }


def _write_node_properties(run_dir: Path, node: NodePorts, voters: list[NodePorts], log_dirs: Path) -> Path:
    props = run_dir / "server.properties"
    props.write_text(node_properties(node, voters, log_dirs))
    return props


def _format_nodes(jvm: list[str], todo: list[Path], cluster: str, timeout_s: float) -> None:
    """Format the log directories of the nodes whose properties are ``todo``, side by side (each
    is a JVM start)."""
    with ThreadPoolExecutor(max(len(todo), 1)) as pool:
        list(pool.map(lambda props: _format_storage(jvm, props, cluster, timeout_s), todo))


def _wait_registered(cluster: Cluster, deadline: float) -> None:
    """Every node's broker in the metadata: topics with a copy on each can be created."""
    admin = _admin(cluster.bootstrap)

    def registered() -> bool:
        try:
            return len(admin.list_topics(timeout=2.0).brokers) == len(cluster.nodes)
        except KafkaException:
            return False

    wait_until(
        registered,
        max(deadline - time.monotonic(), 0.5),
        interval=0.2,
        what=f"{len(cluster.nodes)} brokers in the metadata of {cluster.bootstrap}",
    )


def start_cluster(
    home: Path,
    *,
    brokers: int = 3,
    heap: str = "512m",
    timeout_s: float = 120.0,
    port: int | None = None,
    die_with_parent_process: bool = True,
) -> Cluster:
    """Start ``brokers`` nodes on loopback, each broker and controller of one static quorum, on
    the data kept in ``home/kafka/data/node-<id>/`` (formatted on first use).

    Every node is launched before any is waited for (electing a leader takes a majority).
    Returns once each node serves and every broker is registered. Ports are new at each start
    (``port`` fixes the first client port, the next nodes take the ports after it): a static
    quorum's voters are configuration, not kept data, so the same data starts on new ports.
    Raises BrokerHomeMismatch, before starting anything, for data it must not use, such as a
    single node's. Otherwise as ``start_broker``.
    """
    if brokers < 2:
        raise ValueError(f"a cluster has 2 nodes or more, not {brokers}: start_broker runs one")
    started = time.monotonic()
    deadline = started + timeout_s
    kafka_dir(home).mkdir(parents=True, exist_ok=True)
    cluster_uuid = cluster_id(home, nodes=brokers)
    jvm = _jvm(resolve_jars(kafka_dir(home) / "lib"), heap)
    cluster = Cluster(home, heap, _node_ports(brokers, port))
    run_dirs: list[Path] = []
    with _started_or_abandoned("the Kafka cluster", run_dirs, cluster.nodes):
        props: list[Path] = []
        for node in cluster.ports:
            run_dirs.append(Path(tempfile.mkdtemp(prefix="run-", dir=kafka_dir(home))))
            props.append(
                _write_node_properties(run_dirs[-1], node, cluster.ports, cluster.log_dir(node.node_id))
            )
        todo = [
            p for p, n in zip(props, cluster.ports, strict=True) if not _formatted(cluster.log_dir(n.node_id))
        ]
        _format_nodes(jvm, todo, cluster_uuid, timeout_s)
        for node, node_props in zip(cluster.ports, props, strict=True):
            cluster.nodes.append(_launch(jvm, node_props, node.client, die_with_parent_process))
        for broker in cluster.nodes:
            assert broker.process is not None
            _wait_ready(broker, broker.process, deadline)
        _wait_registered(cluster, deadline)
    pids = [broker.pid for broker in cluster.nodes]
    log.info("kafka.cluster_started", bootstrap=cluster.bootstrap, pids=pids, seconds=_since(started))
    return cluster


def stop_cluster(cluster: Cluster, timeout_s: float = 30.0) -> None:
    """Stop every node at once, each as ``stop_broker`` does (one after another, each would first
    move its partitions' leaders to the nodes still up). Also removes ``home/kafka/broker.json``
    when it names this cluster."""
    with ThreadPoolExecutor(len(cluster.nodes) or 1) as pool:
        list(pool.map(lambda broker: stop_broker(broker, timeout_s), cluster.nodes))
    found = read_cluster_state(cluster.home)
    if found is not None and found.bootstrap == cluster.bootstrap:
        clear_state(cluster.home)


def read_cluster_state(home: Path) -> Cluster | None:
    """The cluster recorded in ``home/kafka/broker.json``, running or not; None without one."""
    try:
        data = json.loads(state_path(home).read_text())
        nodes = data["nodes"]
        brokers = [_broker_from_state(node) for node in nodes]
        ports = [
            NodePorts(int(node["node_id"]), broker.port, int(node["controller_port"]))
            for node, broker in zip(nodes, brokers, strict=True)
        ]
        return Cluster(home, str(data["heap"]), ports, brokers)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _serves(broker: Broker) -> bool:
    return pid_alive(broker.pid) and is_broker_process(broker.pid) and port_open(broker.host, broker.port)


def broker_status(home: Path) -> dict[str, Any] | None:
    """The recorded broker's state if its process is alive and its port answers; the recorded
    cluster's if a majority of its nodes do (a quorum serves), each node saying whether it
    runs; else None."""
    cluster = read_cluster_state(home)
    if cluster is not None:
        nodes = [
            {"node_id": p.node_id, "running": _serves(n), **n.to_state()}
            for p, n in zip(cluster.ports, cluster.nodes, strict=True)
        ]
        if sum(bool(node["running"]) for node in nodes) <= len(nodes) // 2:
            return None
        return {"running": True, "bootstrap": cluster.bootstrap, "nodes": nodes}
    broker = read_state(home)
    if broker is None or not _serves(broker):
        return None
    return {"running": True, **broker.to_state()}
