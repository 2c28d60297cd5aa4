"""CPU time spent during a measured run: the whole machine's, and each process's (Linux /proc).

    with cpu_meter({"worker": pid, "broker": pid}) as used:
        run()
    used.figures(ideal_s)  # core-seconds by process, and the wall-time floor this CPU implies

A process's figure includes the children it has reaped (the worker's extraction sandboxes).
The machine's busy time (all CPUs, /proc/stat) is what the run cost everyone: divided by the
number of cores it is a floor on the wall time, since no schedule runs that much CPU faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.process import proc_stat

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system seconds of pid and its reaped children; None when it is gone."""
    fields = proc_stat(pid)
    return None if fields is None else sum(int(v) for v in fields[11:15]) / _TICK  # utime..cstime


def machine_busy_s() -> float | None:
    """Seconds all CPUs have spent not idle (nor waiting for I/O) since boot."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


@dataclass
class CpuUse:
    cores: int
    wall_s: float = 0.0
    busy_core_s: float | None = None
    by_process: dict[str, float] = field(default_factory=dict)

    def figures(self, ideal_s: float) -> dict[str, Any]:
        """What the run used, and the least wall time (and ratio) that much CPU allows here."""
        out: dict[str, Any] = {
            "cores": self.cores,
            "wall_s": round(self.wall_s, 3),
            "processes_core_s": {k: round(v, 2) for k, v in self.by_process.items()},
        }
        if self.busy_core_s is not None:
            floor = self.busy_core_s / self.cores
            out |= {
                "machine_busy_core_s": round(self.busy_core_s, 2),
                "floor_s": round(floor, 3),
                "ratio_floor": round(floor / ideal_s, 2),
            }
        return out


@contextmanager
def cpu_meter(pids: dict[str, int]) -> Iterator[CpuUse]:
    """Measure the CPU the block costs: each named process's, and the machine's."""
    used = CpuUse(cores=os.cpu_count() or 1)
    before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    busy = machine_busy_s()
    t0 = time.monotonic()
    yield used
    used.wall_s = time.monotonic() - t0
    after_busy = machine_busy_s()
    if busy is not None and after_busy is not None:
        used.busy_core_s = after_busy - busy
    for name, pid in pids.items():
        start, end = before[name], process_cpu_s(pid)
        if start is not None and end is not None:
            used.by_process[name] = end - start
