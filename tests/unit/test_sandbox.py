"""The worker's extraction sandbox: a child started ahead of time, one document per child."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pymupdf
import pytest

from services.domain import ExtractionEnded
from services.extraction import Sandbox, extract, isolated
from services.process import pid_alive, wait_until
from services.settings import LimitSettings


def _pdf(path: Path, pages: int = 3) -> Path:
    doc = pymupdf.open()
    for n in range(pages):
        doc.new_page().insert_text((72, 100), f"Osmosis moves water across membranes. Page {n + 1}.")
    doc.save(path)
    return path


def _children() -> set[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    before = _children()  # session fixtures (broker, LLM server) may be children too
    box = Sandbox(LimitSettings())
    yield box
    box.close()
    assert _children() - before == set()  # close() leaves no child behind


def test_the_spare_child_extracts_the_next_document_and_a_new_one_waits(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = _pdf(tmp_path / "notes.pdf", pages=4)
    sandbox.prepare()
    spare = sandbox.spare_pid
    assert spare is not None and pid_alive(spare)
    assert sandbox.wait_ready()  # its parsers are imported before it has a document
    events = list(sandbox.extract(path, filename="notes.pdf"))
    assert events == list(extract(path, LimitSettings(), filename="notes.pdf"))
    assert not pid_alive(spare)  # it did this document, then exited: one document per child
    assert sandbox.spare_pid not in (None, spare) and pid_alive(sandbox.spare_pid)


def test_a_dead_spare_is_replaced_by_a_cold_child(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.prepare()
    spare = sandbox.spare_pid
    assert spare is not None
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: not pid_alive(spare), 10, interval=0.01, what="the spare to die")
    events = list(sandbox.extract(_pdf(tmp_path / "doc.pdf"), filename="doc.pdf"))
    assert events[-1] == ExtractionEnded("ok", 3)


def test_a_document_with_other_limits_gets_its_own_child(sandbox: Sandbox, tmp_path: Path) -> None:
    path = _pdf(tmp_path / "doc.pdf")
    sandbox.prepare()
    tight = LimitSettings(extract_timeout_s=0.01)
    events = list(sandbox.extract(path, filename="doc.pdf", limits=tight))
    assert events[-1] == ExtractionEnded("failed", 0, "timed out after 0.01 s")  # its limits, not the spare's
    assert list(sandbox.extract(path, filename="doc.pdf"))[-1] == ExtractionEnded("ok", 3)


def test_a_spare_exits_when_its_parent_goes_away() -> None:
    child = isolated._Child(LimitSettings(), warm=True)
    assert child.proc.stdin is not None
    child.proc.stdin.close()  # what the kernel does when the worker dies: EOF, no job
    assert child.proc.wait(timeout=30) == 0
    child.close()


def test_after_close_documents_still_extract_with_no_spare_left(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.prepare()
    spare = sandbox.spare_pid
    assert spare is not None
    sandbox.close()
    assert sandbox.spare_pid is None and not pid_alive(spare)
    assert list(sandbox.extract(_pdf(tmp_path / "doc.pdf"), filename="doc.pdf"))[-1] == ExtractionEnded(
        "ok", 3
    )
    assert sandbox.spare_pid is None
