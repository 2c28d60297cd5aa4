"""Limits and isolation: hostile files are refused or contained, and the caller keeps going."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docx
import pymupdf
import pytest
import typer
from typer.testing import CliRunner

from deckstream.corpus import CORPUS
from deckstream.extract_cli import register
from infra.process import pid_alive, wait_until
from services.domain import DocumentOpened, ExtractionEnded, Page
from services.errors import CorruptFile, FileTooLarge, PasswordProtected
from services.extraction import Sandbox, check_upload, extract, extract_isolated, isolated
from services.extraction import pdf as pdf_reader
from services.settings import LimitSettings
from tests.conftest import corpus_file, scanned_pdf

BOMB = CORPUS / "pdfjs_bomb_giant.pdf"


def _docx(path: Path, extra: dict[str, bytes] | None = None, *, compress: int = zipfile.ZIP_DEFLATED) -> Path:
    document = docx.Document()
    document.add_paragraph("Glycolysis splits glucose into two pyruvate molecules.")
    document.save(str(path))
    if extra:
        with zipfile.ZipFile(path, "a", compression=compress) as z:
            for name, data in extra.items():
                z.writestr(name, data)
    return path


def _pdf(path: Path, pages: int = 3, text: str = "Osmosis moves water across membranes.") -> Path:
    doc = pymupdf.open()
    for n in range(pages):
        doc.new_page().insert_text((72, 100), f"{text} Page {n + 1}.")
    doc.save(path)
    return path


def _end(events: list[DocumentOpened | Page | ExtractionEnded]) -> ExtractionEnded:
    assert isinstance(events[-1], ExtractionEnded)
    return events[-1]


def test_zip_bomb_docx_is_refused_fast_from_the_central_directory(tmp_path: Path) -> None:
    bomb = _docx(tmp_path / "bomb.docx", {"word/media/filler.bin": bytes(64 * 1024 * 1024)})
    assert bomb.stat().st_size < 1024 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(FileTooLarge, match="zip bomb"):
        check_upload(bomb, LimitSettings())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 8 * 1024 * 1024  # nothing was inflated


def test_total_unpacked_size_and_entry_count_are_capped(tmp_path: Path) -> None:
    big = _docx(tmp_path / "big.docx", {"word/media/noise.bin": os.urandom(2 * 1024 * 1024)})
    with pytest.raises(FileTooLarge, match="unpacks to"):
        check_upload(big, LimitSettings(max_uncompressed_bytes=1024 * 1024))
    many = _docx(tmp_path / "many.docx", {f"customXml/item{n}.bin": b"x" for n in range(60)})
    with pytest.raises(FileTooLarge, match="parts; the limit is 40"):
        check_upload(many, LimitSettings(max_zip_entries=40))


def test_docx_with_a_doctype_is_refused_before_any_xml_parser_sees_it(tmp_path: Path) -> None:
    path = _docx(tmp_path / "xxe.docx")
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    evil = b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY lol "lol">]>'
    parts["word/document.xml"] = evil + parts["word/document.xml"].split(b"?>", 1)[1]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    with pytest.raises(CorruptFile, match="DOCTYPE"):
        check_upload(path, LimitSettings())
    with pytest.raises(CorruptFile, match="DOCTYPE"):
        list(extract(path, LimitSettings(), filename="xxe.docx"))


def test_upload_size_and_page_count_are_capped(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "five.pdf", pages=5)
    with pytest.raises(FileTooLarge, match="the limit is"):
        check_upload(path, LimitSettings(max_upload_bytes=100))
    with pytest.raises(FileTooLarge, match="5 pages; the limit is 3"):
        check_upload(path, LimitSettings(max_pages=3))
    with pytest.raises(FileTooLarge, match="5 pages; the limit is 3"):
        list(extract(path, LimitSettings(max_pages=3), filename="five.pdf"))


@pytest.mark.skipif(not (CORPUS / "freeculture_lessig_352p.pdf").exists(), reason="no corpus")
def test_check_upload_is_cheap_for_a_real_book() -> None:
    book = CORPUS / "freeculture_lessig_352p.pdf"
    check_upload(book, LimitSettings())  # warm up imports
    started = time.perf_counter()
    assert check_upload(book, LimitSettings()) == "pdf"
    assert time.perf_counter() - started < 0.25  # ~10 ms here; it must not read page content


def test_page_text_is_capped_and_the_cut_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text(" ".join(["ribosome"] * 400))
    events = list(extract(path, LimitSettings(max_page_chars=200), filename="long.txt"))
    page = events[1]
    assert isinstance(page, Page) and len(page.text) <= 200
    assert page.reason == "text cut at 200 characters"
    assert _end(events).status == "partial"


def test_document_time_limit_accounts_for_the_pages_not_read(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "slow.pdf", pages=6)
    events = list(extract(path, LimitSettings(extract_timeout_s=0), filename="slow.pdf"))
    pages = [e for e in events if isinstance(e, Page)]
    assert [p.number for p in pages] == [1, 2, 3, 4, 5, 6]
    assert pages[0].method == "text"
    assert all("time limit of 0 s was reached" in (p.reason or "") for p in pages[1:])
    assert _end(events).status == "partial"


def _image_only_pdf(path: Path, side: int) -> Path:
    doc = pymupdf.open()
    page = doc.new_page()
    pix = pymupdf.Pixmap(pymupdf.csGRAY, pymupdf.IRect(0, 0, side, side), False)
    pix.clear_with(255)
    page.insert_image(page.rect, pixmap=pix)
    doc.save(path)
    return path


def test_giant_images_are_not_ocred(tmp_path: Path) -> None:
    path = _image_only_pdf(tmp_path / "poster.pdf", 2000)
    events = list(extract(path, LimitSettings(max_image_pixels=1_000_000), filename="poster.pdf"))
    assert isinstance(events[1], Page)
    assert events[1].reason == "image-only page; image too large to OCR (2000x2000 pixels)"
    assert _end(events).status == "failed"


def test_missing_ocr_data_skips_scanned_pages_without_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf_reader, "find_tessdata", lambda language: None)
    path = _image_only_pdf(tmp_path / "scan.pdf", 300)
    events = list(extract(path, LimitSettings(), filename="scan.pdf"))
    assert isinstance(events[1], Page)
    assert (events[1].method, events[1].reason) == ("skipped", "image-only page; OCR unavailable")
    assert _end(events) == ExtractionEnded(
        "failed", 1, "no text could be read (image-only page; OCR unavailable)"
    )


def test_ocr_results_are_kept_per_file_and_read_by_the_next_extraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanned book read again (handed to another worker mid-way, or replayed) is not OCRed again."""
    book = corpus_file("whitehead_introduction-to-mathematics_pg41568.pdf")
    path = scanned_pdf(tmp_path / "scan.pdf", book, range(20, 22))
    cache = tmp_path / "ocr"
    first = list(extract(path, LimitSettings(), filename="scan.pdf", ocr_cache=cache))
    pages = [e for e in first if isinstance(e, Page)]
    assert [p.method for p in pages] == ["ocr", "ocr"] and all(len(p.text) > 500 for p in pages)
    assert len(list(cache.glob("*.json"))) == 2
    assert list(extract_isolated(path, LimitSettings(), filename="scan.pdf", ocr_cache=cache)) == first

    monkeypatch.setattr(pdf_reader, "find_tessdata", lambda language: None)  # no OCR from here on
    assert list(extract(path, LimitSettings(), filename="scan.pdf", ocr_cache=cache)) == first
    coarser = LimitSettings(max_image_pixels=1_200_000)  # OCR at 202 DPI, not 300: not in the cache
    pages = [e for e in extract(path, coarser, filename="scan.pdf", ocr_cache=cache) if isinstance(e, Page)]
    assert [p.reason for p in pages] == ["image-only page; OCR unavailable"] * 2
    sorted(cache.glob("*.json"))[0].write_text('[[72.0, 90.5, 36.0, ["cut sho')  # a write cut short
    pages = [
        e for e in extract(path, LimitSettings(), filename="scan.pdf", ocr_cache=cache) if isinstance(e, Page)
    ]
    assert [p.method for p in pages] == ["skipped", "ocr"]  # to be OCRed again: not an error


