"""Upload, list, status, page ledger, cancel and retry, reprocess and promote: services.handlers.upload,
.documents, .control, .generations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field

from api.deps import CallerDep, DocumentDep, PartsDep
from api.problems import responses
from services.documents.views import DocumentView, DocumentViews
from services.handlers import control, generations
from services.handlers import documents as queries

router = APIRouter(prefix="/v1/documents", tags=["documents"])


class Accepted(BaseModel):
    document_id: str
    status: str
    status_url: str
    events_url: str
    deck_url: str


class Status(BaseModel):
    document_id: str
    filename: str
    generation: int  # the newest generation, whose progress this is
    current_generation: int  # the one served by default (GET /v1/decks/{id})
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
    finished_at: int | None = None  # when the newest generation's deck was assembled (ms)
    failures: list[dict[str, Any]] = []


def status_of(views: DocumentViews, view: DocumentView) -> Status:
    failures = [f.model_dump() for f in view.deck.failures] if view.deck is not None else []
    fields = set(Status.model_fields) - {"failures", "deck_cards", "current_generation", "finished_at"}
    newest = view.deck is not None and view.deck.generation == view.snapshot.generation
    return Status(
        **view.snapshot.model_dump(include=fields),
        current_generation=views.current(view),
        failures=failures,
        deck_cards=view.deck.cards if view.deck is not None else None,
        finished_at=view.deck.occurred_at if view.deck is not None and newest else None,
    )


class Reprocess(BaseModel):
    model: str | None = Field(None, description="the model to write cards with (default: the worker's)")
    prompt_version: str | None = Field(None, description="e.g. v2 (default: the worker's)")


class Reprocessing(BaseModel):
    document_id: str
    generation: int
    status: str
    status_url: str
    events_url: str
    generations_url: str


class Promote(BaseModel):
    generation: int = Field(ge=1)


@router.post(
    "",
    status_code=202,
    response_model=Accepted,
    responses=responses(400, 401, 403, 411, 413, 415, 422, 429),
)
async def upload(
    request: Request,
    response: Response,
    parts: PartsDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="PDF, DOCX, PPTX, TXT or Markdown")],
    options: Annotated[str | None, Form(description="JSON: card_types, cards_per_chunk, language")] = None,
) -> Accepted:
    """Accept a document; it is queued for extraction and card writing. The key, the declared
    size and type and the tenant's upload limits are checked from the headers: those refusals
    (401, 411, 413, 415, 429) come before the body is read. A file then refused does not count
    against the uploads per minute."""
    event = await parts.upload(caller.tenant_id, file.file, file.filename, options)
    base = f"{str(request.base_url).rstrip('/')}/v1"
    response.headers["Location"] = f"{base}/documents/{event.document_id}"
    return Accepted(
        document_id=event.document_id,
        status="queued",
        status_url=f"{base}/documents/{event.document_id}",
        events_url=f"{base}/documents/{event.document_id}/events",
        deck_url=f"{base}/decks/{event.document_id}",
    )


@router.get("", response_model=list[Status], responses=responses(401))
async def list_documents(parts: PartsDep, caller: CallerDep) -> list[Status]:
    """The caller's documents, newest first."""
    return [status_of(parts.views, v) for v in queries.list_documents(parts.views, caller.tenant_id)]


@router.get("/{document_id}", response_model=Status, responses=responses(401, 404))
async def get_status(view: DocumentDep, parts: PartsDep) -> Status:
    """Status snapshot with absolute counters."""
    return status_of(parts.views, view)


@router.post(
    "/{document_id}/cancel", status_code=202, response_model=Status, responses=responses(401, 404, 409)
)
async def cancel(view: DocumentDep, parts: PartsDep) -> Status:
    """Stop further work; the cards already made are kept."""
    await control.cancel(parts.publisher, view)
    return status_of(parts.views, view)


@router.post(
    "/{document_id}/retry", status_code=202, response_model=Status, responses=responses(401, 404, 409)
)
async def retry(view: DocumentDep, parts: PartsDep) -> Status:
    """Run only the failed chunks again."""
    await control.retry_failed(parts.publisher, view)
    return status_of(parts.views, view)


@router.get("/{document_id}/pages", responses=responses(401, 404))
async def page_ledger(view: DocumentDep, parts: PartsDep) -> dict[str, Any]:
    """The page ledger: every page with its label, section, size, method and why it gave no text."""
    return await queries.page_ledger(parts.blobs, view)


@router.post(
    "/{document_id}/reprocess",
    status_code=202,
    response_model=Reprocessing,
    responses=responses(401, 404, 409, 422),
)
async def reprocess(
    request: Request, view: DocumentDep, parts: PartsDep, body: Reprocess | None = None
) -> Reprocessing:
    """Start a new generation from the kept upload, optionally with another model or prompt
    version. The current generation keeps serving until one is promoted."""
    body = body or Reprocess()
    event = await generations.reprocess(
        parts.blobs, parts.publisher, parts.views, view, model=body.model, prompt_version=body.prompt_version
    )
    base = f"{str(request.base_url).rstrip('/')}/v1/documents/{event.document_id}"
    return Reprocessing(
        document_id=event.document_id,
        generation=event.generation,
        status="queued",
        status_url=base,
        events_url=f"{base}/events",
        generations_url=f"{base}/generations",
    )


@router.get("/{document_id}/generations", responses=responses(401, 404))
async def list_generations(view: DocumentDep, parts: PartsDep) -> dict[str, Any]:
    """Every generation side by side: cards, cards to check, dropped by reason, duplicates,
    pages covered, model and prompt version."""
    return await generations.compare(parts.blobs, parts.views, view)


@router.post("/{document_id}/promote", responses=responses(401, 404, 409, 422))
async def promote(body: Promote, view: DocumentDep, parts: PartsDep) -> dict[str, Any]:
    """Serve this generation by default from now on."""
    await generations.promote(parts.blobs, parts.publisher, parts.views, view, body.generation)
    return {"document_id": view.snapshot.document_id, "current": body.generation}
