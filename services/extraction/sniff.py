"""What a file really is, from its bytes; the name only matters when it contradicts them.

%PDF- in the first 1 KiB        -> pdf (junk before the header is legal)
PK zip with word/document.xml   -> docx   (whatever the extension says: a .doc may be DOCX)
PK zip with ppt/presentation.xml-> pptx
OLE/CFB (D0 CF 11 E0)           -> encrypted OOXML: PasswordProtected; else legacy Office: refused
anything filetype recognises    -> refused (images, archives, executables, ...)
decodable text                  -> text, unless the name claims a binary format (.pptx, .pdf, ...)
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePath

import filetype

from services.domain import FileKind
from services.errors import CorruptFile, EmptyFile, PasswordProtected, UnsupportedFileType

from .text import looks_like_text

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
TEXT_SAMPLE = 64 * 1024
SUPPORTED = "upload a PDF, Word (.docx), PowerPoint (.pptx), text, Markdown or subtitle file"

OOXML_MAIN = {"word/document.xml": "docx", "ppt/presentation.xml": "pptx"}
OTHER_ZIPS = {
    "xl/workbook.xml": "Excel workbooks are not supported; export the sheet as PDF",
    "content.xml": "OpenDocument files are not supported; save it as .docx or PDF",
}
BINARY_SUFFIXES = {
    ".pdf": "PDF",
    ".docx": "Word",
    ".doc": "Word",
    ".pptx": "PowerPoint",
    ".ppt": "PowerPoint",
    ".xlsx": "Excel",
    ".xls": "Excel",
    ".odt": "OpenDocument",
    ".zip": "zip",
}
_OLE_STREAMS = (  # UTF-16LE directory entry names -> reason
    ("WordDocument", "legacy Word 97-2003 .doc is not supported; save it as .docx"),
    ("PowerPoint Document", "legacy PowerPoint 97-2003 .ppt is not supported; save it as .pptx"),
    ("Workbook", "legacy Excel .xls is not supported; export the sheet as PDF"),
    ("Book", "legacy Excel .xls is not supported; export the sheet as PDF"),
)


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-le")


def sniff(path: Path, *, filename: str | None = None) -> FileKind:
    """The kind of file at ``path``; raises InputRejected subclasses for what we do not read."""
    with path.open("rb") as f:
        head = f.read(TEXT_SAMPLE)
    if not head:
        raise EmptyFile("the file is empty (0 bytes)")
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(OLE_MAGIC):
        raise _ole_refusal(path)
    if head.lstrip()[:5].lower() == b"{\\rtf":
        raise UnsupportedFileType("RTF is not supported; save it as .docx or PDF")
    guess = filetype.guess(head)
    if guess is not None:
        raise UnsupportedFileType(f"{guess.mime} files are not supported; {SUPPORTED}")
    suffix = PurePath(filename or path.name).suffix.lower()
    if suffix in BINARY_SUFFIXES:
        fmt = BINARY_SUFFIXES[suffix]
        raise UnsupportedFileType(f"the file is named {suffix} but is not a {fmt} file (no {fmt} signature)")
    reason = looks_like_text(head, complete=len(head) < TEXT_SAMPLE)
    if reason:
        raise UnsupportedFileType(f"{reason}; {SUPPORTED}")
    return "text"


def guess_kind(path: Path, *, filename: str | None = None) -> FileKind:
    """What the file most likely is, from its first KiB and its name alone, parsing nothing (no
    zip directory): for a process outside the sandbox that needs a kind before the child says.
    ``sniff`` decides; this never refuses."""
    with path.open("rb") as f:
        head = f.read(1024)
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith(ZIP_MAGICS):
        return "pptx" if PurePath(filename or path.name).suffix.lower() in (".pptx", ".ppt") else "docx"
    return "text"


def _sniff_zip(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CorruptFile(f"the file is a damaged zip package ({e})") from e
    for part, kind in OOXML_MAIN.items():
        if part in names:
            return "docx" if kind == "docx" else "pptx"
    for part, reason in OTHER_ZIPS.items():
        if part in names:
            raise UnsupportedFileType(reason)
    raise UnsupportedFileType(f"a zip archive that is not a Word or PowerPoint document; {SUPPORTED}")


def _ole_refusal(path: Path) -> UnsupportedFileType | PasswordProtected:
    """OLE/CFB containers: encrypted OOXML (Office 'Encrypt with password') or legacy binary Office."""
    with path.open("rb") as f:
        data = f.read(8 * 1024 * 1024)  # directory sectors sit well inside this for any real file
    if _utf16("EncryptedPackage") in data or _utf16("EncryptionInfo") in data:
        return PasswordProtected("password protected")
    for stream, reason in _OLE_STREAMS:
        if _utf16(stream) + b"\x00\x00" in data:
            return UnsupportedFileType(reason)
    return UnsupportedFileType("legacy Office (OLE) files are not supported; save it as .docx or .pptx")
