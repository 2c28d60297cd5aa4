"""Extraction in a subprocess, so a pathological file can only take down that subprocess.

The child (``ledger.main``) starts under ``RLIMIT_AS`` = ``extract_memory_bytes`` and
``RLIMIT_CPU`` ≈ the time limit, set before it imports any parser, and streams one JSON object
per line as pages are produced: the parent yields page 1 while page 300 is still being parsed.
The parent reads with a wall-clock deadline (``extract_timeout_s`` plus a small grace; the child
itself stops at ``extract_timeout_s`` between pages) and kills the child's process group at it.

If the child dies or is killed mid-way, the parent yields the pages it got, then every remaining
page as skipped with the reason, then ExtractionEnded ("partial" if any text was read, else
"failed"). Refusals raised in the child are re-raised here as the same class and reason.
A cold child costs one interpreter start plus the imports the format needs (~0.3 s with
PyMuPDF; ``python -m bench extract``) before its first page. A long-lived process (the worker)
uses a :class:`Sandbox`, which keeps one child started ahead of time with every parser imported
and waiting for its job on stdin: a document's extraction then starts at once. Each child still
extracts one document only, so nothing a hostile file did to one child reaches the next.

The upload check runs here too (``Sandbox.check``, ``check_isolated``): the API process never
parses a user's file, it only learns the kind or the refusal. A check has at most
``limits.check_timeout_s``; a check the child did not finish (killed, out of memory, timed out) refuses
the file (422), as the extraction of such a file would fail. Rendering a page for the page
beside a card (``Sandbox.render``, ``render.render_page``) runs here the same way, with at most
``RENDER_TIMEOUT_S``.

The parent reads only the first KiB of a file itself (``guess_kind``: magic bytes and the name,
no zip directory); every parser runs in the child. The file's name reaches the child as data
(``--filename=NAME``, the path after ``--``), so a name like ``-x.pdf`` is never an option.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.domain import DocumentOpened, ExtractionEnded, FileKind, Page
from services.errors import (
    CorruptFile,
    DocumentNotFound,
    EmptyFile,
    FileTooLarge,
    InputRejected,
    PasswordProtected,
    UnsupportedFileType,
)
from services.settings import LimitSettings

from .ledger import READY, Event, ledger_end, page_label
from .render import RenderedPage, RenderJob
from .sniff import guess_kind

RENDER_TIMEOUT_S = 30.0  # one page to an image: a second for a normal page; more is a hostile one
KINDS: tuple[FileKind, ...] = ("pdf", "docx", "pptx", "text")
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
from services.extraction.ledger import serve
sys.exit(serve(warm={warm}))
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
    """One extraction subprocess: started (limits set, maybe parsers imported), then given one
    job on stdin, then read as JSON messages from stdout until EOF or the deadline."""

    def __init__(self, limits: LimitSettings, *, warm: bool = False) -> None:
        self.limits = limits
        self.deadline = math.inf  # set when the job is given
        self.timeout = limits.extract_timeout_s
        self.timed_out = False
        self.stderr = b""
        timeout = limits.extract_timeout_s
        prelude = _PRELUDE.format(
            mem=int(limits.extract_memory_bytes), cpu=math.ceil(timeout + _grace(timeout)) + 1, warm=warm
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", prelude],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )

    def usable_for(self, limits: LimitSettings) -> bool:
        return self.limits == limits and self.proc.poll() is None

    def start(
        self,
        path: Path,
        filename: str,
        tables: bool,
        ocr_cache: Path | None = None,
        *,
        check: bool = False,
        render: RenderJob | None = None,
    ) -> None:
        """Give the child its one job; the deadline runs from now, not from when it started.
        Every value is one ``--option=value`` word and the path comes after ``--``: a file
        named ``-x.pdf`` is data, never an option."""
        timeout = self.limits.extract_timeout_s
        if check or render is not None:
            timeout = min(timeout, self.limits.check_timeout_s if check else RENDER_TIMEOUT_S)
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout + _grace(timeout)
        argv = [f"--filename={filename}", f"--limits={self.limits.model_dump_json()}"]
        argv += [f"--deadline={time.time() + timeout!r}", *(["--tables"] if tables else [])]
        argv += [f"--ocr-cache={ocr_cache}"] if ocr_cache is not None else []
        argv += ["--check"] if check else []
        if render is not None:
            argv += [f"--render={render.number}", f"--width={render.width}", f"--png={render.png}"]
        argv += ["--", str(path)]
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(argv).encode() + b"\n")
            self.proc.stdin.close()
        except BrokenPipeError:  # it died before the job: messages() sees EOF, close() says why
            pass

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for a warm child's READY line (before its job): True once its parsers are in."""
        assert self.proc.stdout is not None
        got = b""
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while len(got) < len(READY) and (remaining := deadline - time.monotonic()) > 0:
                if selector.select(timeout=remaining):
                    data = os.read(self.proc.stdout.fileno(), len(READY) - len(got))
                    if not data:
                        return False  # it died (or restarted cold: no READY line)
                    got += data
        return got == READY

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
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def stop(self) -> None:
        """Kill it at once (whatever it is doing) and reap it."""
        self.kill()
        self.close()


