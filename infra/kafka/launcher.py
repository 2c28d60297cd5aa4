"""Start, check and stop a local Apache Kafka 4.x broker, or a cluster of them (KRaft), without Docker.

The broker is the Apache Kafka jars from Maven Central (``pom.xml`` next to this file), run
as a local Java 17 process in combined broker + controller mode:

* ``resolve_jars`` copies the runtime jars into ``lib_dir`` through Maven; Maven's own cache
  (``~/.m2``) makes every resolution after the first one fast.
* ``start_broker`` keeps the broker's data in ``home/kafka/data/``, formatted once for the
  cluster id kept in ``home/kafka/cluster.json`` (with deckstream's layout version): the log
  outlives the process, and a home another layout or cluster wrote is refused, never wiped.
  Each start writes its properties and log to a ``run-*`` directory, starts ``kafka.Kafka`` and
  waits until it really serves. ``reset_data`` wipes the data on purpose.
* ``start_cluster`` starts several such nodes on loopback (``deckstream kafka up --brokers 3``),
  a static quorum of them all, each node's data in ``home/kafka/data/node-<id>/``;
  ``cluster.json`` records the node count, and a home is never started with another.
  ``replication_for`` turns the cluster size into the replicas and in-sync replicas that
  the brokers' defaults and ``ensure_topics`` use.
* ``ensure_topics`` creates the pipeline topics explicitly (the broker never auto-creates).
* ``home/kafka/broker.json`` lets ``deckstream kafka status|down`` find a broker or cluster
  started by ``deckstream kafka up`` in another shell.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

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
    die_with_parent,
    free_port,
    pid_alive,
    port_open,
    terminate,
    terminate_pid,
    wait_until,
)
from services.errors import BrokerHomeMismatch
from services.events.topics import TopicSpec

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.properties"
SERVER_TEMPLATE = HERE / "server.properties.tmpl"

STARTED_LINE = b"Kafka Server started"
MAIN_CLASS = "kafka.Kafka"
STATE_FILE = "broker.json"
CLUSTER_FILE = "cluster.json"
LAYOUT = 2  # 1: a fresh log in each run-* directory (nothing kept); 2: data/ kept, cluster.json
LOOPBACK = "127.0.0.1"
_STAMP = ".resolved.json"
_MVN_GOAL = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_LOG_TAIL_LINES = 60

log = structlog.get_logger(__name__)
# librdkafka's own log lines (connection refused while the broker boots, ...) go to logging,
# not straight to stderr.
_rdkafka_log = logging.getLogger("deckstream.kafka.rdkafka")


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


# --- jars --------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolved(lib_dir: Path, pom_sha: str) -> bool:
    try:
        stamp = json.loads((lib_dir / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    jars = stamp.get("jars") or []
    return stamp.get("pom_sha256") == pom_sha and bool(jars) and all((lib_dir / j).is_file() for j in jars)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock between processes (parallel test workers, two shells)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def resolve_jars(lib_dir: Path) -> Path:
    """Make ``lib_dir`` hold the broker's runtime jars; a no-op when they match ``pom.xml``.

    A stamp file records the pom's sha256 and the jar names, so a changed pom or a missing
    jar triggers a new resolution. Jars are resolved into a sibling directory and swapped in,
    so a broker already running from ``lib_dir`` keeps its files.
    """
    pom_sha = _sha256(POM)
    if _resolved(lib_dir, pom_sha):
        return lib_dir
    with _locked(lib_dir.parent / f".{lib_dir.name}.lock"):
        if _resolved(lib_dir, pom_sha):  # another process resolved while we waited
            return lib_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (`mvn`) is not on PATH; it fetches the Kafka jars from Maven Central")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".{lib_dir.name}-", dir=lib_dir.parent))
        try:
            cmd = [mvn, "-B", "-q", "-f", str(POM), _MVN_GOAL, "-DincludeScope=runtime"]
            cmd.append(f"-DoutputDirectory={staging}")
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                output = _tail(done.stdout + done.stderr)
                raise RuntimeError(f"resolving the Kafka jars failed (mvn exit {done.returncode}):\n{output}")
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if not any(j.startswith("kafka_2.13-") for j in jars):
                raise RuntimeError(f"Maven resolved no kafka_2.13 jar into {staging}: {jars}")
            stamp = {"pom_sha256": pom_sha, "jars": jars}
            (staging / _STAMP).write_text(json.dumps(stamp, indent=2))
            old = lib_dir.with_name(f".{lib_dir.name}-old-{os.getpid()}")
            if lib_dir.exists():
                lib_dir.rename(old)
            staging.rename(lib_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("kafka.jars_resolved", lib_dir=str(lib_dir), jars=len(jars), seconds=_since(started))
    return lib_dir


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


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap}, logger=_rdkafka_log)


def _admin_answers(admin: AdminClient) -> bool:
    try:
        admin.list_topics(timeout=2.0)
    except KafkaException:
        return False
    return True


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


# --- clusters ----------------------------------------------------------------------------

# A killed node stays in every partition's ISR until the controller fences it, when its
# session expires, and an acks=all write waits for the whole ISR: with Kafka's 9 s session
# every partition stalled 9-12 s after a kill, with 3 s (heartbeats every 0.5 s) 3-5 s
# (docs/reliability.md). Loopback loses no heartbeat, so the short session fences no live node.
SESSION_SETTINGS = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


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


# --- topics ------------------------------------------------------------------------------


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


# --- state file --------------------------------------------------------------------------


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


def write_state(home: Path, running: Broker | Cluster) -> Path:
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


def clear_state(home: Path) -> None:
    state_path(home).unlink(missing_ok=True)


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
