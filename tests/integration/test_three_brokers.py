"""Three local brokers (KRaft, each broker and controller; replication 3, min.insync.replicas 2):
the active controller SIGKILLed mid-document and the document completes, no card lost or
streamed twice; `deckstream kafka up --brokers 3` starts, reports and stops such a cluster; a
home is never started with another node count. Real brokers, worker and API; the LLM simulator.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from bench.harness import start_sim
from deckstream.client import DeckstreamClient, SSEEvent
from deckstream.stack import start_stack
from infra.kafka.admin import ensure_topics
from infra.kafka.cluster import Cluster, broker_status, start_cluster, stop_cluster
from infra.kafka.launcher import kafka_dir
from infra.llm.sim import SimConfig
from infra.process import pid_alive, terminate, wait_until
from services.errors import BrokerHomeMismatch
from services.events import topics
from services.events.topics import TopicSpec
from tests.conftest import TOKEN, corpus_file, stack_settings

pytestmark = pytest.mark.kafka
LLM = {"model": "deckstream-sim", "profile": "chat", "max_in_flight": 8}
TERMINAL = ("completed", "partial", "failed", "cancelled")
HEAP = "384m"
BOOK = "py4e_python-for-everybody_book.docx"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    proc, url = start_sim(SimConfig(latency_s=0.2, capacity=8))  # a book takes ~10 s of LLM work
    yield url
    terminate(proc)


class EventStream(threading.Thread):
    """A user's event stream of one document, each event with the moment it arrived."""

    def __init__(self, api_url: str, document_id: str) -> None:
        super().__init__(daemon=True)
        self.api_url, self.document_id = api_url, document_id
        self.seen: list[tuple[float, SSEEvent]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with DeckstreamClient(self.api_url, TOKEN, timeout_s=60) as client:
                for ev in client.events(self.document_id, timeout_s=300):
                    self.seen.append((time.monotonic(), ev))
        except BaseException as exc:
            self.error = exc

    def count(self, event: str) -> int:
        if self.error is not None:
            raise self.error
        return sum(1 for _, ev in self.seen if ev.event == event)

    def ended(self) -> bool:
        return self.count("done") > 0 or not self.is_alive()


Partitions = dict[tuple[str, int], tuple[int, list[int], list[int]]]


def partitions(bootstrap: str) -> Partitions:
    """Every partition of every topic (Faust's and Kafka's own too): leader, replicas, in-sync replicas."""
    # Its "connection refused" from the killed node go to logging (pytest keeps them), not stderr.
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=logging.getLogger("rdkafka"))
    metadata = admin.list_topics(timeout=10)
    return {
        (name, p.id): (p.leader, list(p.replicas), list(p.isrs))
        for name, topic in metadata.topics.items()
        for p in topic.partitions.values()
    }


def active_controller(cluster: Cluster) -> int:
    """The quorum's leader, as the nodes last wrote it down (the highest epoch is the latest)."""
    states = [
        json.loads((cluster.log_dir(n) / "__cluster_metadata-0" / "quorum-state").read_text())
        for n in range(1, len(cluster.nodes) + 1)
    ]
    return int(max(states, key=lambda s: s["leaderEpoch"])["leaderId"])


def completed_with_every_card_once(
    client: DeckstreamClient, doc: str, seen: list[SSEEvent]
) -> dict[str, Any]:
    """The settled document, checked as test_broker_faults.py does: completed, every chunk done,
    no card streamed twice, every card of the deck streamed and counted once."""

    def settled() -> dict[str, Any] | None:
        s = client.status(doc)
        return s if s["status"] in TERMINAL and client.deck(doc).json()["complete"] else None

    final: dict[str, Any] = wait_until(settled, 60, interval=0.2, what=f"document {doc} to settle")
    assert final["status"] == "completed", final
    assert final["chunks_done"] == final["chunks_total"] > 0 and final["chunks_failed"] == 0
    streamed = [e.data["card_id"] for e in seen if e.event == "card"]
    assert len(streamed) == len(set(streamed)), "a card was streamed twice"
    cards = client.deck(doc).json()["cards"]
    ids = [c["card_id"] for c in cards]
    assert cards and len(ids) == len(set(ids)) and set(ids) <= set(streamed)
    assert final["cards"] == len(streamed)  # every chunk's cards counted once, none lost
    return final


