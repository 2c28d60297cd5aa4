"""Upload-time checks: size, type, encryption, zip bombs, DTDs, page counts.

``check_upload`` reads user bytes, so it runs in the extraction sandbox (``isolated``:
``Sandbox.check``), never in the API process. Even there it reads only what it must: the first
64 KiB, a zip's central directory (its end record first, so a million-entry archive is refused
before ``zipfile`` builds a million objects), each XML part's prolog (up to its root element,
through defusedxml) and a PDF's trailer and page tree. It never parses page content.

Zip rules, all from ``LimitSettings`` and all checked before any XML parser sees the package:
at most ``max_zip_entries`` entries, at most ``max_uncompressed_bytes`` declared in total, no entry
of 1 MiB or more expanding over ``max_compression_ratio`` times, no encrypted entries. ``zipfile``
never returns more than an entry's declared size, so the declared sizes bound what is inflated.

XML parts: OOXML forbids DTDs, and a DTD can only come before the root element, so each part
that looks like XML is fed to defusedxml's parser (``forbid_dtd``: no DTD, no entity declared,
nothing external fetched) until its root element starts. A DTD is an XXE or billion-laughs
attempt; a prolog expat cannot read (UTF-32, a multi-byte legacy encoding: OOXML allows only
UTF-8 and UTF-16) is refused too, since lxml might read it and find a DTD there. python-docx and
python-pptx parse the parts afterwards with lxml ``resolve_entities=False`` (and lxml's defaults
``no_network=True``, ``load_dtd=False``, ``huge_tree=False``): a second line, not the first.
"""

from __future__ import annotations

import re
import struct
import zipfile
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from services.domain import FileKind
from services.errors import CorruptFile, EmptyFile, FileTooLarge, PasswordProtected
from services.settings import LimitSettings

from .sniff import sniff

RATIO_MIN_BYTES = 1024 * 1024
_NOT_MARKUP = b"\xef\xbb\xbf\xfe\xff\x00 \t\r\n"  # BOMs (UTF-8, -16, -32), NULs, whitespace
_SLIDE = re.compile(r"ppt/slides/slide\d+\.xml")


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.0f} MB"


def check_size(path: Path, limits: LimitSettings) -> int:
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("the file is empty (0 bytes)")
    if size > limits.max_upload_bytes:
        raise FileTooLarge(f"the file is {_mb(size)}; the limit is {_mb(limits.max_upload_bytes)}")
    return size


def zip_entry_count(path: Path) -> int | None:
    """Entry count from the end-of-central-directory record (zip64 aware), without zipfile."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 65_557))
        tail = f.read()
        end = tail.rfind(b"PK\x05\x06")
        if end < 0 or len(tail) < end + 22:
            return None
        (entries,) = struct.unpack("<H", tail[end + 10 : end + 12])
        locator = end - 20
        if entries == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
            (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
            f.seek(offset)
            record = f.read(56)
            if record[:4] == b"PK\x06\x06":
                (entries,) = struct.unpack("<Q", record[32:40])
        return int(entries)


def refuse_many_entries(path: Path, limits: LimitSettings) -> None:
    """Before anything builds the zip's directory in memory: too many entries is a refusal."""
    with path.open("rb") as f:
        if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            return
    count = zip_entry_count(path)
    if count is not None and count > limits.max_zip_entries:
        raise FileTooLarge(f"the package has {count} parts; the limit is {limits.max_zip_entries}")


def check_zip(path: Path, limits: LimitSettings) -> list[str]:
    """Apply the zip rules of the module docstring; returns the entry names."""
    refuse_many_entries(path, limits)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > limits.max_zip_entries:
                raise FileTooLarge(
                    f"the package has {len(infos)} parts; the limit is {limits.max_zip_entries}"
                )
            total = sum(i.file_size for i in infos)
            if total > limits.max_uncompressed_bytes:
                raise FileTooLarge(
                    f"the package unpacks to {_mb(total)}; the limit is {_mb(limits.max_uncompressed_bytes)}"
                )
            for info in infos:
                if info.flag_bits & 0x1:
                    raise PasswordProtected("password protected")
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size >= RATIO_MIN_BYTES and ratio > limits.max_compression_ratio:
                    raise FileTooLarge(
                        f"part {info.filename} expands {ratio:.0f}x "
                        f"(limit {limits.max_compression_ratio:.0f}x): refused as a likely zip bomb"
                    )
            for info in infos:
                _refuse_doctype(z, info)
            return [i.filename for i in infos]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise CorruptFile(f"the package is damaged ({e})") from e


class _RootReached(Exception):
    """The prolog is over: no DTD can follow."""


class _UntilRoot:
    """A parser target that builds nothing and stops the parse at the root element."""

    def start(self, tag: str, attrs: object) -> None:
        raise _RootReached

    def close(self) -> None:
        return None


def _refuse_doctype(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """OOXML forbids DTDs; a part that has one is an XXE / billion-laughs attempt. Feeds the part
    to defusedxml until its root element starts (the module docstring)."""
    if info.is_dir():
        return
    with z.open(info) as part:
        chunk = part.read(64 * 1024)
        if not chunk.lstrip(_NOT_MARKUP).startswith(b"<"):
            return  # not XML (media, fonts, embedded files)
        parser = DefusedXMLParser(target=_UntilRoot(), forbid_dtd=True)
        try:
            while chunk:
                parser.feed(chunk)
                chunk = part.read(1024 * 1024)
            parser.close()
        except _RootReached:
            return
        except DefusedXmlException as e:
            raise CorruptFile(
                f"part {info.filename} declares a DTD (<!DOCTYPE>), which Office files never do"
            ) from e
        except (ParseError, ValueError, LookupError) as e:  # ValueError: a multi-byte legacy encoding
            raise CorruptFile(f"part {info.filename} is not readable XML ({str(e)[:120]})") from e


def check_file(path: Path, limits: LimitSettings, *, filename: str | None = None) -> FileKind:
    """``check_upload`` without opening PDFs (``extract`` opens them anyway, with the same checks)."""
    check_size(path, limits)
    refuse_many_entries(path, limits)
    kind = sniff(path, filename=filename)
    if kind in ("docx", "pptx"):
        names = check_zip(path, limits)
        slides = sum(1 for name in names if _SLIDE.fullmatch(name))
        if kind == "pptx" and slides > limits.max_pages:
            raise FileTooLarge(f"the presentation has {slides} slides; the limit is {limits.max_pages}")
    return kind


def check_upload(path: Path, limits: LimitSettings, *, filename: str | None = None) -> FileKind:
    """Cheap checks at upload time; raises InputRejected subclasses with a human reason. It reads
    user bytes: the API runs it in the sandbox (``Sandbox.check``), never in its own process.

    Size and emptiness, type from magic bytes, encryption, legacy formats, zip bombs and DTDs,
    a PDF that opens with at least one page, page/slide counts against ``max_pages``. ``filename``
    (default: the path's name) only matters when its extension contradicts the bytes."""
    kind = check_file(path, limits, filename=filename)
    if kind == "pdf":
        from .pdf import open_pdf  # PyMuPDF is imported only when a PDF shows up

        open_pdf(path, limits).close()
    return kind
