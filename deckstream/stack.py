"""Start and stop the whole local stack in order: broker, LLM server, Faust worker, API.

Every part is a child process that dies with us (PR_SET_PDEATHSIG), so Ctrl-C or a crash of
`deckstream up` leaves no orphan Java or llama.cpp process. Parts already configured by
settings (DECKSTREAM_KAFKA_BOOTSTRAP, DECKSTREAM_LLM_URL) are used instead of started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from infra.kafka.admin import ensure_topics
from infra.kafka.launcher import Broker, start_broker, stop_broker
from infra.process import die_with_parent, free_port, terminate, wait_until
from services.events import topics
from services.settings import Settings

WORKER_READY = b"Ready"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these (resolved) settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECKSTREAM_")}
    data = settings.model_dump(mode="python")
    for name, value in data.items():
        key = f"DECKSTREAM_{name.upper()}"
        env[key] = json.dumps(value, default=_plain) if isinstance(value, dict) else str(value)
    return env


def _plain(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


@dataclass
class Stack:
    settings: Settings  # resolved: bootstrap and LLM URL filled in
    logs: Path
    broker: Broker | None = None
    llm: Any = None  # infra.llm.server.RunningServer
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # by name ("worker", "worker-2", "api")
    api_url: str | None = None
    worker_metrics: dict[str, str] = field(default_factory=dict)  # each worker's /metrics URL, by name

    def spawn(self, name: str, *args: str, settings: Settings | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "deckstream", *args, "--parent", str(os.getpid())],
            env=settings_env(settings or self.settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.children.append(proc)
        taken = sum(1 for known in self.pids if known == name or known.startswith(f"{name}-"))
        self.pids[f"{name}-{taken + 1}" if taken else name] = proc.pid
        return proc

    def stop(self) -> None:
        for proc in reversed(self.children):
            terminate(proc, timeout_s=20.0)
        self.children.clear()
        if self.llm is not None:
            self.llm.stop()
            self.llm = None
        if self.broker is not None:
            stop_broker(self.broker)
            self.broker = None


def start_broker_for(stack: Stack) -> None:
    s = stack.settings
    if not s.kafka.bootstrap:
        stack.broker = start_broker(s.home, heap=s.kafka.heap, timeout_s=s.kafka.startup_timeout_s)
        s.kafka.bootstrap = stack.broker.bootstrap
    ensure_topics(s.kafka.bootstrap, topics.ALL, s.kafka.partitions, s.kafka.replication)


def start_llm_for(stack: Stack) -> None:
    s = stack.settings
    if s.llm.url:
        return
    from infra.llm.server import start_local_llm

    stack.llm = start_local_llm(
        s.llm.model,
        cache=s.home / "models",
        n_parallel=s.llm.n_parallel,
        ctx_per_slot=s.llm.ctx_per_slot,
        threads=s.llm.threads or (os.cpu_count() or 2),
    )
    s.llm.url = stack.llm.url


def start_worker_for(stack: Stack, timeout_s: float = 180.0) -> subprocess.Popen[bytes]:
    log = stack.logs / "worker.log"
    offset = log.stat().st_size if log.exists() else 0  # a restarted worker appends to the same log
    # Its /metrics: on DECKSTREAM_WORKER_METRICS_PORT if set (the first worker), else a free port.
    own = stack.settings.model_copy(deep=True)
    if own.worker.metrics_port is None or stack.worker_metrics:
        own.worker.metrics_port = free_port()
    proc = stack.spawn("worker", "worker", settings=own)
    name = next(n for n, pid in stack.pids.items() if pid == proc.pid)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with log.open("rb") as f:
            f.seek(offset)
            return WORKER_READY in f.read()

    wait_until(ready, timeout_s, interval=0.2, what="the Faust worker to report Ready")
    stack.worker_metrics[name] = f"http://{own.worker.metrics_host}:{own.worker.metrics_port}/metrics"
    return proc


def start_api_for(stack: Stack, timeout_s: float = 60.0) -> str:
    port = stack.settings.api.port or free_port()
    stack.settings.api.port = port
    proc = stack.spawn("api", "api", "--port", str(port))
    url = f"http://{stack.settings.api.host}:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the API exited with {proc.returncode}:\n{(stack.logs / 'api.log').read_text()[-3000:]}"
            )
        try:
            return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout_s, interval=0.2, what=f"the API at {url} to be ready")
    stack.api_url = url
    return url


def start_stack(settings: Settings, *, api: bool) -> Stack:
    """Everything but (optionally) the API; on any failure, what started is stopped."""
    resolved = settings.model_copy(deep=True)
    logs = resolved.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(resolved, logs)
    try:
        start_broker_for(stack)
        start_llm_for(stack)
        start_worker_for(stack)
        if api:
            start_api_for(stack)
    except BaseException:
        stack.stop()
        raise
    return stack
