"""Accept an upload: store the file, check it, publish DocumentUploaded (a claim check: the blob
URI and hash, never the bytes), and show it as queued. Nothing is queued on error.

The check parses the file, so it runs in the extraction sandbox (``Sandbox.check``): this
process only copies bytes and learns the kind or the refusal. The caller's file name is data:
``safe_filename`` makes it a plain display name (no folders, no control characters, no leading
``-`` or dot, at most 255 bytes); it never names a path or an argument.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
import uuid
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from services.cards import language
from services.documents.views import DocumentViews
from services.errors import BlobTooLarge, EmptyFile, FileTooLarge, InvalidOptions
from services.events import topics
from services.events.models import DocumentProgress, DocumentUploaded
from services.events.publisher import EventPublisher
from services.extraction import Sandbox
from services.settings import Settings
from services.storage.blobs import BlobStore

MAX_NAME_BYTES = 255
_UNPRINTABLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, bidi overrides, surrogates, ...
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,16}")


def safe_filename(raw: str | None) -> str:
    """The name to store and show for a caller's file name (see the module docstring); "upload"
    when nothing is left. The extension is kept when the name is cut."""
    name = "".join(
        " " if ch.isspace() else ch
        for ch in unicodedata.normalize("NFC", raw or "")
        if ch.isspace() or unicodedata.category(ch) not in _UNPRINTABLE
    )
    name = " ".join(re.split(r"[/\\]", name)[-1].split())  # the last path part, one space per run
    stem, dot, ext = name.rpartition(".")
    if not dot or not _EXTENSION.fullmatch(ext):
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    stem = stem.lstrip("-. ")
    stem = stem.encode()[: MAX_NAME_BYTES - len(suffix)].decode(errors="ignore").rstrip(". ")
    return (stem or "upload") + suffix


class UploadOptions(BaseModel):
    card_types: list[Literal["basic", "cloze"]] = Field(default=["basic"], min_length=1)
    cards_per_chunk: int = Field(default=4, ge=1, le=20)
    language: str | None = Field(default=None, max_length=32)

    @field_validator("language")
    @classmethod
    def known_language(cls, value: str | None) -> str | None:
        """A language the cards can be written in: a code ("fr", "pt-BR"), a name ("French",
        "français"), or "auto" for the source's own; anything else is refused, not guessed at."""
        if value is None:
            return None
        code = language.requested(value)
        if code is not None and code not in language.NAMES:
            raise ValueError(f"unknown language {value!r}: give a code such as es, fr, de or pt, or auto")
        return code


def parse_options(raw: str | None, settings: Settings) -> UploadOptions:
    """The caller's options over the configured defaults (DECKSTREAM_CARDS_TYPES, _PER_CHUNK)."""
    base = {"card_types": settings.cards.types, "cards_per_chunk": settings.cards.per_chunk}
    try:
        given = json.loads(raw) if raw else {}
        if not isinstance(given, dict):
            raise ValueError("options must be a JSON object")
        return UploadOptions.model_validate({**base, **given})
    except (ValueError, ValidationError) as exc:
        raise InvalidOptions(f"invalid options: {exc}") from exc


class AcceptUpload:
    def __init__(
        self,
        *,
        settings: Settings,
        blobs: BlobStore,
        publisher: EventPublisher,
        views: DocumentViews,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.settings, self.blobs, self.publisher, self.views = settings, blobs, publisher, views
        # build_api passes the API's one sandbox (the page source shares it); the API lifespan
        # starts its spare child (prepare) and stops it (close). Its own only when given none.
        self.sandbox = sandbox or Sandbox(settings.limits)

    async def __call__(
        self, tenant_id: str, file: BinaryIO, filename: str | None, options: str | None
    ) -> DocumentUploaded:
        limits = self.settings.limits
        opts = parse_options(options, self.settings)
        name = safe_filename(filename)
        try:
            staged = await asyncio.to_thread(self.blobs.stage_upload, file, max_bytes=limits.max_upload_bytes)
        except BlobTooLarge as exc:
            raise FileTooLarge(f"the file is larger than the {limits.max_upload_bytes:,}-byte limit") from exc
        try:
            if staged.size == 0:
                raise EmptyFile("the file is empty")
            kind = await asyncio.to_thread(self.sandbox.check, staged.path, filename=name)
        except BaseException:  # refused (or failed): only the staged copy goes
            await asyncio.to_thread(self.blobs.discard, staged)
            raise
        uri = await asyncio.to_thread(self.blobs.keep, staged)
        sha256, size = staged.sha256, staged.size
        event = DocumentUploaded(
            tenant_id=tenant_id,
            document_id=uuid.uuid4().hex,
            generation=self.settings.generation,
            filename=name,
            kind=kind,
            size=size,
            sha256=sha256,
            blob_uri=uri,
            card_types=list(opts.card_types),
            cards_per_chunk=opts.cards_per_chunk,
            language=opts.language,
        )
        await self.publisher.publish(topics.UPLOADED.name, event)
        self.views.register_upload(
            DocumentProgress(
                **event.ids(),
                kind="progress",
                status="queued",
                filename=name,
                created_at=event.occurred_at,
                pages_total=0,
                pages_done=0,
                chunks_total=0,
                chunks_done=0,
                chunks_failed=0,
                cards=0,
                progress=0.0,
            )
        )
        return event
