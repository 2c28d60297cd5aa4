"""infra.process: ports, deadline polling and stopping real child processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.process import free_port, pid_alive, terminate, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if the port were taken


def test_wait_until_returns_the_truthy_value() -> None:
    calls = iter([None, 0, "ready"])
    assert wait_until(lambda: next(calls), timeout_s=5, interval=0.01) == "ready"


def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the broker log line"):
        wait_until(lambda: False, timeout_s=0.3, interval=0.05, what="the broker log line")
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0


def test_wait_until_propagates_predicate_errors_at_once() -> None:
    def broken() -> bool:
        raise RuntimeError("child died")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="child died"):
        wait_until(broken, timeout_s=30)
    assert time.monotonic() - started < 1.0


def test_terminate_stops_a_real_child() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    assert pid_alive(proc.pid)
    terminate(proc, timeout_s=5)
    assert proc.returncode == -signal.SIGTERM
    assert not pid_alive(proc.pid)


def test_terminate_escalates_to_sigkill_and_reaches_the_whole_group() -> None:
    # The shell ignores SIGTERM, so only SIGKILL ends it; its `sleep` shares its new session.
    script = "trap '' TERM; sleep 60 & echo $!; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    started = time.monotonic()
    terminate(proc, timeout_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: not pid_alive(grandchild), timeout_s=5, what="the grandchild to exit")
    proc.stdout.close()


def test_terminate_on_an_exited_child_is_a_no_op() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    terminate(proc, timeout_s=1)
    assert proc.returncode == 0


def test_pid_alive_treats_an_unreaped_child_as_gone() -> None:
    proc = subprocess.Popen(["true"])
    wait_until(lambda: not pid_alive(proc.pid), timeout_s=5, what="the zombie to count as gone")
    assert proc.wait() == 0


def test_die_with_parent_stops_the_child_when_its_parent_is_killed() -> None:
    # A middle process starts `sleep` with die_with_parent, reports its pid, then is SIGKILLed:
    # no cleanup code of the middle process runs, only the kernel can stop the sleep.
    middle_code = textwrap.dedent(
        """
        import subprocess, sys, time
        from infra.process import die_with_parent
        child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    middle = subprocess.Popen(
        [sys.executable, "-c", middle_code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    assert pid_alive(child)
    middle.kill()
    middle.wait()
    middle.stdout.close()
    wait_until(lambda: not pid_alive(child), timeout_s=5, what="the orphaned child to die")
