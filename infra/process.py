"""Small helpers for the child processes we own (the Kafka broker, the llama.cpp server).

Each helper does one thing: pick a free port, tie a child's life to ours, stop a child
politely then firmly, and wait for a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
# Loaded in the parent, at import: a preexec function runs between fork and exec, where
# loading a shared library could deadlock on a lock some other thread held at fork time.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; another process may still win it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: the kernel sends the child SIGTERM when its parent dies.

    Linux only (a no-op elsewhere). The signal follows the *thread* that started the child,
    so start long-lived children from the main thread.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (a zombie, exited but not reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    if fields is None:
        return True  # no procfs: trust kill(0)
    return fields[:1] != ["Z"]


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the state letter first, so
    utime is [11]); None when there is no such file."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()  # the command name is in parentheses, spaces and all


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _own_group(pid: int) -> int | None:
    """The process group of ``pid`` if it leads a group other than ours, else None."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return pgid if pgid == pid and pgid != os.getpgrp() else None


def _signal(pid: int, pgid: int | None, sig: signal.Signals) -> None:
    try:
        if pgid is not None:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 10.0) -> None:
    """Stop a child: SIGTERM, wait up to ``timeout_s``, then SIGKILL; always reaps it.

    A child started with ``start_new_session=True`` leads its own process group; the signals
    then go to the whole group so its own children stop too.
    """
    if proc.poll() is not None:
        return
    pgid = _own_group(proc.pid)
    _signal(proc.pid, pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal(proc.pid, pgid, signal.SIGKILL)
        proc.wait()


def terminate_pid(pid: int, timeout_s: float = 10.0) -> None:
    """Like :func:`terminate` for a process we did not start (found in a state file)."""
    if not pid_alive(pid):
        return
    pgid = _own_group(pid)
    _signal(pid, pgid, signal.SIGTERM)
    try:
        wait_until(lambda: not pid_alive(pid), timeout_s, what=f"pid {pid} to exit after SIGTERM")
    except TimeoutError:
        _signal(pid, pgid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0, what=f"pid {pid} to exit after SIGKILL")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises ``TimeoutError`` naming ``what`` once ``timeout_s`` has passed; exceptions raised by
    the predicate propagate at once (use that to fail fast, e.g. when a child has died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(min(interval, remaining))


def exit_when_orphaned(parent_pid: int, grace_s: float = 10.0, interval: float = 0.5) -> threading.Thread:
    """Watch from a daemon thread: once ``parent_pid`` is gone, give the process ``grace_s``
    to shut down by itself (PR_SET_PDEATHSIG sent it SIGTERM), then end it with ``os._exit``.

    A graceful shutdown can hang when its peers are gone too (a Faust worker committing to a
    broker that died with the same parent); this guarantees no orphan outlives its parent.
    """

    def watch() -> None:
        while pid_alive(parent_pid) and os.getppid() == parent_pid:
            time.sleep(interval)
        time.sleep(grace_s)
        os._exit(3)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> NoReturn:
    """A signal handler that makes SIGTERM (or SIGHUP) stop a command the way Ctrl-C does."""
    raise KeyboardInterrupt
