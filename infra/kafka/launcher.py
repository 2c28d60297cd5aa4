"""Start, check and stop a local Apache Kafka 4.x broker (KRaft), without Docker.

The broker is the Apache Kafka jars from Maven Central (``infra.kafka.jars``), run as a local
Java 17 process in combined broker + controller mode:

* ``start_broker`` keeps the broker's data in ``home/kafka/data/``, formatted once for the
  cluster id kept in ``home/kafka/cluster.json`` (with deckstream's layout version): the log
  outlives the process, and a home another layout or cluster wrote is refused, never wiped.
  Each start writes its properties and log to a ``run-*`` directory, starts ``kafka.Kafka`` and
  waits until it really serves. ``reset_data`` wipes the data on purpose.
* ``home/kafka/broker.json`` lets ``deckstream kafka status|down`` find a broker or cluster
  started by ``deckstream kafka up`` in another shell.

Several nodes: ``infra.kafka.cluster``; topics: ``infra.kafka.admin``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Protocol

import structlog

from infra.kafka.admin import _admin, _admin_answers
from infra.kafka.jars import _tail, resolve_jars
from infra.process import (
    die_with_parent,
    free_port,
    pid_alive,
    terminate,
    terminate_pid,
    wait_until,
)
from services.errors import BrokerHomeMismatch

HERE = Path(__file__).resolve().parent
LOG4J2_CONFIG = HERE / "log4j2.properties"
SERVER_TEMPLATE = HERE / "server.properties.tmpl"

STARTED_LINE = b"Kafka Server started"
MAIN_CLASS = "kafka.Kafka"
STATE_FILE = "broker.json"
CLUSTER_FILE = "cluster.json"
LAYOUT = 2  # 1: a fresh log in each run-* directory (nothing kept); 2: data/ kept, cluster.json
LOOPBACK = "127.0.0.1"

log = structlog.get_logger(__name__)


@dataclass
class Broker:
    """A running broker: where clients connect, its process, its log and its run directory (the
    properties and log of this start; the data it keeps is in ``data_dir(home)``)."""

    bootstrap: str
    pid: int
    log_path: Path
    run_dir: Path
    # Set when this process started the broker (so stopping it also reaps it); None when the
    # broker was found through the state file.
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> str:
        return self.bootstrap.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.rpartition(":")[2])

    def to_state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "bootstrap": self.bootstrap,
            "run_dir": str(self.run_dir),
            "log": str(self.log_path),
        }


def kafka_dir(home: Path) -> Path:
    """Where everything of the local broker lives: ``lib/``, ``data/``, ``cluster.json``, one
    ``run-*/`` per start, the state file."""
    return home / "kafka"


def data_dir(home: Path) -> Path:
    """The broker's log directory, kept across starts (a cluster's nodes each have one inside)."""
    return kafka_dir(home) / "data"


def node_data_dir(home: Path, node_id: int, nodes: int) -> Path:
    """Node ``node_id``'s log directory: ``data/`` itself for one node (where single-node homes
    have always kept it), ``data/node-<id>/`` in a cluster."""
    return data_dir(home) if nodes == 1 else data_dir(home) / f"node-{node_id}"


# --- the kept data -------------------------------------------------------------------------


def _properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def _refuse(home: Path, why: str) -> BrokerHomeMismatch:
    return BrokerHomeMismatch(
        f"{why}. Nothing was changed. Start the deckstream that wrote {kafka_dir(home)}, or wipe "
        "its Kafka data on purpose with `deckstream kafka reset` (every document's log goes)."
    )


def _refuse_size(home: Path, recorded: object, nodes: int) -> BrokerHomeMismatch:
    as_nodes = "1 node" if nodes == 1 else f"{nodes} nodes"
    return BrokerHomeMismatch(
        f"{kafka_dir(home)} holds the data of a {recorded}-node Kafka cluster; it cannot start as "
        f"{as_nodes}. Nothing was changed. Start it as it was "
        f"made (`deckstream kafka up --brokers {recorded}`), or wipe its Kafka data on purpose with "
        "`deckstream kafka reset` (every document's log goes)."
    )


def _record(home: Path) -> dict[str, Any] | None:
    """``cluster.json``; None when there is none yet. Refuses another layout's."""
    record = kafka_dir(home) / CLUSTER_FILE
    try:
        info: dict[str, Any] = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _refuse(home, f"{record} is unreadable ({exc})") from exc
    layout = info.get("layout")
    if layout != LAYOUT:
        age = "a newer" if isinstance(layout, int) and layout > LAYOUT else "an older"
        raise _refuse(
            home,
            f"{record} says {age} deckstream wrote this broker data "
            f"(layout {layout}; this one reads {LAYOUT})",
        )
    return info


