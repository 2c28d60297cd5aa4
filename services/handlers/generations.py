"""Reprocess documents into new generations, compare a document's generations, promote one.

A reprocessing republishes a document's upload on documents.uploaded with the next generation
(and, if asked, another model or prompt version); the pipeline runs it like an upload, stamping
the generation on everything it emits. No consumer group is rewound: the workers read it as a
new record. Chunks whose result-cache key (text, layout, model, prompt, options) is unchanged
are read from the cache, not sent to the LLM. The generation served by default stays the current
one until a promotion (GenerationPromoted on documents.generations) makes another current.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

from services.cards.prompting import prompt_versions
from services.cards.rules import review_kinds
from services.documents.decks import Deck, kept_generations, load_generation
from services.documents.views import DocumentView, DocumentViews
from services.domain import count_reasons
from services.errors import Conflict, DocumentNotFound, InvalidOptions
from services.events import topics
from services.events.models import DocumentProgress, DocumentUploaded, GenerationPromoted, now_ms
from services.events.publisher import EventPublisher
from services.storage.blobs import BlobStore

FINISHED = ("completed", "partial", "failed", "cancelled")
SERVABLE = ("completed", "partial")  # a failed or cancelled generation is not promoted
_MODEL = re.compile(r"[\w.:/@+-]{1,200}")


def check_overrides(model: str | None, prompt_version: str | None) -> None:
    """Refuse (422) a model name or prompt version no worker could use."""
    if model is not None and not _MODEL.fullmatch(model):
        raise InvalidOptions(f"invalid model name {model!r}")
    if prompt_version is not None and prompt_version not in prompt_versions():
        known = ", ".join(prompt_versions())
        raise InvalidOptions(f"no prompt version {prompt_version!r} (there are: {known})")


def why_not_now(latest: int, snapshot: DocumentProgress | None) -> str | None:
    """Why a document cannot be reprocessed now (its newest generation still runs), or None."""
    if snapshot is None or snapshot.generation < latest:
        return f"generation {latest} has not started yet"
    if snapshot.status not in FINISHED:
        return f"generation {latest} is still {snapshot.status}"
    return None


def next_generation(
    first: DocumentUploaded, generation: int, *, model: str | None, prompt_version: str | None
) -> DocumentUploaded:
    """The upload again, as the start of `generation`: same file and options, new event."""
    return first.model_copy(
        update={
            "event_id": uuid.uuid4().hex,
            "generation": generation,
            "occurred_at": now_ms(),
            "model": model,
            "prompt_version": prompt_version,
            "replay_chunks": [],
            "pages_sent": 0,
            "chunks_sent": 0,
        }
    )


async def reprocess(
    blobs: BlobStore,
    publisher: EventPublisher,
    views: DocumentViews,
    view: DocumentView,
    *,
    model: str | None = None,
    prompt_version: str | None = None,
) -> DocumentUploaded:
    """Start the document's next generation (409 while its newest one runs)."""
    check_overrides(model, prompt_version)
    doc = view.snapshot.document_id
    uploads = views.uploads.get(doc)
    if not uploads:
        raise Conflict("the document's upload is not in the log yet; try again in a moment", "not-in-log")
    latest = max(views.generations(view))
    why = why_not_now(latest, view.snapshot)
    if why is not None:
        raise Conflict(f"cannot reprocess: {why}", "still-running")
    first = uploads[min(uploads)]
    if not await asyncio.to_thread(lambda: blobs.path(first.blob_uri).exists()):
        raise Conflict("the uploaded file is no longer in the blob store", "file-gone")
    event = next_generation(first, latest + 1, model=model, prompt_version=prompt_version)
    await publisher.publish(topics.UPLOADED.name, event)
    views.register_reprocessing(event)  # queued at once: a follower gets this generation's events
    return event


def promotion(
    tenant_id: str, document_id: str, generation: int, deck: Deck | None, by: str
) -> GenerationPromoted:
    """The event that makes `generation` current; refused unless its deck ended completed or partial."""
    if deck is None:
        raise Conflict(f"generation {generation} has no deck yet", "not-assembled")
    if deck.status not in SERVABLE:
        raise Conflict(f"generation {generation} ended {deck.status}: nothing to serve", "not-servable")
    return GenerationPromoted(
        tenant_id=tenant_id, document_id=document_id, generation=generation, promoted_by=by
    )


