"""`deckstream up` starts every part and Ctrl-C stops them all: no orphan Java or llama.cpp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from infra.process import free_port, wait_until
from tests.conftest import TOKEN

pytestmark = [pytest.mark.kafka, pytest.mark.llm]


def test_up_serves_the_api_and_ctrl_c_leaves_no_orphans(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECKSTREAM_")}
    env.update(
        {
            "DECKSTREAM_HOME": str(tmp_path),
            "DECKSTREAM_LLM_MODEL": "gemma3-270m",
            "DECKSTREAM_API_TOKEN": TOKEN,
            "DECKSTREAM_LLM_N_PARALLEL": "1",
        }
    )
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "deckstream", "up", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def ready() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 240, interval=0.5, what="deckstream up to be ready")
        children = psutil.Process(up.pid).children(recursive=True)
        commands = " ".join(" ".join(c.cmdline()) for c in children)
        assert "kafka.Kafka" in commands and "infra.llm.server" in commands and "worker" in commands
        r = httpx.get(f"http://127.0.0.1:{port}/v1/documents", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == []
        out = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}" in out and TOKEN in out

        up.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        assert up.wait(timeout=90) == 0 or up.returncode in (-signal.SIGINT, 130)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"orphans left: {[p.cmdline() for p in alive]}"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