def cluster_id(home: Path, nodes: int = 1) -> str:
    """The id of the cluster whose data ``home`` keeps, made and recorded on first use.

    Refuses (BrokerHomeMismatch) data that another layout, another cluster, another node count
    or a ZooKeeper-era Kafka wrote: starting on it would lose or mix documents. A record
    without a node count is a single node's (written before clusters).
    """
    record, info = kafka_dir(home) / CLUSTER_FILE, _record(home)
    if info is not None and info.get("nodes", 1) != nodes:
        raise _refuse_size(home, info.get("nodes", 1), nodes)
    for log_dir in (node_data_dir(home, n, nodes) for n in range(1, nodes + 1)):
        meta = log_dir / "meta.properties"
        if not meta.exists():
            continue  # formatted when it starts
        props = _properties(meta)
        if props.get("version") == "0" or "broker.id" in props:
            raise _refuse(home, f"{meta} is a ZooKeeper-era Kafka's; Kafka 4 runs KRaft only")
        if info is None:
            raise _refuse(home, f"{log_dir} holds Kafka data deckstream did not record in {record}")
        if props.get("cluster.id") != info.get("cluster_id"):
            raise _refuse(
                home,
                f"{log_dir} belongs to cluster {props.get('cluster.id')}, "
                f"but {record} names cluster {info.get('cluster_id')}",
            )
    if info is None:
        if data_dir(home).is_dir() and any(data_dir(home).iterdir()):
            raise _refuse(home, f"{data_dir(home)} holds files but no Kafka metadata")
        info = {"layout": LAYOUT, "cluster_id": _cluster_id(), "created_at": int(time.time()), "nodes": nodes}
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(record)
    return str(info["cluster_id"])


def reset_data(home: Path) -> list[Path]:
    """Wipe the broker's kept data (the log of every document) and its cluster record.

    Refuses while a broker of this home runs. Returns what was removed.
    """
    from infra.kafka.cluster import broker_status  # it knows clusters, which start brokers: imported here

    live = _live_properties_files()
    running = [p for p in live or () if p.parent.parent == kafka_dir(home)]
    if running or broker_status(home) is not None:
        raise RuntimeError(
            f"a broker is running on {kafka_dir(home)}: stop it first (`deckstream kafka down`)"
        )
    removed = []
    for path in (data_dir(home), kafka_dir(home) / CLUSTER_FILE):
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif path.exists():
            path.unlink()
            removed.append(path)
    return removed


# --- broker ------------------------------------------------------------------------------


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (candidate := Path(java_home) / "bin" / "java").is_file():
        return str(candidate)
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("Java 17+ (`java`) is not on PATH and JAVA_HOME is not set; Kafka 4.x needs it")
    return java


_SIZE = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)


def _initial_heap(heap: str) -> str:
    """``-Xms``: 256m, or the whole heap when ``heap`` is smaller (the JVM rejects Xms > Xmx)."""
    match = _SIZE.match(heap.strip())
    if match is None:
        raise ValueError(f"heap must look like 512m or 1g, not {heap!r}")
    number, unit = int(match[1]), match[2].lower()
    size = number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return heap if size < 256 * 1024**2 else "256m"


def _cluster_id() -> str:
    """A random id shaped like Kafka's ``Uuid.toString()``: url-safe base64, unpadded, no leading '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _log_tail(path: Path) -> str:
    """The log's last lines, led by its errors and their causes (Java stack traces bury them)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no broker log)"
    causes = [
        line.strip()
        for line in text.splitlines()
        if " ERROR " in line or " FATAL " in line or line.startswith("Caused by:")
    ]
    summary = "\n".join(dict.fromkeys(causes[-10:]))
    return f"{summary}\n--- broker log (tail) ---\n{_tail(text)}" if summary else _tail(text)