def test_a_document_completes_when_the_active_controller_of_three_brokers_is_killed(
    tmp_path: Path, sim_url: str
) -> None:
    home = tmp_path / "home"
    began = time.monotonic()
    cluster = start_cluster(home, brokers=3, heap=HEAP, timeout_s=120)
    started_s = time.monotonic() - began
    try:
        kafka = {"bootstrap": cluster.bootstrap, "partitions": 4, "replication": 3}
        stack = start_stack(
            stack_settings(home, cluster.bootstrap, sim_url, kafka=kafka, llm={"url": sim_url, **LLM}),
            api=True,
        )
        try:
            assert stack.api_url is not None
            with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
                r = client.upload(corpus_file(BOOK))
                assert r.status_code == 202, r.text
                doc = str(r.json()["document_id"])
                stream = EventStream(stack.api_url, doc)
                stream.start()
                wait_until(lambda: stream.count("card"), 120, interval=0.05, what="the first card")

                before = partitions(cluster.bootstrap)
                # Three copies of everything: the pipeline's topics, the worker's changelogs, Kafka's own.
                assert {len(replicas) for _, replicas, _ in before.values()} == {3}
                victim = active_controller(cluster)
                led = [tp for tp, (leader, _, _) in before.items() if leader == victim]
                assert led, f"node {victim} leads no partition"
                killed = cluster.node(victim)
                os.kill(killed.pid, signal.SIGKILL)
                kill_at = time.monotonic()
                assert killed.process is not None and killed.process.wait(timeout=10) == -signal.SIGKILL
                assert client.status(doc)["status"] not in TERMINAL  # killed mid-document

                live = ",".join(b.bootstrap for n, b in enumerate(cluster.nodes, 1) if n != victim)

                def moved() -> bool:
                    after = partitions(live)
                    return all(leader != victim and victim not in isr for leader, _, isr in after.values())

                wait_until(moved, 60, interval=0.1, what=f"partitions to leave node {victim}")
                moved_s = time.monotonic() - kill_at

                wait_until(stream.ended, 240, interval=0.2, what=f"document {doc} to end")
                seen = [ev for _, ev in stream.seen]
                assert seen[-1].event == "done", [e.event for e in seen[-5:]]
                arrivals = [kill_at] + [at for at, _ in stream.seen if at > kill_at]
                stalled_s = max(b - a for a, b in itertools.pairwise(arrivals))
                cards_before = sum(1 for at, ev in stream.seen if ev.event == "card" and at <= kill_at)
                final = completed_with_every_card_once(client, doc, seen)
        finally:
            stack.stop()

        restart_at = time.monotonic()
        cluster.restart(victim, timeout_s=60)
        wait_until(
            lambda: all(victim in isr for _, _, isr in partitions(cluster.bootstrap).values()),
            60,
            interval=0.2,
            what=f"node {victim} back in every in-sync replica set",
        )
        rejoined_s = time.monotonic() - restart_at
        print(  # the figures docs/reliability.md quotes
            f"\nthree brokers: started in {started_s:.1f} s; killed node {victim} (active controller, leading "
            f"{len(led)} of {len(before)} partitions) after {cards_before} cards; "
            f"leaders moved and ISRs shrank in {moved_s:.1f} s; longest pause of the event stream after the "
            f"kill {stalled_s:.1f} s; {final['chunks_total']} chunks done, {final['cards']} cards, none lost or "
            f"twice; restarted node in every ISR after {rejoined_s:.1f} s"
        )
    finally:
        stop_cluster(cluster)


def test_a_single_node_home_is_not_started_as_three_nodes(test_home: Path, kafka_bootstrap: str) -> None:
    """The session's broker home, formatted for one node, refused as three while that node runs."""
    record = (kafka_dir(test_home) / "cluster.json").read_text()
    with pytest.raises(BrokerHomeMismatch, match=r"a 1-node Kafka cluster; it cannot start as 3 nodes"):
        start_cluster(test_home, brokers=3, timeout_s=30)
    assert (kafka_dir(test_home) / "cluster.json").read_text() == record
    assert not list((kafka_dir(test_home) / "data").glob("node-*"))
    assert (
        AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).brokers
    )  # still serving


def kafka_command(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECKSTREAM_")}
    env |= {"DECKSTREAM_HOME": str(home), "DECKSTREAM_KAFKA_HEAP": HEAP}
    return subprocess.run(
        [sys.executable, "-m", "deckstream", "kafka", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def describe(bootstrap: str, resource: ConfigResource) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: a dropped client cancels its futures
    (future,) = admin.describe_configs([resource]).values()
    return {name: entry.value for name, entry in future.result(timeout=10).items()}


def test_kafka_up_with_three_brokers_starts_a_cluster_status_reports_and_down_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = kafka_command(home, "up", "--brokers", "2", "--detach")
    assert refused.returncode == 2 and "--brokers must be 1 or 3" in refused.stderr
    up = kafka_command(home, "up", "--brokers", "3", "--detach")
    assert up.returncode == 0, up.stderr
    bootstrap = up.stdout.strip()
    kept = TopicSpec(f"kept-{uuid.uuid4().hex[:8]}", "a topic the next start must find")
    pids: list[int] = []
    try:
        assert len(bootstrap.split(",")) == 3
        status = kafka_command(home, "status")
        assert status.returncode == 0, status.stderr
        found = json.loads(status.stdout)
        assert found["bootstrap"] == bootstrap and [n["running"] for n in found["nodes"]] == [True] * 3
        pids = [n["pid"] for n in found["nodes"]]

        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert len(metadata.brokers) == 3
        for spec in topics.ALL:  # topic settings follow the cluster size
            assert {len(p.replicas) for p in metadata.topics[spec.name].partitions.values()} == {3}, spec.name
        uploaded = describe(bootstrap, ConfigResource(ResourceType.TOPIC, topics.UPLOADED.name))
        assert uploaded["min.insync.replicas"] == "2"
        with pytest.raises(RuntimeError, match=r"has 3 replicas, expected 1"):
            ensure_topics(bootstrap, [topics.UPLOADED], partitions=4, replication=1, timeout_s=10)
        ensure_topics(bootstrap, [kept], partitions=1, replication=3)
    finally:
        down = kafka_command(home, "down")
    assert down.returncode == 0, down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert kafka_command(home, "status").returncode == 1
    assert not list(kafka_dir(home).glob("run-*"))

    single = kafka_command(home, "up", "--detach")
    message = " ".join(single.stderr.split())  # rich wraps long lines
    assert single.returncode == 1 and "a 3-node Kafka cluster; it cannot start as 1 node" in message, message
    assert "`deckstream kafka up --brokers 3`" in message
    assert broker_status(home) is None

    again = kafka_command(home, "up", "--brokers", "3", "--detach")  # the same data, new ports
    assert again.returncode == 0, again.stderr
    try:
        metadata = AdminClient({"bootstrap.servers": again.stdout.strip()}).list_topics(timeout=10)
        assert kept.name in metadata.topics and len(metadata.brokers) == 3
    finally:
        assert kafka_command(home, "down").returncode == 0
