"""documents.uploaded ──► documents.pages (the page ledger) and documents.chunks(.interactive).

Extraction runs in a sandboxed subprocess (services.extraction; the worker keeps one started
ahead of time) and streams pages; each page is published as it arrives and fed to the chunker,
so the first chunk reaches the LLM while the rest of a long book is still being read.
Redelivery repeats the same pages and chunks with the same ids: downstream consumers are
idempotent. Pages and chunks are split by one agent because chunks span pages and a chunker's
carry-over would otherwise need a changelogged table.

A rebalance or a shutdown waits for the upload being split, so between pages the splitter hands
it back (marked with the pages and chunks sent) once the consumer's flow stops; the next one
reads the file again, OCR from the blob store's cache, and sends only the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from typing import Any, TypeVar

import faust
import structlog

from services.documents.chunking import Chunker
from services.domain import Chunk, DocumentOpened, ExtractionEnded, Page
from services.errors import InputRejected
from services.events.models import ChunkCreated, ChunksPlanned, DocumentUploaded, PageExtracted
from services.events.models import ExtractionEnded as ExtractionEndedEvent
from services.storage.blobs import SCHEME
from streams import faust_fixes
from streams.lifecycle import PipelineResources

log = structlog.get_logger(__name__)
T = TypeVar("T")
_END = object()


async def iterate_in_thread(
    make: Callable[[], Iterator[T]], max_items: int = 64, max_wait_s: float = 0.02
) -> AsyncGenerator[T, None]:
    """Drive a blocking iterator from a worker thread, several items per trip.

    Each trip takes the next item, then more until max_wait_s has passed or max_items are in
    (a read that is already under way finishes first): a book's pages do not pay one thread
    round trip each on an event loop that is busy with LLM calls.
    """
    it = make()

    def some() -> list[T]:
        got: list[T] = []
        deadline = time.monotonic() + max_wait_s
        while len(got) < max_items and (not got or time.monotonic() < deadline):
            item = next(it, _END)
            if item is _END:
                break
            got.append(item)  # type: ignore[arg-type]  # not the sentinel
        return got

    try:
        while items := await asyncio.to_thread(some):
            for item in items:
                yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def _attempt(up: DocumentUploaded) -> int:
    """A chunk sent again is not a first attempt: it is worked on even if the document had a
    deck before (a user's retry round), where a redelivered first attempt would be skipped."""
    return 1 if up.replay_chunks else 0


def _chunk_event(up: DocumentUploaded, chunk: Chunk, lane: str) -> ChunkCreated:
    return ChunkCreated(
        **up.ids(),
        chunk_index=chunk.index,
        segments=list(chunk.segments),
        tokens=chunk.tokens,
        content_hash=chunk.content_hash,
        filename=up.filename,
        card_types=up.card_types,
        cards_per_chunk=up.cards_per_chunk,
        lane=lane,
        attempt=_attempt(up),
    )


def register(
    app: faust.App,
    res: PipelineResources,
    uploads: Any,
    pages: Any,
    chunks: Any,
    interactive: Any,
    cards: Any,
) -> Any:
    settings = res.settings

    @app.agent(uploads, concurrency=2)
    async def split_documents(stream: Any) -> None:
        await res.wait_ready()
        async for up in stream:
            if not isinstance(up, DocumentUploaded):
                continue
            await split_one(up)

    async def split_one(up: DocumentUploaded) -> None:
        bound = log.bind(document_id=up.document_id, generation=up.generation)
        if res.is_settled(up.document_id, up.generation, _attempt(up)):
            bound.info("upload skipped: the document is finished or cancelled")
            return
        chunker = Chunker(settings.chunks.max_tokens, settings.chunks.overlap_tokens)
        pages_total: int | None = None
        seen = n_chunks = 0
        lane = interactive if up.size <= settings.chunks.interactive_max_bytes else chunks
        # A reconciliation sends only the chunks the tracker is missing: no pages, no plan.
        replay = frozenset(up.replay_chunks)

        async def emit(new: list[Chunk]) -> None:
            nonlocal n_chunks
            # Chunks sent again are for a document that has waited long enough: no queue for them.
            target = interactive if replay else lane
            name = "interactive" if target is interactive else "bulk"
            for chunk in new:
                if chunk.index >= up.chunks_sent and (not replay or chunk.index in replay):
                    await target.send(key=up.document_id, value=_chunk_event(up, chunk, name))
                n_chunks += 1

        async def hand_back() -> bool:
            """A rebalance or a shutdown waits for the upload this agent holds, and a scanned book
            takes minutes to read. Put it back at the end of its partition, marked with what was
            sent, and see it stored before its offset counts as read. The next splitter (here or
            on another worker) reads the file again, OCR from the cache, and sends the rest."""
            sent = {"pages_sent": max(up.pages_sent, seen), "chunks_sent": max(up.chunks_sent, n_chunks)}
            try:
                await faust_fixes.hand_back(uploads, up.model_copy(update=sent))
            except Exception:
                bound.exception("upload not handed back: it is split here")
                return False
            bound.info("upload handed back", reason="the worker is rebalancing or stopping", **sent)
            return True

        async def split(item: object) -> bool:
            """Send what one extraction event makes; True once the document is split."""
            nonlocal pages_total, seen, lane
            if isinstance(item, DocumentOpened):
                pages_total = item.pages_total
                if pages_total is not None:  # small documents take the interactive lane
                    small = pages_total <= settings.chunks.interactive_max_pages
                    lane = interactive if small else chunks
            elif isinstance(item, Page):
                seen += 1
                if not replay and seen > up.pages_sent:
                    await pages.send(
                        key=up.document_id,
                        value=PageExtracted(
                            **up.ids(),
                            number=item.number,
                            label=item.label,
                            section=list(item.section),
                            text=item.text,
                            method=item.method,
                            reason=item.reason,
                            tokens=item.tokens,
                            pages_total=pages_total,
                        ),
                    )
                await emit(chunker.add(item))
            elif isinstance(item, ExtractionEnded):
                await emit(chunker.finish())
                if replay:
                    bound.info("missing chunks sent again", chunks=sorted(replay))
                    return True
                await cards.send(
                    key=up.document_id,
                    value=ChunksPlanned(**up.ids(), chunks_total=n_chunks, pages_total=item.pages_total),
                )
                await pages.send(
                    key=up.document_id,
                    value=ExtractionEndedEvent(
                        **up.ids(), status=item.status, pages_total=item.pages_total, reason=item.reason
                    ),
                )
                bound.info("document split", pages=item.pages_total, chunks=n_chunks, status=item.status)
                return True
            return False

        try:
            path = res.blobs.path(up.blob_uri)
            ocr_cache = res.blobs.path(f"{SCHEME}ocr/{up.sha256[:2]}/{up.sha256}")
            stopped = faust_fixes.flow_stopped(app)
            items = iterate_in_thread(
                lambda: res.sandbox.extract(path, filename=up.filename, ocr_cache=ocr_cache)
            )
            async with aclosing(items):  # stops the extraction at once when we return early
                async for item in items:
                    if res.is_cancelled(up.document_id, up.generation):
                        bound.info("extraction stopped: document cancelled")
                        return
                    last = isinstance(item, ExtractionEnded)  # finishing costs less than a hand-back
                    if stopped is not None and stopped.done() and not last:
                        if await hand_back():
                            return
                        stopped = None  # it could not be sent: this worker splits the upload itself
                    if await split(item):
                        return
            raise RuntimeError("extraction ended without a final status")
        except InputRejected as exc:
            reason = exc.reason
        except Exception as exc:  # one bad file must never stop the worker
            bound.exception("extraction crashed")
            reason = f"extraction failed: {type(exc).__name__}: {exc}"
        if replay:  # the first extraction's outcome stands; the reconciler will try again
            bound.warning("missing chunks not sent again", reason=reason)
            return
        await cards.send(
            key=up.document_id, value=ChunksPlanned(**up.ids(), chunks_total=n_chunks, pages_total=seen)
        )
        await pages.send(
            key=up.document_id,
            value=ExtractionEndedEvent(**up.ids(), status="failed", pages_total=seen, reason=reason),
        )

    return split_documents