@pytest.mark.skipif(not BOMB.exists(), reason="no corpus")
def test_jbig2_bomb_is_read_without_decoding_the_image() -> None:
    started = time.perf_counter()
    events = list(extract(BOMB, LimitSettings(), filename=BOMB.name))
    assert time.perf_counter() - started < 2.0
    assert isinstance(events[1], Page) and "GIANT JBIG2 BOMB" in events[1].text
    isolated = list(extract_isolated(BOMB, LimitSettings(extract_memory_bytes=1024**3), filename=BOMB.name))
    assert _end(isolated).status == "ok"


def test_isolated_extraction_matches_in_process(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "notes.pdf", pages=4)
    assert list(extract_isolated(path, LimitSettings(), filename="notes.pdf")) == list(
        extract(path, LimitSettings(), filename="notes.pdf")
    )


def test_isolated_refusals_come_back_as_the_same_error(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "locked.pdf")
    doc = pymupdf.open(path)
    doc.save(tmp_path / "enc.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    with pytest.raises(PasswordProtected, match=r"^password protected$"):
        list(extract_isolated(tmp_path / "enc.pdf", LimitSettings(), filename="enc.pdf"))


def _big_docx(path: Path, paragraphs: int) -> Path:
    """A DOCX whose body XML needs far more memory to parse than the file's size suggests."""
    _docx(path)
    with zipfile.ZipFile(path) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    rng = random.Random(7)
    body = b"".join(
        b"<w:p><w:r><w:t>%d %d cell</w:t></w:r></w:p>" % (rng.getrandbits(40), n) for n in range(paragraphs)
    )
    xml = parts["word/document.xml"]
    at = xml.index(b"<w:body>") + len(b"<w:body>")
    parts["word/document.xml"] = xml[:at] + body + xml[at:]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("child", ["cold", "spare"])
def test_isolated_memory_limit_fails_the_document_not_the_caller(tmp_path: Path, child: str) -> None:
    limits = LimitSettings(extract_memory_bytes=100 * 1024 * 1024)
    box = Sandbox(limits)  # "spare": every parser does not fit in 100 MB, so the spare restarts cold
    box.prepare()

    def run(path: Path) -> list[DocumentOpened | Page | ExtractionEnded]:
        if child == "cold":
            return list(extract_isolated(path, limits, filename=path.name))
        return list(box.extract(path, filename=path.name))

    try:
        small = _docx(tmp_path / "small.docx")
        assert _end(run(small)).status == "ok"
        huge = _big_docx(tmp_path / "huge.docx", 100_000)  # 1 MB file, ~600 estimated pages
        events = run(huge)
        assert isinstance(events[0], DocumentOpened) and events[0].kind == "docx"
        assert _end(events) == ExtractionEnded("failed", 0, "extraction exceeded the memory limit")
        assert _end(run(small)).status == "ok"  # we carry on
    finally:
        box.close()


def test_a_child_dying_mid_document_keeps_the_pages_it_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dies_after_one_page = """\
import json, os, signal
print(json.dumps(dict(t="opened", kind="pdf", pages_total=3, title=None)), flush=True)
print(json.dumps(dict(t="page", number=1, label="i", section=["Cells"], text="Osmosis", method="text",
                      reason=None, tokens=2)), flush=True)
os.kill(os.getpid(), signal.SIGSEGV)  # limits: {mem} {cpu}
"""
    monkeypatch.setattr(isolated, "_PRELUDE", dies_after_one_page)
    events = list(extract_isolated(_pdf(tmp_path / "doc.pdf"), LimitSettings(), filename="doc.pdf"))
    assert events[1] == Page(1, "i", ("Cells",), "Osmosis", "text", None, 2)
    assert [(p.number, p.method, p.reason) for p in events[2:4] if isinstance(p, Page)] == [
        (2, "skipped", "not read: extraction crashed (SIGSEGV)"),
        (3, "skipped", "not read: extraction crashed (SIGSEGV)"),
    ]
    assert events[-1] == ExtractionEnded(
        "partial", 3, "2 of 3 pages not fully read (2 pages: not read: extraction crashed (SIGSEGV))"
    )


def test_isolated_timeout_kills_the_child_and_reports_it(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "doc.pdf")
    before = set(_children())  # session fixtures (broker, LLM server) may be children too
    events = list(extract_isolated(path, LimitSettings(extract_timeout_s=0.01), filename="doc.pdf"))
    assert _end(events) == ExtractionEnded("failed", 0, "timed out after 0.01 s")
    assert set(_children()) - before == set()


def _children() -> list[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_isolated_streams_pages_and_stopping_early_ends_the_child(tmp_path: Path) -> None:
    path = _pdf(tmp_path / "book.pdf", pages=40)
    before = set(_children())
    stream = extract_isolated(path, LimitSettings(), filename="book.pdf")
    assert isinstance(next(stream), DocumentOpened)
    first = next(stream)
    assert isinstance(first, Page) and first.number == 1
    stream.close()  # the consumer gives up: the child must not outlive it
    assert set(_children()) - before == set()


def test_cli_refusal_is_json_with_exit_code_2(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    lock = tmp_path / "~$lecture.pptx"
    lock.write_bytes(b"\x11Albert N. Hendrix" + b" " * 40)
    result = CliRunner().invoke(app, ["extract", str(lock)])
    assert result.exit_code == 2
    refusal = json.loads(result.stdout)
    assert refusal["status"] == "refused"
    assert refusal["reason"].startswith("the file is named .pptx but is not a PowerPoint file")


def test_a_parser_blowing_up_mid_document_keeps_the_pages_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pdf_reader._read_page

    def explode_on_page_4(doc: object, index: int, *args: object) -> object:
        if index == 3:
            raise RuntimeError("boom")
        return real(doc, index, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pdf_reader, "_read_page", explode_on_page_4)
    events = list(extract(_pdf(tmp_path / "doc.pdf", pages=6), LimitSettings(), filename="doc.pdf"))
    pages = [e for e in events if isinstance(e, Page)]
    assert [p.method for p in pages] == ["text"] * 3 + ["skipped"] * 3
    assert pages[3].reason == "unreadable: extraction stopped (RuntimeError: boom)"
    assert _end(events).status == "partial"


# The worker's sandbox: a child started ahead of time, one document per child.


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    before = set(_children())  # session fixtures (broker, LLM server) may be children too
    box = Sandbox(LimitSettings())
    yield box
    box.close()
    assert set(_children()) - before == set()  # close() leaves no child behind


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
