"""Start, check and stop a single-node Apache Kafka 4.x broker (KRaft) without Docker.

The broker is the Apache Kafka jars from Maven Central (``pom.xml`` next to this file), run
as a local Java 17 process in combined broker + controller mode:

* ``resolve_jars`` copies the runtime jars into ``lib_dir`` through Maven; Maven's own cache
  (``~/.m2``) makes every resolution after the first one fast.
* ``start_broker`` keeps the broker's data in ``home/kafka/data/``, formatted once for the
  cluster id kept in ``home/kafka/cluster.json`` (with deckstream's layout version): the log
  outlives the process, and a home another layout or cluster wrote is refused, never wiped.
  Each start writes its properties and log to a ``run-*`` directory, starts ``kafka.Kafka`` and
  waits until it really serves. ``reset_data`` wipes the data on purpose.
* ``ensure_topics`` creates the pipeline topics explicitly (the broker never auto-creates).
* ``home/kafka/broker.json`` lets ``deckstream kafka status|down`` find a broker started by
  ``deckstream kafka up`` in another shell.
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
    """The broker's log directory, kept across starts."""
    return kafka_dir(home) / "data"


# --- the kept data -------------------------------------------------------------------------


def _properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


def _refuse(home: Path, why: str) -> BrokerHomeMismatch:
    return BrokerHomeMismatch(
        f"{why}. Nothing was changed. Start the deckstream that wrote {kafka_dir(home)}, or wipe "
        "its Kafka data on purpose with `deckstream kafka reset` (every document's log goes)."
    )


def cluster_id(home: Path) -> str:
    """The id of the cluster whose data ``home`` keeps, made and recorded on first use.

    Refuses (BrokerHomeMismatch) data that another layout, another cluster or a ZooKeeper-era
    Kafka wrote: starting on it would lose or mix documents.
    """
    record, meta = kafka_dir(home) / CLUSTER_FILE, data_dir(home) / "meta.properties"
    try:
        info = json.loads(record.read_text())
    except FileNotFoundError:
        info = None
    except (OSError, ValueError) as exc:
        raise _refuse(home, f"{record} is unreadable ({exc})") from exc
    if info is not None:
        layout = info.get("layout")
        if layout != LAYOUT:
            age = "a newer" if isinstance(layout, int) and layout > LAYOUT else "an older"
            raise _refuse(
                home,
                f"{record} says {age} deckstream wrote this broker data "
                f"(layout {layout}; this one reads {LAYOUT})",
            )
    if meta.exists():
        props = _properties(meta)
        if props.get("version") == "0" or "broker.id" in props:
            raise _refuse(home, f"{meta} is a ZooKeeper-era Kafka's; Kafka 4 runs KRaft only")
        if info is None:
            raise _refuse(home, f"{data_dir(home)} holds Kafka data deckstream did not record in {record}")
        if props.get("cluster.id") != info.get("cluster_id"):
            raise _refuse(
                home,
                f"{data_dir(home)} belongs to cluster {props.get('cluster.id')}, "
                f"but {record} names cluster {info.get('cluster_id')}",
            )
        return str(info["cluster_id"])
    if info is None:
        if data_dir(home).is_dir() and any(data_dir(home).iterdir()):
            raise _refuse(home, f"{data_dir(home)} holds files but no Kafka metadata")
        info = {"layout": LAYOUT, "cluster_id": _cluster_id(), "created_at": int(time.time())}
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


def _write_properties(run_dir: Path, broker_port: int, log_dirs: Path) -> Path:
    controller_port = free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    props = run_dir / "server.properties"
    text = Template(SERVER_TEMPLATE.read_text()).substitute(
        broker_port=broker_port, controller_port=controller_port, log_dirs=log_dirs
    )
    props.write_text(text)
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
    proc: subprocess.Popen[bytes] | None = None
    log_path = run_dir / "broker.log"
    try:
        broker_port = port if port is not None else free_port()
        props = _write_properties(run_dir, broker_port, data_dir(home))
        if not (data_dir(home) / "meta.properties").exists():
            _format_storage(jvm, props, cluster, timeout_s)
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [*jvm, MAIN_CLASS, str(props)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches us only; we stop the broker
                preexec_fn=die_with_parent if die_with_parent_process else None,
            )
        broker = Broker(f"127.0.0.1:{broker_port}", proc.pid, log_path, run_dir, process=proc)
        _wait_ready(broker, proc, deadline)
    except BaseException as exc:
        tail = _log_tail(log_path)
        if proc is not None:
            terminate(proc, timeout_s=5.0)
        shutil.rmtree(run_dir, ignore_errors=True)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: clean up, then go on
            raise
        raise RuntimeError(f"the Kafka broker did not start: {exc}\n{tail}") from exc
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


# --- topics ------------------------------------------------------------------------------


def ensure_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    partitions: int,
    replication: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create ``specs`` (idempotent) and wait until every one has ``partitions`` led partitions.

    A topic that already exists gets its spec's configs (a new retention or cleanup policy
    reaches a cluster made by an older deckstream). One with another partition count is an
    error: Kafka cannot shrink it, and growing it silently would move keys between partitions.
    """
    specs = list(specs)
    admin = _admin(bootstrap)
    new = [
        NewTopic(s.name, num_partitions=partitions, replication_factor=replication, config=dict(s.config))
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
            if any(p.leader < 0 or p.error is not None for p in topic.partitions.values()):
                return False
        return True

    wait_until(all_ready, timeout_s, interval=0.2, what=f"topics {[s.name for s in specs]} on {bootstrap}")
    _align_configs(admin, [s for s in specs if s.name not in created and s.config], timeout_s)
    log.info("kafka.topics_ready", bootstrap=bootstrap, created=created, partitions=partitions)


def _align_configs(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    """Set each spec's configs on its existing topic (the others stay as they are)."""
    if not specs:
        return
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            spec.name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in spec.config.items()
            ],
        )
        for spec in specs
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


def _read_state_file(path: Path) -> Broker | None:
    try:
        data = json.loads(path.read_text())
        return Broker(
            bootstrap=str(data["bootstrap"]),
            pid=int(data["pid"]),
            log_path=Path(data["log"]),
            run_dir=Path(data.get("run_dir") or data["data_dir"]),  # data_dir: layout 1
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(home: Path, broker: Broker) -> Path:
    """Record ``broker`` in ``home/kafka/broker.json`` (written atomically)."""
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(broker.to_state(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state(home: Path) -> Broker | None:
    """The broker recorded in ``home/kafka/broker.json``, running or not; None without a file."""
    return _read_state_file(state_path(home))


def clear_state(home: Path) -> None:
    state_path(home).unlink(missing_ok=True)


def broker_status(home: Path) -> dict[str, Any] | None:
    """The recorded broker's state if its process is alive and its port answers, else None."""
    broker = read_state(home)
    if broker is None:
        return None
    if not (pid_alive(broker.pid) and is_broker_process(broker.pid) and port_open(broker.host, broker.port)):
        return None
    return {"running": True, **broker.to_state()}
