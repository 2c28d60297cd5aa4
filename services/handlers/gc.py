"""Collect garbage: the blobs and result-cache entries no kept document of any generation uses.

What documents use, from the log and the store: each upload's file (documents.uploaded keeps
every one forever), the OCR results of its bytes, its cards, page ledger and deck under its id
(any generation), and the cache entries its chunks' cards were read from. Everything else under
the store's root is garbage: files of documents a `kafka reset` forgot, uploads no document
names, cache entries of chunks no kept document has, staged uploads left by a crash.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.documents.decks import chunk_cards
from services.events.models import DocumentUploaded
from services.storage.blobs import STALE_STAGED_S, LocalBlobStore

PER_DOCUMENT = ("cards", "ledgers", "decks", "pages")  # folders named by document id (pages: the page cache)


@dataclass(frozen=True, slots=True)
class Garbage:
    path: Path  # a file or a whole folder
    bytes: int
    why: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _cache_keys(store: LocalBlobStore, documents: set[str]) -> set[str]:
    keys: set[str] = set()
    for document_id in documents:
        for chunk in (store.root / "cards" / document_id).glob("g*/*.json"):
            try:
                _, key = chunk_cards(
                    store.get_json(f"blob://cards/{document_id}/{chunk.parent.name}/{chunk.name}")
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: it keeps nothing
            if key:
                keys.add(key)
    return keys


def find_garbage(store: LocalBlobStore, uploads: Iterable[DocumentUploaded]) -> list[Garbage]:
    """What no document uses. `uploads` must be every upload of the log (all generations)."""
    files, shas, documents = set(), set(), set()
    for up in uploads:
        files.add(store.path(up.blob_uri))
        shas.add(up.sha256)
        documents.add(up.document_id)
    root, found = store.root, []
    for path in sorted((root / "sha256").glob("*/*")):
        if path not in files:
            found.append(Garbage(path, _size(path), "an upload no document names"))
    for path in sorted((root / "ocr").glob("*/*")):
        if path.name not in shas:
            found.append(Garbage(path, _size(path), "OCR results of bytes no document has"))
    for folder in PER_DOCUMENT:
        for path in sorted((root / folder).glob("*")):
            if path.name not in documents:
                found.append(Garbage(path, _size(path), f"{folder} of a document the log does not have"))
    keys = _cache_keys(store, documents)
    for path in sorted((root / "cache" / "cards").glob("*/*.json")):
        if path.stem not in keys:
            found.append(Garbage(path, _size(path), "a cached answer no kept document's cards came from"))
    cutoff = time.time() - STALE_STAGED_S
    for path in sorted((root / "tmp").glob("*")):
        if path.stat().st_mtime < cutoff:
            found.append(Garbage(path, _size(path), "a staged upload a crash left"))
    return found


def delete(garbage: Iterable[Garbage]) -> int:
    """Remove what `find_garbage` found; returns the bytes freed."""
    freed = 0
    for item in garbage:
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.bytes
    return freed