async def promote(
    blobs: BlobStore, publisher: EventPublisher, views: DocumentViews, view: DocumentView, generation: int
) -> GenerationPromoted:
    """Serve `generation` by default from now on."""
    doc = view.snapshot.document_id
    if generation not in views.generations(view):
        raise DocumentNotFound(f"document {doc} has no generation {generation}")
    deck = await asyncio.to_thread(load_generation, blobs, doc, generation)
    event = promotion(view.snapshot.tenant_id, doc, generation, deck, "api")
    await publisher.publish(topics.GENERATIONS.name, event)
    views.promoted[doc] = generation
    return event


@dataclass(frozen=True, slots=True)
class Generation:
    """What a generation is known by: its upload (None if the log lost it), its deck (None until
    assembled) and, for the newest, its live snapshot."""

    number: int
    upload: DocumentUploaded | None
    deck: Deck | None
    live: DocumentProgress | None


def row(g: Generation, current: int) -> dict[str, Any]:
    """One generation's line of the comparison: how it was made and what it gave."""
    summary = g.deck.summary if g.deck is not None else {}
    requested = {
        "model": g.upload.model if g.upload else None,
        "prompt_version": g.upload.prompt_version if g.upload else None,
    }
    out: dict[str, Any] = {
        "generation": g.number,
        "current": g.number == current,
        "status": g.deck.status if g.deck else (g.live.status if g.live else "unfinished"),
        "model": summary.get("model") or requested["model"],
        "prompt_version": summary.get("prompt_version"),
        "requested": requested,  # what the reprocessing asked for (None: the worker's own)
        "started_at": g.upload.occurred_at if g.upload else summary.get("created_at"),
        "finished_at": summary.get("finished_at"),
    }
    if g.deck is None:  # running (or never finished): the live counters, nothing yet to compare
        live = g.live
        return out | {
            "cards": live.cards if live else None,
            "pages_total": live.pages_total if live else None,
            "chunks_total": live.chunks_total if live else None,
            "chunks_failed": live.chunks_failed if live else None,
            "progress": live.progress if live else None,
        }
    cards = g.deck.cards
    return out | {
        "cards": len(cards),
        "needs_review": sum(c.needs_review for c in cards),
        "needs_review_by_reason": count_reasons(k for c in cards for k in review_kinds(c)),
        "dropped": g.deck.dropped,
        "dropped_by_reason": g.deck.dropped_by_reason,
        "duplicates_removed": g.deck.duplicates_removed,
        "pages_total": summary.get("pages_total"),
        "pages_covered": len({c.page for c in cards}),
        "chunks_total": summary.get("chunks_total"),
        "chunks_failed": summary.get("chunks_failed"),
        "progress": 1.0,
    }


def compare_generations(
    blobs: BlobStore,
    document_id: str,
    *,
    uploads: dict[int, DocumentUploaded],
    live: DocumentProgress | None,
    current: int,
) -> dict[str, Any]:
    """Every generation of a document side by side, oldest first (file I/O: call in a thread).

    `uploads` are its upload and reprocessings by generation, `live` its newest snapshot."""
    numbers = sorted({*uploads, *kept_generations(blobs, document_id), *([live.generation] if live else [])})
    gens = [
        Generation(
            n,
            uploads.get(n),
            load_generation(blobs, document_id, n),
            live if live is not None and n == live.generation else None,
        )
        for n in numbers
    ]
    first = uploads[min(uploads)] if uploads else None
    return {
        "document_id": document_id,
        "filename": live.filename if live else (first.filename if first else None),
        "current": current,
        "latest": numbers[-1] if numbers else None,
        "generations": [row(g, current) for g in gens],
    }


async def compare(blobs: BlobStore, views: DocumentViews, view: DocumentView) -> dict[str, Any]:
    """The API's comparison of a document's generations, from its views."""
    s = view.snapshot
    return await asyncio.to_thread(
        compare_generations,
        blobs,
        s.document_id,
        uploads=dict(views.uploads.get(s.document_id, {})),
        live=s,
        current=views.current(view),
    )