def _jvm(lib_dir: Path, heap: str) -> list[str]:
    return [
        _java(),
        f"-Xms{_initial_heap(heap)}",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        "-cp",
        f"{lib_dir}/*",  # the JVM expands lib/* itself
    ]


def _render_properties(broker_port: int, controller_port: int, log_dirs: Path) -> str:
    return Template(SERVER_TEMPLATE.read_text()).substitute(
        broker_port=broker_port, controller_port=controller_port, log_dirs=log_dirs
    )


def _write_properties(run_dir: Path, broker_port: int, log_dirs: Path) -> Path:
    controller_port = free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    props = run_dir / "server.properties"
    props.write_text(_render_properties(broker_port, controller_port, log_dirs))
    return props


def _format_storage(jvm: list[str], props: Path, cluster: str, timeout_s: float) -> None:
    """``kafka-storage.sh format``: without it the broker stops with "No readable meta.properties"."""
    done = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props), "--ignore-formatted"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=die_with_parent,
        check=False,
    )
    if done.returncode != 0:
        output = _tail(done.stdout + done.stderr)
        raise RuntimeError(f"formatting the Kafka data directory failed (exit {done.returncode}):\n{output}")


def _formatted(log_dir: Path) -> bool:
    return (log_dir / "meta.properties").exists()


def _launch(jvm: list[str], props: Path, port: int, die_with_parent_process: bool) -> Broker:
    """Start ``kafka.Kafka`` on ``props``, its log next to them; it may not serve yet."""
    run_dir = props.parent
    log_path = run_dir / "broker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [*jvm, MAIN_CLASS, str(props)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us only; we stop the broker
            preexec_fn=die_with_parent if die_with_parent_process else None,
        )
    return Broker(f"{LOOPBACK}:{port}", proc.pid, log_path, run_dir, process=proc)


def _wait_ready(broker: Broker, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Ready = the 'Kafka Server started' log line, then an admin request that succeeds."""

    def started_line() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with code {proc.returncode} while starting")
        return STARTED_LINE in broker.log_path.read_bytes()

    def remaining() -> float:
        return max(deadline - time.monotonic(), 0.5)

    wait_until(started_line, remaining(), what="the 'Kafka Server started' log line")
    admin = _admin(broker.bootstrap)
    wait_until(
        lambda: started_line() and _admin_answers(admin),
        remaining(),
        interval=0.2,
        what=f"an admin request to {broker.bootstrap} to succeed",
    )


@contextlib.contextmanager
def _started_or_abandoned(what: str, run_dirs: list[Path], launched: list[Broker]) -> Iterator[None]:
    """Around a start: on failure, kill what was launched and remove the run directories (the
    kept data stays), then raise a RuntimeError with each log's tail. KeyboardInterrupt and
    SystemExit go on as they are, after the clean-up."""
    try:
        yield
    except BaseException as exc:
        tails = [_log_tail(run_dir / "broker.log") for run_dir in run_dirs]
        for broker in launched:
            if broker.process is not None:
                terminate(broker.process, timeout_s=5.0)
        for run_dir in run_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        if not isinstance(exc, Exception):
            raise
        if len(tails) > 1:
            tails = [f"--- node {n} ---\n{tail}" for n, tail in enumerate(tails, 1)]
        raise RuntimeError(f"{what} did not start: {exc}\n" + "\n".join(tails)) from exc


def start_broker(
    home: Path,
    *,
    heap: str = "512m",
    timeout_s: float = 120.0,
    port: int | None = None,
    die_with_parent_process: bool = True,
) -> Broker:
    """Start a broker on the data kept in ``home/kafka/data/`` (formatted on first use).

    Returns once the broker logged ``Kafka Server started`` and answered an admin request.
    Raises BrokerHomeMismatch, before starting anything, for data it must not use.
    ``port`` fixes the client port (default: a free one). With ``die_with_parent_process``
    (the default) the kernel stops the broker when this process dies; ``deckstream kafka up
    --detach`` turns it off so the broker outlives the command. On failure the process is
    killed, the run directory removed (the kept data stays), and a ``RuntimeError`` carries the
    log tail.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    kafka_dir(home).mkdir(parents=True, exist_ok=True)
    cluster = cluster_id(home)
    jvm = _jvm(resolve_jars(kafka_dir(home) / "lib"), heap)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=kafka_dir(home)))
    launched: list[Broker] = []
    with _started_or_abandoned("the Kafka broker", [run_dir], launched):
        broker_port = port if port is not None else free_port()
        props = _write_properties(run_dir, broker_port, data_dir(home))
        if not _formatted(data_dir(home)):
            _format_storage(jvm, props, cluster, timeout_s)
        launched.append(broker := _launch(jvm, props, broker_port, die_with_parent_process))
        assert broker.process is not None
        _wait_ready(broker, broker.process, deadline)
    log.info("kafka.started", bootstrap=broker.bootstrap, pid=broker.pid, seconds=_since(started))
    return broker


