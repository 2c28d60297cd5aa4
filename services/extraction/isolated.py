"""Extraction in a subprocess, so a pathological file can only take down that subprocess.

The child (``worker.main``) starts under ``RLIMIT_AS`` = ``extract_memory_bytes`` and
``RLIMIT_CPU`` ≈ the time limit, set before it imports any parser, and streams one JSON object
per line as pages are produced: the parent yields page 1 while page 300 is still being parsed.
The parent reads with a wall-clock deadline (``extract_timeout_s`` plus a small grace; the child
itself stops at ``extract_timeout_s`` between pages) and kills the child's process group at it.

If the child dies or is killed mid-way, the parent yields the pages it got, then every remaining
page as skipped with the reason, then ExtractionEnded ("partial" if any text was read, else
"failed"). Refusals raised in the child are re-raised here as the same class and reason.
Overhead: one interpreter start plus the imports the format needs, ~0.15 s per document
(``python -m bench extract``); the pipeline pays it once per document, not per page.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.domain import DocumentOpened, ExtractionEnded, Page
from services.errors import (
    CorruptFile,
    EmptyFile,
    FileTooLarge,
    InputRejected,
    PasswordProtected,
    UnsupportedFileType,
)
from services.settings import LimitSettings

from .sniff import sniff
from .worker import Event, ledger_end, page_label

REPO_ROOT = Path(__file__).resolve().parents[2]
REFUSALS: dict[str, type[InputRejected]] = {
    cls.__name__: cls
    for cls in (InputRejected, EmptyFile, FileTooLarge, UnsupportedFileType, PasswordProtected, CorruptFile)
}
_MEMORY_HINTS = (
    "MemoryError",
    "bad_alloc",
    "Cannot allocate memory",
    "out of memory",
    "failed to map segment",
)
_PRELUDE = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu} + 5))
from services.extraction.worker import main
sys.exit(main())
"""


def _grace(timeout: float) -> float:
    return min(timeout * 0.2, 10.0) + 0.1


def _death_reason(returncode: int, stderr: str, timeout: float | None) -> str:
    if timeout is not None:
        return f"timed out after {timeout:g} s"
    if any(hint in stderr for hint in _MEMORY_HINTS):
        return "extraction exceeded the memory limit"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        if sig == signal.SIGXCPU:
            return "extraction exceeded the CPU time limit"
        if sig == signal.SIGKILL:
            return "extraction was killed (out of memory?)"
        return f"extraction crashed ({sig.name})"
    last = stderr.strip().splitlines()[-1][:200] if stderr.strip() else "no output"
    return f"extraction failed (exit code {returncode}): {last}"


class _Child:
    """The running worker: JSON messages from stdout until EOF or the deadline."""

    def __init__(self, path: Path, limits: LimitSettings, filename: str, tables: bool) -> None:
        timeout = limits.extract_timeout_s
        self.deadline = time.monotonic() + timeout + _grace(timeout)
        self.timed_out = False
        self.stderr = b""
        prelude = _PRELUDE.format(
            mem=int(limits.extract_memory_bytes), cpu=math.ceil(timeout + _grace(timeout)) + 1
        )
        cmd = [
            sys.executable,
            "-c",
            prelude,
            str(path),
            "--filename",
            filename,
            "--limits",
            limits.model_dump_json(),
            "--deadline",
            repr(time.time() + timeout),
        ]
        if tables:
            cmd.append("--tables")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    def messages(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        selector.register(self.proc.stderr, selectors.EVENT_READ)
        buffer = b""
        with selector:
            while selector.get_map():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.timed_out = True
                    self.kill()
                    return
                for key, _ in selector.select(timeout=min(remaining, 1.0)):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.fileobj is self.proc.stderr:
                        self.stderr = (self.stderr + data)[-8192:]
                    else:
                        buffer += data
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            yield json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def close(self) -> int:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def extract_isolated(
    path: Path, limits: LimitSettings, *, filename: str, tables: bool = False
) -> Iterator[Event]:
    """``extract`` in a resource-limited subprocess; same events, same refusals (module docstring)."""
    kind = sniff(path, filename=filename)  # bytes only; fills in DocumentOpened if the child dies early
    child = _Child(path, limits, filename, tables)
    opened: DocumentOpened | None = None
    pages: list[Page] = []
    error: str | None = None
    try:
        try:
            for message in child.messages():
                tag = message.pop("t")
                if tag == "opened":
                    opened = DocumentOpened(**message)
                    yield opened
                elif tag == "page":
                    pages.append(Page(**{**message, "section": tuple(message["section"])}))
                    yield pages[-1]
                elif tag == "ended":
                    yield ExtractionEnded(**message)
                    return
                elif tag == "rejected":
                    raise REFUSALS.get(message["error"], InputRejected)(message["reason"])
                else:
                    error = str(message.get("reason"))
        except (ValueError, TypeError, KeyError):
            error = "extraction produced unreadable output"
        returncode = child.close()
        if error and any(hint in error for hint in _MEMORY_HINTS):
            error = "extraction exceeded the memory limit"
        why = error or _death_reason(
            returncode,
            child.stderr.decode(errors="replace"),
            limits.extract_timeout_s if child.timed_out else None,
        )
        if opened is None:
            opened = DocumentOpened(kind, None)
            yield opened
        received = len(pages)
        for number in range(received + 1, (opened.pages_total or 0) + 1):
            pages.append(Page(number, page_label(kind, number), (), "", "skipped", f"not read: {why}"))
            yield pages[-1]
        end = ledger_end(pages, [] if len(pages) > received else [why])
        yield ExtractionEnded(end.status, end.pages_total, why if end.status == "failed" else end.reason)
    finally:
        child.kill()
        child.close()
