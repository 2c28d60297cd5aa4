"""`python -m bench soak --minutes N`: a steady stream of corpus uploads while the worker and
the broker are SIGKILLed and restarted at random.

The stack is a broker of its own (its data kept under the run's home, so a restart finds it),
`deckstream llm sim`, a worker and the API. Uploads go out every `--every` seconds; every
20-40 s (seeded) either the worker or the broker is killed and started again. After the soak,
every accepted document must end: reports completed, lost (accepted, never ended: must be 0),
duplicated cards in decks (must be 0), upload latency p50/p99, uploads refused while the broker
was down, and the API's and the last worker's memory (RSS) after warm-up and at the end.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import TERMINAL, TOKEN, start_sim
from deckstream.client import DeckstreamClient
from deckstream.corpus import CORPUS
from deckstream.stack import Stack, start_stack, start_worker_for
from infra.kafka.launcher import start_broker
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from services.settings import Settings

FILES = [
    "bee4750_syllabus.docx",
    "py4e_Pythonlearn-10-Tuples.pptx",
    "bee4750_hw01_julia-intro.pdf",
    "py4e_Pythonlearn-03-Conditional_slides.pdf",
    "docling_powerpoint_sample.pptx",
]
SIM = SimConfig(latency_s=0.05, capacity=8, tokens_per_s=0.0)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else -1.0


class Uploads(threading.Thread):
    """Uploads corpus files one after another, `every` seconds apart, until stopped."""

    def __init__(self, api_url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.api_url, self.every, self.stop = api_url, every, threading.Event()
        self.accepted: dict[str, float] = {}  # document id -> upload latency (s)
        self.refused: list[str] = []  # no 202 (the broker was down): the client knows, nothing lost

    def run(self) -> None:
        with httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            i = 0
            while not self.stop.wait(self.every):
                path = CORPUS / FILES[i % len(FILES)]
                i += 1
                t0 = time.monotonic()
                try:
                    r = http.post("/v1/documents", files={"file": (path.name, path.read_bytes())}, timeout=60)
                except httpx.HTTPError as exc:
                    self.refused.append(type(exc).__name__)
                    continue
                if r.status_code == 202:
                    self.accepted[r.json()["document_id"]] = time.monotonic() - t0
                else:
                    self.refused.append(str(r.status_code))


def chaos(stack: Stack, home: Path, rng: random.Random) -> str:
    """Kill the worker or the broker (SIGKILL) and start it again; says which."""
    if rng.random() < 0.5:
        [worker] = [p for p in stack.children if "worker" in p.args and p.poll() is None]
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        stack.children.remove(worker)
        log = stack.logs / "worker.log"
        log.rename(stack.logs / f"worker-killed-{time.monotonic_ns()}.log")
        start_worker_for(stack)
        return "worker"
    broker = stack.broker
    assert broker is not None and broker.process is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.process.wait(timeout=10)
    stack.broker = start_broker(home, port=broker.port, timeout_s=120)
    return "broker"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between uploads")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(sys.argv[2:])
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    sim, sim_url = start_sim(SIM)
    stack: Stack | None = None
    try:
        settings = Settings.model_validate(
            {
                "home": home,
                "llm": {
                    "url": sim_url,
                    "model": "deckstream-sim",
                    "profile": "chat",
                    "max_in_flight": SIM.capacity,
                },
                "api": {"port": 0, "token": TOKEN},
            }
        )
        stack = start_stack(settings, api=True)
        assert stack.api_url is not None
        client = DeckstreamClient(stack.api_url, TOKEN, timeout_s=60)
        warm = client.upload(CORPUS / FILES[0]).json()["document_id"]
        wait_until(lambda: client.status(warm)["status"] in TERMINAL, 120, interval=0.2, what="warm-up")
        api_pid = stack.pids["api"]
        start_rss = {"api": rss_mb(api_pid), "worker": rss_mb(stack.pids["worker"])}

        uploads = Uploads(stack.api_url, args.every)
        uploads.start()
        kills: list[str] = []
        deadline = time.monotonic() + args.minutes * 60
        api_rss: list[tuple[int, float | None]] = []  # (documents accepted, the API's RSS): its trend
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, rng.uniform(20, 40)))  # the soak's pace, not a wait for a condition
            api_rss.append((len(uploads.accepted), rss_mb(api_pid)))
            if time.monotonic() < deadline:
                kills.append(chaos(stack, home, rng))
        uploads.stop.set()
        uploads.join(timeout=120)

        def ended() -> dict[str, Any] | None:
            states = {d: client.status(d) for d in uploads.accepted}
            running = [d for d, s in states.items() if s["status"] not in TERMINAL]
            return None if running else states

        try:
            final = wait_until(ended, 600, interval=1.0, what="every accepted document to end")
        except TimeoutError:
            final = {d: client.status(d) for d in uploads.accepted}
        [worker] = [p for p in stack.children if "worker" in p.args and p.poll() is None]
        end_rss = {"api": rss_mb(api_pid), "worker": rss_mb(worker.pid)}
        duplicated = 0
        for doc in uploads.accepted:
            ids = [c["card_id"] for c in client.deck(doc).json()["cards"]]
            duplicated += len(ids) - len(set(ids))
        latencies = list(uploads.accepted.values())
        statuses = [s["status"] for s in final.values()]
        result = {
            "bench": "soak",
            "minutes": args.minutes,
            "kills": {"worker": kills.count("worker"), "broker": kills.count("broker")},
            "accepted": len(uploads.accepted),
            "refused_while_down": len(uploads.refused),
            "completed": statuses.count("completed"),
            "partial": statuses.count("partial"),
            "failed": statuses.count("failed"),
            "lost": sum(s not in TERMINAL for s in statuses),
            "duplicated_cards": duplicated,
            "upload_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else -1,
            "upload_p99_ms": round(_pct(latencies, 99) * 1000, 1),
            "rss_mb": {"after_warm_up": start_rss, "end": end_rss, "worker_restarted": "worker" in kills},
            "api_rss_mb_by_documents": api_rss,
            # Why documents did not complete: what to look into.
            "not_completed": [
                {
                    "file": s["filename"],
                    "status": s["status"],
                    "error": s["error"],
                    "failures": s["failures"][:3],
                }
                for s in final.values()
                if s["status"] != "completed"
            ],
        }
        client.close()
    finally:
        if stack is not None:
            stack.stop()
        terminate(sim)
        shutil.rmtree(home, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
