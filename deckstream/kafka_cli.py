"""``deckstream kafka up|down|status|reset``: the local Kafka broker, or a local cluster of three.

The bootstrap address goes to stdout (``BOOTSTRAP=$(deckstream kafka up --detach)``; a
cluster's is the comma-separated list of its nodes); progress and messages go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from infra.kafka.admin import ensure_topics, replication_for
from infra.kafka.cluster import Cluster, broker_status, read_cluster_state, start_cluster, stop_cluster
from infra.kafka.jars import resolve_jars
from infra.kafka.launcher import (
    Broker,
    clear_state,
    data_dir,
    is_broker_process,
    kafka_dir,
    prune_stale_runs,
    read_state,
    reset_data,
    start_broker,
    stop_broker,
    write_state,
)
from infra.process import pid_alive, raise_keyboard_interrupt, wait_until
from services.errors import BrokerHomeMismatch
from services.events import topics
from services.settings import Settings, get_settings

app = typer.Typer(
    help="Run the local Kafka broker or cluster (Apache Kafka 4.x jars from Maven Central, no Docker).",
    no_args_is_help=True,
)
err = Console(stderr=True)
CLUSTER_SIZES = (1, 3)  # one node, or the smallest cluster that keeps serving with a node down


@contextlib.contextmanager
def _interrupt_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP act like Ctrl-C, so every way of ending ``up`` stops the broker."""
    previous = {sig: signal.signal(sig, raise_keyboard_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(Text(message, style="red"))  # not markup: Java log lines are full of [brackets]
    raise typer.Exit(code)


def _ensure_topics(settings: Settings, bootstrap: str, replication: int) -> None:
    with err.status(f"Creating {len(topics.ALL)} topics on {bootstrap}…"):
        ensure_topics(bootstrap, topics.ALL, settings.kafka.partitions, replication)


def _pids(status: dict[str, Any]) -> str:
    if "nodes" not in status:
        return f"pid {status['pid']}"
    return "pids " + ", ".join(str(node["pid"]) for node in status["nodes"])


def _check_not_running(home: Path, foreground: bool) -> None:
    """Exit early if a broker or cluster is already recorded; clean up after one that died."""
    status = broker_status(home)
    if status is not None:
        if foreground:
            _fail(
                f"a {'cluster' if 'nodes' in status else 'broker'} is already running at "
                f"{status['bootstrap']} ({_pids(status)}); "
                "stop it with `deckstream kafka down`"
            )
        err.print(f"Kafka is already running at {status['bootstrap']} ({_pids(status)}).")
        typer.echo(status["bootstrap"])
        raise typer.Exit(0)
    cluster = read_cluster_state(home)
    stale = cluster.nodes if cluster is not None else [b for b in [read_state(home)] if b is not None]
    for broker in stale:
        if pid_alive(broker.pid) and is_broker_process(broker.pid):
            _fail(
                f"pid {broker.pid} from {kafka_dir(home) / 'broker.json'} is alive but {broker.bootstrap} "
                "does not answer; run `deckstream kafka down` first"
            )
    for broker in stale:
        stop_broker(broker)  # removes its run directory; the kept data stays
    if stale:
        clear_state(home)
    for path in prune_stale_runs(home):
        err.print(f"Removed the run directory of an earlier start: {path}")


def _serve(home: Path, broker: Broker) -> None:
    """Wait for Ctrl-C (or SIGTERM/SIGHUP), then stop the broker; fail if it dies on its own."""
    assert broker.process is not None
    err.print("Press Ctrl-C to stop the broker.")
    try:
        code = broker.process.wait()
    except KeyboardInterrupt:
        with err.status("Stopping Kafka…"):
            stop_broker(broker)
        clear_state(home)
        err.print("Kafka stopped.")
        return
    tail = broker.log_path.read_text(errors="replace").splitlines()[-30:]
    stop_broker(broker)
    clear_state(home)
    _fail(f"the Kafka broker exited on its own (code {code}):\n" + "\n".join(tail))


def _serve_cluster(cluster: Cluster) -> None:
    """Wait for Ctrl-C (or SIGTERM/SIGHUP), then stop every node. A node that exits on its own
    is reported and the others go on; once too few are left for a quorum, all stop."""
    err.print("Press Ctrl-C to stop the cluster.")
    gone: set[int] = set()

    def quorum_lost() -> bool:
        for node_id, node in enumerate(cluster.nodes, 1):
            assert node.process is not None
            if node_id not in gone and (code := node.process.poll()) is not None:
                gone.add(node_id)
                err.print(Text(f"Kafka node {node_id} exited on its own (code {code}); log {node.log_path}."))
        return len(gone) > len(cluster.nodes) // 2

    try:
        wait_until(quorum_lost, math.inf, interval=0.5)
    except KeyboardInterrupt:
        with err.status("Stopping Kafka…"):
            stop_cluster(cluster)
        err.print("Kafka stopped.")
        return
    stop_cluster(cluster)
    _fail(f"{len(gone)} of {len(cluster.nodes)} Kafka nodes exited: no quorum is left, the cluster stopped")


def _start(settings: Settings, brokers: int, foreground: bool, port: int | None) -> Broker | Cluster:
    home, kafka = settings.home, settings.kafka
    if brokers == 1:
        with err.status("Starting Kafka…"):
            return start_broker(
                home,
                heap=kafka.heap,
                timeout_s=kafka.startup_timeout_s,
                port=port,
                die_with_parent_process=foreground,
            )
    with err.status(f"Starting {brokers} Kafka nodes…"):
        return start_cluster(
            home,
            brokers=brokers,
            heap=kafka.heap,
            timeout_s=kafka.startup_timeout_s,
            port=port,
            die_with_parent_process=foreground,
        )


def _stop(home: Path, running: Broker | Cluster) -> None:
    if isinstance(running, Cluster):
        stop_cluster(running)  # also removes broker.json
    else:
        stop_broker(running)
        clear_state(home)


def _announce(running: Broker | Cluster) -> None:
    if isinstance(running, Broker):
        err.print(
            f"Kafka is up at [bold]{running.bootstrap}[/bold] (pid {running.pid}, log {running.log_path})."
        )
        return
    pids = ", ".join(str(node.pid) for node in running.nodes)
    replicas = replication_for(len(running.nodes))
    err.print(f"Kafka is up at [bold]{running.bootstrap}[/bold] ({len(running.nodes)} nodes, pids {pids}).")
    err.print(
        f"Run deckstream on it with DECKSTREAM_KAFKA_BOOTSTRAP={running.bootstrap} "
        f"DECKSTREAM_KAFKA_REPLICATION={replicas} (the worker's own topics need it too)."
    )


def _up(settings: Settings, brokers: int, foreground: bool, port: int | None) -> None:
    home = settings.home
    _check_not_running(home, foreground)
    try:
        with err.status("Resolving the Kafka jars (Maven Central, cached in ~/.m2)…"):
            resolve_jars(kafka_dir(home) / "lib")
        running = _start(settings, brokers, foreground, port)
    except KeyboardInterrupt:
        _fail("interrupted; nothing left running", code=130)
    except (RuntimeError, BrokerHomeMismatch) as exc:
        _fail(str(exc))

    what = "broker" if brokers == 1 else "cluster"
    # One local broker keeps the configured replication (1 unless set); a cluster's follows its size.
    replicas = settings.kafka.replication if brokers == 1 else replication_for(brokers)
    try:
        write_state(home, running)
        _ensure_topics(settings, running.bootstrap, replicas)
    except BaseException as exc:
        _stop(home, running)
        if isinstance(exc, KeyboardInterrupt):
            _fail(f"interrupted; {what} stopped", code=130)
        if isinstance(exc, RuntimeError | TimeoutError):
            _fail(f"creating the topics failed, {what} stopped: {exc}")
        raise
    _announce(running)
    typer.echo(running.bootstrap)
    sys.stdout.flush()
    if not foreground:
        return
    if isinstance(running, Cluster):
        _serve_cluster(running)
    else:
        _serve(home, running)


@app.command()
def up(
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground/--detach",
            help="Stay attached and stop the broker on Ctrl-C (default), or leave it running.",
        ),
    ] = True,
    port: Annotated[
        int | None,
        typer.Option(
            help="Client port (default: a free one); a cluster's next nodes take the ports after it."
        ),
    ] = None,
    brokers: Annotated[
        int,
        typer.Option(
            help="Nodes, each broker and controller: 1, or 3 (topics then keep 3 replicas, "
            "2 of them in sync, and survive a node's loss)."
        ),
    ] = 1,
) -> None:
    """Start the broker (or cluster), create the pipeline topics, print the bootstrap address.

    With DECKSTREAM_KAFKA_BOOTSTRAP set (an external cluster) nothing is started: the topics
    are created there, with DECKSTREAM_KAFKA_REPLICATION replicas.
    """
    if brokers not in CLUSTER_SIZES:
        _fail(f"--brokers must be 1 or 3, not {brokers}", code=2)
    settings = get_settings()
    if settings.kafka.bootstrap and brokers != 1:
        _fail(
            f"--brokers starts a local cluster, but DECKSTREAM_KAFKA_BOOTSTRAP names one to use "
            f"({settings.kafka.bootstrap}); unset it, or leave --brokers out",
            code=2,
        )
    if settings.kafka.bootstrap:
        try:
            _ensure_topics(settings, settings.kafka.bootstrap, settings.kafka.replication)
        except (RuntimeError, TimeoutError) as exc:
            _fail(f"creating the topics on {settings.kafka.bootstrap} failed: {exc}")
        typer.echo(settings.kafka.bootstrap)
        return

    with _interrupt_on_termination():
        _up(settings, brokers, foreground, port)


