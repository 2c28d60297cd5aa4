"""Split an upload: documents.uploaded ──► documents.pages (the page ledger) and
documents.chunks(.interactive).

Extraction runs in a sandboxed subprocess (services.extraction; the worker keeps one started
ahead of time) and streams pages; each page is emitted as it arrives and fed to the chunker,
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
from typing import TypeVar

import structlog

from services.documents.chunking import Chunker
from services.documents.ledger import store_ledger
from services.documents.settled import SettledDocuments
from services.domain import Chunk, DocumentOpened, ExtractionEnded, Page
from services.errors import InputRejected
from services.events import topics
from services.events.models import ChunkCreated, ChunksPlanned, DocumentUploaded, PageExtracted, PageInfo
from services.events.models import ExtractionEnded as ExtractionEndedEvent
from services.extraction import Sandbox
from services.handlers import Emit, HandBack, Send
from services.settings import ChunkSettings
from services.storage.blobs import SCHEME, BlobStore

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
        model=up.model,
        prompt_version=up.prompt_version,
        language=up.language,
    )


class _Split:
    """One upload's split: what each extraction event makes, and what has been sent."""

    def __init__(self, up: DocumentUploaded, cfg: ChunkSettings) -> None:
        self.up, self.cfg = up, cfg
        self.chunker = Chunker(cfg.max_tokens, cfg.overlap_tokens)
        self.pages_total: int | None = None
        self.seen = self.n_chunks = 0
        self.ledger: list[PageInfo] = []  # every page read, also those sent before a hand-back
        self.small = up.size <= cfg.interactive_max_bytes
        # A reconciliation sends only the chunks the tracker is missing: no pages, no plan.
        self.replay = frozenset(up.replay_chunks)

    def chunks(self, new: list[Chunk]) -> list[Emit]:
        up, out = self.up, list[Emit]()
        # Chunks sent again are for a document that has waited long enough: no queue for them.
        interactive = bool(self.replay) or self.small
        topic = topics.CHUNKS_INTERACTIVE if interactive else topics.CHUNKS
        lane = "interactive" if interactive else "bulk"
        for chunk in new:
            if chunk.index >= up.chunks_sent and (not self.replay or chunk.index in self.replay):
                out.append(Send(topic, _chunk_event(up, chunk, lane)))
            self.n_chunks += 1
        return out

    def marked(self) -> DocumentUploaded:
        """The upload marked with what was sent, to hand back."""
        up = self.up
        sent = {
            "pages_sent": max(up.pages_sent, self.seen),
            "chunks_sent": max(up.chunks_sent, self.n_chunks),
        }
        return up.model_copy(update=sent)

    def take(self, item: object) -> tuple[list[Emit], bool]:
        """What one extraction event makes, and whether the document is now split."""
        up = self.up
        if isinstance(item, DocumentOpened):
            self.pages_total = item.pages_total
            if item.pages_total is not None:  # small documents take the interactive lane
                self.small = item.pages_total <= self.cfg.interactive_max_pages
            return [], False
        if isinstance(item, Page):
            self.seen += 1
            self.ledger.append(
                PageInfo(
                    number=item.number,
                    label=item.label,
                    section=list(item.section),
                    method=item.method,
                    reason=item.reason,
                    chars=len(item.text),
                    tokens=item.tokens,
                )
            )
            out: list[Emit] = []
            if not self.replay and self.seen > up.pages_sent:
                page = PageExtracted(
                    **up.ids(),
                    number=item.number,
                    label=item.label,
                    section=list(item.section),
                    text=item.text,
                    method=item.method,
                    reason=item.reason,
                    tokens=item.tokens,
                    pages_total=self.pages_total,
                )
                out.append(Send(topics.PAGES, page))
            return out + self.chunks(self.chunker.add(item)), False
        if isinstance(item, ExtractionEnded):
            out = self.chunks(self.chunker.finish())
            if self.replay:
                log.info("missing chunks sent again", document_id=up.document_id, chunks=sorted(self.replay))
                return out, True
            plan = ChunksPlanned(**up.ids(), chunks_total=self.n_chunks, pages_total=item.pages_total)
            ended = ExtractionEndedEvent(
                **up.ids(), status=item.status, pages_total=item.pages_total, reason=item.reason
            )
            log.info(
                "document split",
                document_id=up.document_id,
                pages=item.pages_total,
                chunks=self.n_chunks,
                status=item.status,
            )
            return [*out, Send(topics.CARDS, plan), Send(topics.PAGES, ended)], True
        return [], False

    def failed(self, reason: str) -> list[Emit]:
        up = self.up
        return [
            Send(topics.CARDS, ChunksPlanned(**up.ids(), chunks_total=self.n_chunks, pages_total=self.seen)),
            Send(
                topics.PAGES,
                ExtractionEndedEvent(**up.ids(), status="failed", pages_total=self.seen, reason=reason),
            ),
        ]


class SplitUpload:
    """Emits an upload's pages and chunks as extraction streams them. Once `stopped` is done (the
    worker is rebalancing or stopping) it yields a HandBack of the upload marked with what was
    sent; the caller stops iterating once that is stored, or goes on if it could not be."""

    def __init__(
        self, *, blobs: BlobStore, sandbox: Sandbox, settled: SettledDocuments, chunks: ChunkSettings
    ) -> None:
        self.blobs, self.sandbox, self.settled, self.cfg = blobs, sandbox, settled, chunks

    async def __call__(
        self, up: DocumentUploaded, stopped: asyncio.Future[None] | None
    ) -> AsyncGenerator[Emit, None]:
        bound = log.bind(document_id=up.document_id, generation=up.generation)
        if self.settled.is_settled(up.document_id, up.generation, _attempt(up)):
            bound.info("upload skipped: the document is finished or cancelled")
            return
        split = _Split(up, self.cfg)
        try:
            path = self.blobs.path(up.blob_uri)
            ocr_cache = self.blobs.path(f"{SCHEME}ocr/{up.sha256[:2]}/{up.sha256}")
            items = iterate_in_thread(
                lambda: self.sandbox.extract(path, filename=up.filename, ocr_cache=ocr_cache)
            )
            async with aclosing(items):  # stops the extraction at once when we return early
                async for item in items:
                    if self.settled.is_cancelled(up.document_id, up.generation):
                        bound.info("extraction stopped: document cancelled")
                        return
                    last = isinstance(item, ExtractionEnded)  # finishing costs less than a hand-back
                    if stopped is not None and stopped.done() and not last:
                        stopped = None  # if the hand-back cannot be sent, this worker splits it itself
                        yield HandBack(split.marked())
                    out, done = split.take(item)
                    if done and not split.replay:  # the ledger before the events that end it
                        await self._keep_ledger(split)
                    for emit in out:
                        yield emit
                    if done:
                        return
            raise RuntimeError("extraction ended without a final status")
        except InputRejected as exc:
            reason = exc.reason
        except Exception as exc:  # one bad file must never stop the worker
            bound.exception("extraction crashed")
            reason = f"extraction failed: {type(exc).__name__}: {exc}"
        if split.replay:  # the first extraction's outcome stands; the reconciler will try again
            bound.warning("missing chunks not sent again", reason=reason)
            return
        await self._keep_ledger(split)
        for emit in split.failed(reason):
            yield emit

    async def _keep_ledger(self, split: _Split) -> None:
        """Store the page ledger; without it the API serves the ledger from the live events."""
        up = split.up
        try:
            await asyncio.to_thread(store_ledger, self.blobs, up.document_id, up.generation, split.ledger)
        except Exception:
            log.exception("page ledger not stored", document_id=up.document_id)
