"""File type comes from the bytes: lying extensions, legacy and encrypted Office, text encodings."""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

import docx
import pptx
import pymupdf
import pytest

from services.errors import EmptyFile, PasswordProtected, UnsupportedFileType
from services.extraction.sniff import OLE_MAGIC, sniff
from services.extraction.text import decode_text


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _pdf_bytes(text: str = "Mitochondria make ATP") -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), text)
    data: bytes = doc.tobytes()
    return data


def _docx(path: Path, text: str = "Cells divide by mitosis.") -> Path:
    document = docx.Document()
    document.add_paragraph(text)
    document.save(str(path))
    return path


def _pptx(path: Path) -> Path:
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[0]).shapes.title.text = "Osmosis"
    deck.save(str(path))
    return path


def test_pdf_is_found_even_behind_junk_and_a_wrong_extension(tmp_path: Path) -> None:
    path = _write(tmp_path, "notes.docx", b"Some junk before the header\n" + _pdf_bytes())
    assert sniff(path) == "pdf"


def test_docx_named_doc_is_read_as_docx(tmp_path: Path) -> None:
    assert sniff(_docx(tmp_path / "syllabus.doc")) == "docx"


def test_pptx_and_docx_are_told_apart_by_their_main_part(tmp_path: Path) -> None:
    assert sniff(_pptx(tmp_path / "deck.docx")) == "pptx"
    assert sniff(_docx(tmp_path / "essay.pptx")) == "docx"


def test_pptx_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "~$lecture.pptx", b"Albert N. Hendrix" + b" " * 40)
    with pytest.raises(UnsupportedFileType, match=r"named \.pptx but is not a PowerPoint file"):
        sniff(path)


def test_office_lock_file_is_binary_even_without_a_name(tmp_path: Path) -> None:
    owner = "Albert N. Hendrix"
    lock = b"\x11" + owner.encode().ljust(54) + b"\x11\x00" + owner.ljust(54).encode("utf-16-le")
    with pytest.raises(UnsupportedFileType, match="NUL bytes"):
        sniff(_write(tmp_path, "blob-7f3a", lock))


@pytest.mark.parametrize(
    ("member", "reason"),
    [("xl/workbook.xml", "Excel"), ("content.xml", "OpenDocument"), ("notes.txt", "zip archive")],
)
def test_other_zips_are_refused_with_what_they_are(tmp_path: Path, member: str, reason: str) -> None:
    path = tmp_path / "upload.docx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, "<x/>")
    with pytest.raises(UnsupportedFileType, match=reason):
        sniff(path)


def _ole(*streams: str) -> bytes:
    body = b"".join(name.encode("utf-16-le") + b"\x00\x00" + b"\x00" * 60 for name in streams)
    return OLE_MAGIC + b"\x00" * 504 + body


def test_encrypted_office_file_is_password_protected(tmp_path: Path) -> None:
    path = _write(tmp_path, "exam.docx", _ole("EncryptionInfo", "EncryptedPackage"))
    with pytest.raises(PasswordProtected, match="password protected"):
        sniff(path)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ("WordDocument", "legacy Word 97-2003 .doc is not supported; save it as .docx"),
        ("PowerPoint Document", "legacy PowerPoint 97-2003 .ppt"),
        ("Workbook", "legacy Excel .xls"),
    ],
)
def test_legacy_office_is_refused_with_a_way_out(tmp_path: Path, stream: str, reason: str) -> None:
    path = _write(tmp_path, "old.doc", _ole("Root Entry", stream))
    with pytest.raises(UnsupportedFileType, match=reason):
        sniff(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmptyFile):
        sniff(_write(tmp_path, "empty.pdf", b""))


def test_images_and_rtf_are_refused(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    with pytest.raises(UnsupportedFileType, match="image/png"):
        sniff(_write(tmp_path, "scan.txt", png))
    with pytest.raises(UnsupportedFileType, match="RTF"):
        sniff(_write(tmp_path, "notes.txt", b"{\\rtf1\\ansi hello}"))


def test_binary_with_nuls_is_not_text(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileType, match="NUL"):
        sniff(_write(tmp_path, "data.txt", b"abc\x00\x01\x02\x03def\x00\x00\x07" * 50))


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (codecs.BOM_UTF8 + "Zellkern – Größe".encode(), "Zellkern – Größe"),
        (codecs.BOM_UTF16_LE + "Célula eucariota".encode("utf-16-le"), "Célula eucariota"),
        (codecs.BOM_UTF16_BE + "Célula eucariota".encode("utf-16-be"), "Célula eucariota"),
        ("Noyau cellulaire et mitochondrie".encode("utf-16-le"), "Noyau cellulaire et mitochondrie"),
        ("Plain UTF-8: naïve café".encode(), "Plain UTF-8: naïve café"),
        ("Kurz gefasst 10€. Schüler lernen.".encode("cp1252"), "Kurz gefasst 10€. Schüler lernen."),
        (
            "Übung für Schüler und Lehrer, sehr schön.".encode("latin-1"),
            "Übung für Schüler und Lehrer, sehr schön.",
        ),
        ("Привет, как дела? Это тест кодировки.".encode("cp1251"), "Привет, как дела? Это тест кодировки."),
    ],
)
def test_text_encodings_decode(tmp_path: Path, encoded: bytes, expected: str) -> None:
    assert sniff(_write(tmp_path, "notes.txt", encoded)) == "text"
    assert decode_text(encoded) == expected