@app.command()
def down() -> None:
    """Stop the broker or cluster that `deckstream kafka up` started (found in home/kafka/broker.json)."""
    home = get_settings().home
    cluster = read_cluster_state(home)
    if cluster is not None:
        pids = ", ".join(str(node.pid) for node in cluster.nodes)
        with err.status(f"Stopping {len(cluster.nodes)} Kafka nodes (pids {pids})…"):
            stop_cluster(cluster)  # also removes broker.json
        err.print(f"Kafka at {cluster.bootstrap} stopped.")
        return
    broker = read_state(home)
    if broker is None:
        err.print("No local Kafka broker is recorded; nothing to stop.")
        return
    with err.status(f"Stopping Kafka (pid {broker.pid})…"):
        stop_broker(broker)
    clear_state(home)
    err.print(f"Kafka at {broker.bootstrap} stopped.")


@app.command()
def status() -> None:
    """Print the local broker's state as JSON (a cluster's lists its nodes); exit code 1 when it
    is not running (a cluster: when fewer than a majority of its nodes answer)."""
    home = get_settings().home
    found = broker_status(home)
    if found is None:
        typer.echo(json.dumps({"running": False, "state_file": str(kafka_dir(home) / "broker.json")}))
        raise typer.Exit(1)
    typer.echo(json.dumps(found))


@app.command()
def reset(yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Wipe the local broker's kept data on purpose: every document, deck and page ledger.

    Uploaded files stay in the blob store. Refused while the broker runs.
    """
    home = get_settings().home
    if not data_dir(home).exists():
        err.print(f"No Kafka data in {kafka_dir(home)}; nothing to reset.")
        return
    if not yes:
        typer.confirm(
            f"Delete the Kafka data in {data_dir(home)} (every document, deck and page ledger)?", abort=True
        )
    try:
        removed = reset_data(home)
    except RuntimeError as exc:
        _fail(str(exc))
    err.print("Removed " + ", ".join(str(p) for p in removed) + ". The next start formats a new cluster.")
