"""``deckstream kafka up|down|status|reset``: the local single-node Kafka broker.

The bootstrap address goes to stdout (``BOOTSTRAP=$(deckstream kafka up --detach)``);
progress and messages go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from infra.kafka.launcher import (
    Broker,
    broker_status,
    clear_state,
    data_dir,
    ensure_topics,
    is_broker_process,
    kafka_dir,
    prune_stale_runs,
    read_state,
    reset_data,
    resolve_jars,
    start_broker,
    stop_broker,
    write_state,
)
from infra.process import pid_alive, raise_keyboard_interrupt
from services.errors import BrokerHomeMismatch
from services.events import topics
from services.settings import Settings, get_settings

app = typer.Typer(
    help="Run the local Kafka broker (Apache Kafka 4.x jars from Maven Central, no Docker).",
    no_args_is_help=True,
)
err = Console(stderr=True)


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


def _ensure_topics(settings: Settings, bootstrap: str) -> None:
    with err.status(f"Creating {len(topics.ALL)} topics on {bootstrap}…"):
        ensure_topics(bootstrap, topics.ALL, settings.kafka.partitions, settings.kafka.replication)


def _check_not_running(home: Path, foreground: bool) -> None:
    """Exit early if a broker is already recorded; clean up after one that died."""
    status = broker_status(home)
    if status is not None:
        if foreground:
            _fail(
                f"a broker is already running at {status['bootstrap']} (pid {status['pid']}); "
                "stop it with `deckstream kafka down`"
            )
        err.print(f"Kafka is already running at {status['bootstrap']} (pid {status['pid']}).")
        typer.echo(status["bootstrap"])
        raise typer.Exit(0)
    stale = read_state(home)
    if stale is not None:
        if pid_alive(stale.pid) and is_broker_process(stale.pid):
            _fail(
                f"pid {stale.pid} from {kafka_dir(home) / 'broker.json'} is alive but {stale.bootstrap} "
                "does not answer; run `deckstream kafka down` first"
            )
        stop_broker(stale)  # removes its run directory; the kept data stays
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


def _up(settings: Settings, foreground: bool, port: int | None) -> None:
    home = settings.home
    _check_not_running(home, foreground)
    try:
        with err.status("Resolving the Kafka jars (Maven Central, cached in ~/.m2)…"):
            resolve_jars(kafka_dir(home) / "lib")
        with err.status("Starting Kafka…"):
            broker = start_broker(
                home,
                heap=settings.kafka.heap,
                timeout_s=settings.kafka.startup_timeout_s,
                port=port,
                die_with_parent_process=foreground,
            )
    except KeyboardInterrupt:
        _fail("interrupted; nothing left running", code=130)
    except (RuntimeError, BrokerHomeMismatch) as exc:
        _fail(str(exc))

    try:
        write_state(home, broker)
        _ensure_topics(settings, broker.bootstrap)
    except BaseException as exc:
        stop_broker(broker)
        clear_state(home)
        if isinstance(exc, KeyboardInterrupt):
            _fail("interrupted; broker stopped", code=130)
        if isinstance(exc, RuntimeError | TimeoutError):
            _fail(f"creating the topics failed, broker stopped: {exc}")
        raise
    err.print(f"Kafka is up at [bold]{broker.bootstrap}[/bold] (pid {broker.pid}, log {broker.log_path}).")
    typer.echo(broker.bootstrap)
    sys.stdout.flush()
    if foreground:
        _serve(home, broker)


@app.command()
def up(
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground/--detach",
            help="Stay attached and stop the broker on Ctrl-C (default), or leave it running.",
        ),
    ] = True,
    port: Annotated[int | None, typer.Option(help="Client port (default: a free one).")] = None,
) -> None:
    """Start the broker, create the pipeline topics, print the bootstrap address.

    With DECKSTREAM_KAFKA_BOOTSTRAP set (an external cluster) nothing is started: the topics
    are created there, with DECKSTREAM_KAFKA_REPLICATION replicas.
    """
    settings = get_settings()
    if settings.kafka.bootstrap:
        try:
            _ensure_topics(settings, settings.kafka.bootstrap)
        except (RuntimeError, TimeoutError) as exc:
            _fail(f"creating the topics on {settings.kafka.bootstrap} failed: {exc}")
        typer.echo(settings.kafka.bootstrap)
        return

    with _interrupt_on_termination():
        _up(settings, foreground, port)


@app.command()
def down() -> None:
    """Stop the broker that `deckstream kafka up` started (found in home/kafka/broker.json)."""
    home = get_settings().home
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
    """Print the local broker's state as JSON; exit code 1 when it is not running."""
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