def extract_isolated(
    path: Path, limits: LimitSettings, *, filename: str, tables: bool = False, ocr_cache: Path | None = None
) -> Iterator[Event]:
    """``extract`` in a resource-limited subprocess; same events, same refusals (module docstring)."""
    yield from _run(_Child(limits), path, filename=filename, tables=tables, ocr_cache=ocr_cache)


def check_isolated(path: Path, limits: LimitSettings, *, filename: str) -> FileKind:
    """``check_upload`` in a resource-limited subprocess: the kind, or the same refusal."""
    return _check(_Child(limits), path, filename=filename)


class Sandbox:
    """``extract_isolated`` for a long-lived process, with one child kept started ahead of time.

    The spare child has its limits set and every parser imported, and waits for its job on
    stdin; a new spare is started when a document's extraction is over (not during it, where
    its start-up would compete with the extraction for CPU). With no spare ready (documents
    extracted at the same time, other limits, a spare that died), a child is started cold, as
    ``extract_isolated`` does. ``close`` stops the spare; a spare whose parent dies sees EOF on
    stdin and exits.
    """

    def __init__(self, limits: LimitSettings) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._spare: _Child | None = None
        self._closed = False
        self._warm = False  # prepare() was called: keep a spare from then on

    @property
    def spare_pid(self) -> int | None:
        """The process id of the child waiting for the next document, if there is one."""
        spare = self._spare
        return spare.proc.pid if spare is not None else None

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Wait until the spare child has its parsers imported (benchmarks and tests; it holds
        back ``extract`` meanwhile). False if there is no spare or it is not warm in time."""
        with self._lock:
            return self._spare is not None and self._spare.wait_ready(timeout_s)

    def prepare(self) -> None:
        """Start the spare child if there is none (and keep one ready after each job from now on)."""
        with self._lock:
            self._warm = True
            if self._spare is None and not self._closed:
                self._spare = _Child(self.limits, warm=True)

    def _take(self, limits: LimitSettings) -> _Child:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.usable_for(limits):
            return spare
        if spare is not None:
            spare.stop()
        return _Child(limits)

    def extract(
        self,
        path: Path,
        *,
        filename: str,
        limits: LimitSettings | None = None,
        tables: bool = False,
        ocr_cache: Path | None = None,
    ) -> Iterator[Event]:
        try:
            child = self._take(limits or self.limits)
            yield from _run(child, path, filename=filename, tables=tables, ocr_cache=ocr_cache)
        finally:
            self.prepare()

    def check(self, path: Path, *, filename: str, limits: LimitSettings | None = None) -> FileKind:
        """``check_isolated`` in the spare child (an upload check, in the API process)."""
        try:
            return _check(self._take(limits or self.limits), path, filename=filename)
        finally:
            if self._warm:
                self.prepare()

    def render(
        self, path: Path, job: RenderJob, *, filename: str, limits: LimitSettings | None = None
    ) -> RenderedPage:
        """Render one PDF page in the spare child (``render.render_page``): the image is written
        to ``job.png``; its size and words come back. A page past the end is ``DocumentNotFound``
        (code ``no-such-page``); refusals as ``check``; a page the child did not finish (out of
        memory, CPU, ``RENDER_TIMEOUT_S``) is an ``InputRejected`` saying why."""
        try:
            return _render(self._take(limits or self.limits), path, job, filename=filename)
        finally:
            if self._warm:
                self.prepare()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.stop()


def _run(
    child: _Child, path: Path, *, filename: str, tables: bool, ocr_cache: Path | None = None
) -> Iterator[Event]:
    try:
        kind = guess_kind(path, filename=filename)  # for DocumentOpened if the child dies early
    except BaseException:
        child.stop()
        raise
    child.start(path, filename, tables, ocr_cache)
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
                elif tag == "ready":  # a warm child's greeting nobody waited for
                    continue
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
            child.timeout if child.timed_out else None,
        )
        if opened is None:
            opened = DocumentOpened(kind, None)
            yield opened
        received = len(pages)
        for number in range(received + 1, (opened.pages_total or 0) + 1):
            pages.append(Page(number, page_label(opened.kind, number), (), "", "skipped", f"not read: {why}"))
            yield pages[-1]
        end = ledger_end(pages, [] if len(pages) > received else [why])
        yield ExtractionEnded(end.status, end.pages_total, why if end.status == "failed" else end.reason)
    finally:
        child.stop()


def _check(child: _Child, path: Path, *, filename: str) -> FileKind:
    try:
        child.start(path, filename, False, check=True)
        error: str | None = None
        try:
            for message in child.messages():
                tag = message.get("t")
                if tag == "checked" and message.get("kind") in KINDS:
                    return next(kind for kind in KINDS if kind == message["kind"])
                if tag == "rejected":
                    raise REFUSALS.get(message["error"], InputRejected)(message["reason"])
                if tag == "error":
                    error = str(message.get("reason"))
                elif tag != "ready":  # a warm child's greeting nobody waited for
                    error = "the check produced unexpected output"
        except (ValueError, TypeError, KeyError):
            error = "the check produced unreadable output"
        returncode = child.close()
        if error and any(hint in error for hint in _MEMORY_HINTS):
            error = "extraction exceeded the memory limit"
        why = error or _death_reason(
            returncode, child.stderr.decode(errors="replace"), child.timeout if child.timed_out else None
        )
        raise InputRejected(f"the file could not be checked: {why}")
    finally:
        child.stop()


def _render(child: _Child, path: Path, job: RenderJob, *, filename: str) -> RenderedPage:
    try:
        child.start(path, filename, False, render=job)
        error: str | None = None
        try:
            for message in child.messages():
                tag = message.get("t")
                if tag == "rendered":
                    return RenderedPage.from_json(message)
                if tag == "no-page":
                    total = int(message["pages_total"])
                    raise DocumentNotFound(f"no page {job.number}: the document has {total}", "no-such-page")
                if tag == "rejected":
                    raise REFUSALS.get(message["error"], InputRejected)(message["reason"])
                if tag == "error":
                    error = str(message.get("reason"))
                elif tag != "ready":  # a warm child's greeting nobody waited for
                    error = "rendering produced unexpected output"
        except (ValueError, TypeError, KeyError):
            error = "rendering produced unreadable output"
        returncode = child.close()
        if error and any(hint in error for hint in _MEMORY_HINTS):
            error = "rendering exceeded the memory limit"
        why = error or _death_reason(
            returncode, child.stderr.decode(errors="replace"), child.timeout if child.timed_out else None
        )
        raise InputRejected(f"the page could not be rendered: {why}")
    finally:
        child.stop()
