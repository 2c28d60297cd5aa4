"""Upload, list, status, cancel and retry."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field, ValidationError

from api.deps import ApiState, CallerDep, StateDep
from api.hub import DocumentView
from api.problems import Problem
from services.errors import BlobTooLarge, EmptyFile, FileTooLarge, InputRejected
from services.events import topics
from services.events.models import (
    CancelDocument,
    DocumentProgress,
    DocumentUploaded,
    RetryFailedChunks,
    now_ms,
)
from services.extraction import check_upload
from services.settings import CardSettings

router = APIRouter(prefix="/v1/documents", tags=["documents"])
MULTIPART_SLACK = 64 * 1024


class UploadOptions(BaseModel):
    card_types: list[Literal["basic", "cloze"]] = Field(default=["basic"], min_length=1)
    cards_per_chunk: int = Field(default=4, ge=1, le=20)
    language: str | None = Field(default=None, max_length=16)


class Accepted(BaseModel):
    document_id: str
    status: str
    status_url: str
    events_url: str
    deck_url: str


class Status(BaseModel):
    document_id: str
    filename: str
    generation: int
    status: str
    created_at: int
    pages_total: int
    pages_done: int
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    cards: int
    progress: float
    error: str | None
    waiting: str | None = None  # why it is not moving: the LLM is unavailable
    deck_cards: int | None = None  # cards in the assembled deck, after cross-chunk dedup
    failures: list[dict[str, Any]] = []


def status_of(view: DocumentView) -> Status:
    failures = [f.model_dump() for f in view.deck.failures] if view.deck is not None else []
    counters = view.snapshot.model_dump(include=set(Status.model_fields) - {"failures", "deck_cards"})
    return Status(
        **counters, failures=failures, deck_cards=view.deck.cards if view.deck is not None else None
    )


def find(state: ApiState, tenant_id: str, document_id: str) -> DocumentView:
    view = state.hub.docs.get(document_id)
    if view is None or view.snapshot.tenant_id != tenant_id:
        raise Problem(404, f"no document {document_id}", "not-found")
    return view


def _parse_options(raw: str | None, defaults: CardSettings) -> UploadOptions:
    """The caller's options over the configured defaults (DECKSTREAM_CARDS_TYPES, _PER_CHUNK)."""
    base = {"card_types": defaults.types, "cards_per_chunk": defaults.per_chunk}
    try:
        given = json.loads(raw) if raw else {}
        if not isinstance(given, dict):
            raise ValueError("options must be a JSON object")
        return UploadOptions.model_validate({**base, **given})
    except (ValueError, ValidationError) as exc:
        raise Problem(422, f"invalid options: {exc}", "invalid-options") from exc


@router.post(
    "", status_code=202, response_model=Accepted, responses={400: {}, 401: {}, 413: {}, 415: {}, 422: {}}
)
async def upload(
    request: Request,
    response: Response,
    state: StateDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="PDF, DOCX, PPTX, TXT or Markdown")],
    options: Annotated[str | None, Form(description="JSON: card_types, cards_per_chunk, language")] = None,
) -> Accepted:
    """Accept a document; it is queued for extraction and card generation."""
    limits = state.settings.limits
    opts = _parse_options(options, state.settings.cards)
    try:
        uri, sha256, size = await asyncio.to_thread(
            state.blobs.put_upload, file.file, max_bytes=limits.max_upload_bytes
        )
    except BlobTooLarge as exc:
        raise FileTooLarge(f"the file is larger than the {limits.max_upload_bytes:,}-byte limit") from exc
    try:
        if size == 0:
            raise EmptyFile("the file is empty")
        kind = await asyncio.to_thread(check_upload, state.blobs.path(uri), limits, filename=file.filename)
    except InputRejected:
        await asyncio.to_thread(state.blobs.delete, uri)
        raise
    document_id = uuid.uuid4().hex
    filename = (file.filename or "upload").rsplit("/", 1)[-1][:255]
    event = DocumentUploaded(
        tenant_id=caller.tenant_id,
        document_id=document_id,
        generation=state.settings.generation,
        filename=filename,
        kind=kind,
        size=size,
        sha256=sha256,
        blob_uri=uri,
        card_types=list(opts.card_types),
        cards_per_chunk=opts.cards_per_chunk,
        language=opts.language,
    )
    await state.publisher.publish(topics.UPLOADED.name, event)
    state.hub.register_upload(
        DocumentProgress(
            **event.ids(),
            kind="progress",
            status="queued",
            filename=filename,
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
    base = str(request.base_url).rstrip("/")
    response.headers["Location"] = f"{base}/v1/documents/{document_id}"
    return Accepted(
        document_id=document_id,
        status="queued",
        status_url=f"{base}/v1/documents/{document_id}",
        events_url=f"{base}/v1/documents/{document_id}/events",
        deck_url=f"{base}/v1/decks/{document_id}",
    )


@router.get("", response_model=list[Status])
async def list_documents(state: StateDep, caller: CallerDep) -> list[Status]:
    """The caller's documents, newest first."""
    views = [v for v in state.hub.docs.values() if v.snapshot.tenant_id == caller.tenant_id]
    views.sort(key=lambda v: v.snapshot.created_at, reverse=True)
    return [status_of(v) for v in views]


@router.get("/{document_id}", response_model=Status, responses={404: {}})
async def get_status(document_id: str, state: StateDep, caller: CallerDep) -> Status:
    """Status snapshot with absolute counters."""
    return status_of(find(state, caller.tenant_id, document_id))


@router.post("/{document_id}/cancel", status_code=202, response_model=Status, responses={404: {}, 409: {}})
async def cancel(document_id: str, state: StateDep, caller: CallerDep) -> Status:
    """Stop further work; the cards already made are kept."""
    view = find(state, caller.tenant_id, document_id)
    if view.snapshot.status in ("completed", "partial", "failed", "cancelled"):
        raise Problem(409, f"the document is already {view.snapshot.status}", "already-finished")
    s = view.snapshot
    await state.publisher.publish(
        topics.CONTROL.name,
        CancelDocument(
            tenant_id=s.tenant_id, document_id=s.document_id, generation=s.generation, occurred_at=now_ms()
        ),
    )
    return status_of(view)


@router.post("/{document_id}/retry", status_code=202, response_model=Status, responses={404: {}, 409: {}})
async def retry(document_id: str, state: StateDep, caller: CallerDep) -> Status:
    """Run only the failed chunks again."""
    view = find(state, caller.tenant_id, document_id)
    s = view.snapshot
    if s.status not in ("partial", "failed") or s.chunks_failed == 0:
        raise Problem(
            409, "only a partial or failed document with failed chunks can be retried", "nothing-to-retry"
        )
    await state.publisher.publish(
        topics.CONTROL.name,
        RetryFailedChunks(tenant_id=s.tenant_id, document_id=s.document_id, generation=s.generation),
    )
    return status_of(view)


@router.get("/{document_id}/pages", responses={404: {}})
async def page_ledger(document_id: str, state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """The page ledger: every page with its label, section, size, method and why it gave no text."""
    view = find(state, caller.tenant_id, document_id)
    pages = {ev.page.number: ev.page.model_dump() for _, ev in view.events if ev.page is not None}
    s = view.snapshot
    return {
        "document_id": document_id,
        "filename": s.filename,
        "status": s.status,
        "pages_total": s.pages_total,
        "pages": [pages[n] for n in sorted(pages)],
    }
