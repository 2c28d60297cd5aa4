"""The Kafka jars: Apache Kafka 4.x and its runtime dependencies from Maven Central (``pom.xml``
next to this file), copied into a ``lib`` directory by Maven. Maven's own cache (``~/.m2``) makes
every resolution after the first one fast; a stamp of the pom's hash skips Maven altogether."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
_STAMP = ".resolved.json"
_MVN_GOAL = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
_LOG_TAIL_LINES = 60

log = structlog.get_logger(__name__)


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
        log.info(
            "kafka.jars_resolved",
            lib_dir=str(lib_dir),
            jars=len(jars),
            seconds=round(time.monotonic() - started, 2),
        )
    return lib_dir