def is_broker_process(pid: int) -> bool:
    """Guards against a recycled pid: the process must be a Kafka broker JVM."""
    try:
        return MAIN_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no procfs: trust the pid


def stop_broker(broker: Broker, timeout_s: float = 30.0) -> None:
    """SIGTERM (a clean shutdown), SIGKILL after ``timeout_s``; then remove its run directory
    (the kept data stays).

    Idempotent. Also removes ``home/kafka/broker.json`` when it names this broker.
    """
    started = time.monotonic()
    if broker.process is not None:
        terminate(broker.process, timeout_s)
    elif pid_alive(broker.pid) and is_broker_process(broker.pid):
        terminate_pid(broker.pid, timeout_s)
    shutil.rmtree(broker.run_dir, ignore_errors=True)
    state = broker.run_dir.parent / STATE_FILE
    found = _read_state_file(state)
    if found is not None and found.pid == broker.pid:
        state.unlink(missing_ok=True)
    log.info("kafka.stopped", bootstrap=broker.bootstrap, pid=broker.pid, seconds=_since(started))


def _live_properties_files() -> set[Path] | None:
    """The ``server.properties`` of every live ``kafka.Kafka`` process; None without procfs."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found: set[Path] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MAIN_CLASS.encode() in argv:
            found.update(Path(os.fsdecode(a)) for a in argv if a.endswith(b".properties"))
    return found


def prune_stale_runs(home: Path, min_age_s: float = 300.0) -> list[Path]:
    """Remove ``home/kafka/run-*`` directories no live broker uses (left by a crash or SIGKILL).

    Directories younger than ``min_age_s`` are kept: another process may be formatting one.
    """
    live = _live_properties_files()
    if live is None:
        return []
    removed = []
    for run_dir in sorted(kafka_dir(home).glob("run-*")):
        try:
            age = time.time() - run_dir.stat().st_mtime
        except OSError:
            continue
        if age >= min_age_s and run_dir / "server.properties" not in live:
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    return removed


# --- state file --------------------------------------------------------------------------


class Recorded(Protocol):
    """A broker or a cluster, as the state file records it."""

    def to_state(self) -> dict[str, Any]: ...


def state_path(home: Path) -> Path:
    return kafka_dir(home) / STATE_FILE


def _broker_from_state(data: dict[str, Any]) -> Broker:
    return Broker(
        bootstrap=str(data["bootstrap"]),
        pid=int(data["pid"]),
        log_path=Path(data["log"]),
        run_dir=Path(data.get("run_dir") or data["data_dir"]),  # data_dir: layout 1
    )


def _read_state_file(path: Path) -> Broker | None:
    try:
        return _broker_from_state(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(home: Path, running: Recorded) -> Path:
    """Record a broker or a cluster in ``home/kafka/broker.json`` (written atomically)."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(running.to_state(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state(home: Path) -> Broker | None:
    """The broker recorded in ``home/kafka/broker.json``, running or not; None without a file
    (or when it records a cluster: ``read_cluster_state``)."""
    return _read_state_file(state_path(home))


def clear_state(home: Path) -> None:
    state_path(home).unlink(missing_ok=True)
