"""Accept an upload: store the file, check it, publish DocumentUploaded (a claim check: the blob
URI and hash, never the bytes), and show it as queued. Nothing is queued on error."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field, ValidationError

from services.documents.views import DocumentViews
from services.errors import BlobTooLarge, EmptyFile, FileTooLarge, InvalidOptions
from services.events import topics
from services.events.models import DocumentProgress, DocumentUploaded
from services.events.publisher import EventPublisher
from services.extraction import check_upload
from services.settings import Settings
from services.storage.blobs import BlobStore


class UploadOptions(BaseModel):
    card_types: list[Literal["basic", "cloze"]] = Field(default=["basic"], min_length=1)
    cards_per_chunk: int = Field(default=4, ge=1, le=20)
    language: str | None = Field(default=None, max_length=16)


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
        self, *, settings: Settings, blobs: BlobStore, publisher: EventPublisher, views: DocumentViews
    ) -> None:
        self.settings, self.blobs, self.publisher, self.views = settings, blobs, publisher, views

    async def __call__(
        self, tenant_id: str, file: BinaryIO, filename: str | None, options: str | None
    ) -> DocumentUploaded:
        limits = self.settings.limits
        opts = parse_options(options, self.settings)
        try:
            staged = await asyncio.to_thread(self.blobs.stage_upload, file, max_bytes=limits.max_upload_bytes)
        except BlobTooLarge as exc:
            raise FileTooLarge(f"the file is larger than the {limits.max_upload_bytes:,}-byte limit") from exc
        try:
            if staged.size == 0:
                raise EmptyFile("the file is empty")
            kind = await asyncio.to_thread(check_upload, staged.path, limits, filename=filename)
        except BaseException:  # refused (or failed): only the staged copy goes
            await asyncio.to_thread(self.blobs.discard, staged)
            raise
        uri = await asyncio.to_thread(self.blobs.keep, staged)
        sha256, size = staged.sha256, staged.size
        name = (filename or "upload").rsplit("/", 1)[-1][:255]
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
