"""Blob store: uploaded files (content-addressed) and small JSON documents (cards, decks).

Events carry `blob://` URIs, never bytes. The local store keeps files under one folder;
an S3-compatible store can implement the same Protocol later.

An upload is staged first and enters the content-addressed store only once it is accepted
(`keep`): two documents with the same bytes share one file, and a refused upload only ever
removes its own staged copy (`discard`), never a file an accepted document uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from services.errors import BlobTooLarge

SCHEME = "blob://"
STALE_STAGED_S = 24 * 3600  # a staged upload this old was left by a crash (an upload takes seconds)


@dataclass(frozen=True, slots=True)
class Staged:
    """An upload's bytes, hashed, not yet in the store."""

    path: Path
    sha256: str
    size: int


class BlobStore(Protocol):
    def stage_upload(self, src: BinaryIO, *, max_bytes: int) -> Staged: ...
    def keep(self, staged: Staged) -> str: ...
    def discard(self, staged: Staged) -> None: ...
    def put_upload(self, src: BinaryIO, *, max_bytes: int) -> tuple[str, str, int]: ...
    def path(self, uri: str) -> Path: ...
    def put_json(self, key: str, value: Any) -> str: ...
    def get_json(self, uri: str) -> Any: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, uri: str) -> None: ...


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self._made: set[Path] = set()  # folders known to exist: one mkdir per folder, not per write
        self.removed_stale = self._remove_stale_staged()

    def _remove_stale_staged(self) -> int:
        """Staged uploads a crash left behind (old enough that no upload is still writing them)."""
        removed, cutoff = 0, time.time() - STALE_STAGED_S
        for path in (self.root / "tmp").iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:  # another process removed or kept it meanwhile
                continue
        return removed

    def stage_upload(self, src: BinaryIO, *, max_bytes: int) -> Staged:
        """Copy a stream to a staging file, hashing as it goes.

        Raises BlobTooLarge as soon as more than max_bytes arrive; nothing is kept then.
        """
        h, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := src.read(1 << 20):
                    size += len(block)
                    if size > max_bytes:
                        raise BlobTooLarge(max_bytes)
                    h.update(block)
                    out.write(block)
        except BaseException:
            os.unlink(tmp)
            raise
        return Staged(Path(tmp), h.hexdigest(), size)

    def keep(self, staged: Staged) -> str:
        """Move an accepted upload into the store under its hash; returns its URI. The same
        bytes already there stay as they are (the staged copy is identical)."""
        key = f"sha256/{staged.sha256[:2]}/{staged.sha256}"
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)  # atomic: a reader sees the old file or the same bytes
        return SCHEME + key

    def discard(self, staged: Staged) -> None:
        """Remove a refused upload's staged copy (only ever its own)."""
        staged.path.unlink(missing_ok=True)

    def put_upload(self, src: BinaryIO, *, max_bytes: int) -> tuple[str, str, int]:
        """Stage and keep at once; returns (uri, sha256, size)."""
        staged = self.stage_upload(src, max_bytes=max_bytes)
        return self.keep(staged), staged.sha256, staged.size

    def path(self, uri: str) -> Path:
        if not uri.startswith(SCHEME):
            raise ValueError(f"not a blob URI: {uri}")
        key = uri[len(SCHEME) :]
        # Keys are relative paths of plain names: checked lexically, no filesystem calls
        # (symlinks inside the store are ours; nothing outside can be named).
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"blob URI escapes the store: {uri}")
        return self.root.joinpath(*parts)

    def put_json(self, key: str, value: Any) -> str:
        """Write atomically (same key, same content on redelivery: idempotent)."""
        uri = SCHEME + key
        target = self.path(uri)
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            out = open(tmp, "w", encoding="utf-8")  # noqa: SIM115  # closed below
        except FileNotFoundError:  # the folder was removed under us (say, a cache cleared by hand)
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(tmp, "w", encoding="utf-8")  # noqa: SIM115
        with out:  # dumps, not dump: json.dump encodes in pure Python, a piece at a time
            out.write(json.dumps(value, ensure_ascii=False))
        os.replace(tmp, target)
        return uri

    def get_json(self, uri: str) -> Any:
        return json.loads(self.path(uri).read_text())

    def list(self, prefix: str) -> list[str]:
        folder = self.path(SCHEME + prefix)
        if not folder.is_dir():
            return []
        return sorted(SCHEME + f"{prefix}/{p.name}" for p in folder.iterdir() if p.suffix == ".json")

    def delete(self, uri: str) -> None:
        target = self.path(uri)
        if target.is_dir():
            shutil.rmtree(target)
            self._made.clear()
        elif target.exists():
            target.unlink()
