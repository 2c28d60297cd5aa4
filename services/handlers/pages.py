"""A document's pages for the page beside a card: each page's text, a PDF page as an image, and
the passage that supports a card (services.cards.passages).

The work topics that carried the page texts (documents.pages) are bounded, and the kept ledger
holds no text, so the pages are read again from the kept upload, in the extraction sandbox, the
first time any of them is asked for, with the splitter's OCR cache: the same text extraction
found. What is read is kept in the blob store under the document:

    pages/<document>/text/ledger.json            the kind and the page count, written last
    pages/<document>/text/p000045.json           one page: label, section, text, method, reason
    pages/<document>/images/p000045-w1200-r1.png a PDF page, RENDER_WIDTH px wide
    pages/<document>/images/p000045-w1200-r1.json its pixel size and its words with their boxes
    pages/<document>/images/p000045-w1200-r1.failed.json  why it cannot be rendered

Rendering runs in the sandbox too (``Sandbox.render``: its memory, CPU and time limits), once per
page: a request for a cached page makes no sandbox call. A page that failed for its content (out
of memory, a crash) is not tried again; one that timed out is (the machine may have been busy).
At most ``SANDBOX_JOBS`` sandbox jobs run at once in this process, and one document is read, or
one page rendered, by one request at a time: a client asking for twenty pages at once starts
twenty children neither at once nor twice for one page.

Highlights come from the words PyMuPDF gives with the image (boxes for free, read once), and
from the page text for kinds without an image: no sandbox call per card.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cards.passages import PageWord, Passage, find_passage, text_words
from services.documents.views import DocumentView, DocumentViews
from services.domain import DocumentOpened, Page
from services.errors import Conflict, DocumentNotFound, InputRejected
from services.events.models import DocumentUploaded
from services.extraction import Sandbox
from services.extraction.render import RenderedPage, RenderJob
from services.handlers.export import export_deck
from services.storage.blobs import SCHEME, BlobStore

RENDER_WIDTH = 1200  # px: sharp on a laptop beside a card, ~100-300 KB a page
RENDER_VERSION = "r1"  # change it when the image or the word boxes change for the same page
SANDBOX_JOBS = 2  # documents read or pages rendered at once by one API process (2 cores)


@dataclass(frozen=True, slots=True)
class PageText:
    number: int
    pages_total: int
    kind: str
    label: str
    section: list[str]
    text: str
    method: str
    reason: str | None

    @property
    def has_image(self) -> bool:
        return self.kind == "pdf"


@dataclass(frozen=True, slots=True)
class PageImage:
    path: Path
    etag: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class CardSource:
    card_id: str
    page: PageText
    passage: Passage | None


def upload_of(views: DocumentViews, view: DocumentView) -> DocumentUploaded:
    """The document's upload (every generation reads the same file)."""
    uploads = views.uploads.get(view.snapshot.document_id)
    if not uploads:
        raise Conflict("the document's upload is not in the log yet; try again in a moment", "not-in-log")
    return uploads[min(uploads)]


def image_etag(upload: DocumentUploaded, number: int) -> str:
    """The same bytes, page, width and renderer give the same image: the tag says which."""
    key = f"{upload.sha256}/{number}/{RENDER_WIDTH}/{RENDER_VERSION}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def _no_image(upload: DocumentUploaded) -> DocumentNotFound:
    what = {"docx": "a Word document", "pptx": "a PowerPoint deck", "text": "a text file"}
    return DocumentNotFound(
        f"{upload.filename} is {what.get(upload.kind, upload.kind)}: only PDF pages have an image; "
        "show the page's text instead",
        "no-page-image",
    )


class PageSource:
    def __init__(self, *, blobs: BlobStore, sandbox: Sandbox) -> None:
        self.blobs, self.sandbox = blobs, sandbox
        self._jobs = asyncio.Semaphore(SANDBOX_JOBS)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def _once(self, key: str) -> AsyncIterator[None]:
        """One request at a time per key; the others wait, then find its result in the cache."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            yield

    def _uri(self, document_id: str, name: str) -> str:
        return SCHEME + _key(document_id, name)

    def _exists(self, uri: str) -> bool:
        return self.blobs.path(uri).exists()

    # Text ---------------------------------------------------------------------------------------

    async def page(self, views: DocumentViews, view: DocumentView, number: int) -> PageText:
        """Page `number` as extraction read it (404 ``no-such-page`` past the end)."""
        upload = upload_of(views, view)
        ledger = await self._ledger(upload)
        total = int(ledger["pages_total"])
        if not 1 <= number <= total:
            raise DocumentNotFound(f"no page {number}: the document has {total}", "no-such-page")
        raw = await asyncio.to_thread(self.blobs.get_json, self._uri(upload.document_id, _page_name(number)))
        return PageText(pages_total=total, kind=str(ledger["kind"]), **raw)

    async def _ledger(self, upload: DocumentUploaded) -> dict[str, Any]:
        uri = self._uri(upload.document_id, "text/ledger.json")
        async with self._once(uri):
            if not await asyncio.to_thread(self._exists, uri):
                async with self._jobs:
                    await asyncio.to_thread(self._read_pages, upload)
            got: dict[str, Any] = await asyncio.to_thread(self.blobs.get_json, uri)
            return got

    def _read_pages(self, upload: DocumentUploaded) -> None:
        """Extract the whole upload in the sandbox; each page to its blob, the ledger last."""
        path = self.blobs.path(upload.blob_uri)
        if not path.exists():
            raise Conflict("the uploaded file is no longer in the blob store", "file-gone")
        ocr_cache = self.blobs.path(f"{SCHEME}ocr/{upload.sha256[:2]}/{upload.sha256}")
        kind, total = upload.kind, 0
        for item in self.sandbox.extract(path, filename=upload.filename, ocr_cache=ocr_cache):
            if isinstance(item, DocumentOpened):
                kind = item.kind
            elif isinstance(item, Page):
                total = max(total, item.number)
                body = {
                    "number": item.number,
                    "label": item.label,
                    "section": list(item.section),
                    "text": item.text,
                    "method": item.method,
                    "reason": item.reason,
                }
                self.blobs.put_json(_key(upload.document_id, _page_name(item.number)), body)
        self.blobs.put_json(
            _key(upload.document_id, "text/ledger.json"), {"kind": kind, "pages_total": total}
        )

    # Images -------------------------------------------------------------------------------------

    async def image(self, views: DocumentViews, view: DocumentView, number: int) -> PageImage:
        """Page `number` of a PDF as a PNG, rendered once (404 ``no-page-image`` for other kinds,
        ``no-such-page`` past the end; 422 ``page-not-rendered`` for a page that cannot be)."""
        upload = upload_of(views, view)
        if upload.kind != "pdf":
            raise _no_image(upload)
        rendered = await self._rendered(upload, number)
        png = self.blobs.path(self._uri(upload.document_id, _image_name(number, "png")))
        return PageImage(png, image_etag(upload, number), rendered.width, rendered.height)

    async def _rendered(self, upload: DocumentUploaded, number: int) -> RenderedPage:
        doc = upload.document_id
        done, failed = _key(doc, _image_name(number, "json")), _key(doc, _image_name(number, "failed.json"))
        async with self._once(done):
            if await asyncio.to_thread(self._exists, SCHEME + done):
                return RenderedPage.from_json(await asyncio.to_thread(self.blobs.get_json, SCHEME + done))
            if await asyncio.to_thread(self._exists, SCHEME + failed):
                reason = (await asyncio.to_thread(self.blobs.get_json, SCHEME + failed))["reason"]
                raise InputRejected(reason, "page-not-rendered")
            path = self.blobs.path(upload.blob_uri)
            if not await asyncio.to_thread(path.exists):
                raise Conflict("the uploaded file is no longer in the blob store", "file-gone")
            job = RenderJob(number, RENDER_WIDTH, self.blobs.path(self._uri(doc, _image_name(number, "png"))))
            try:
                async with self._jobs:
                    rendered = await asyncio.to_thread(
                        self.sandbox.render, path, job, filename=upload.filename
                    )
            except InputRejected as exc:  # a page past the end is DocumentNotFound: not kept
                if "timed out" not in exc.reason:  # a busy machine may do it next time
                    await asyncio.to_thread(self.blobs.put_json, failed, {"reason": exc.reason})
                raise InputRejected(exc.reason, "page-not-rendered") from exc
            await asyncio.to_thread(self.blobs.put_json, done, rendered.to_json())
            return rendered

    # The passage beside a card ------------------------------------------------------------------

    async def card_source(
        self, views: DocumentViews, view: DocumentView, generation: int, card_id: str
    ) -> CardSource:
        """A card of the deck as served (edits included), its page and the passage on it that
        supports the card: with boxes on a PDF page (404 ``no-such-card``)."""
        deck = await export_deck(self.blobs, view, "json", generation)
        cards = deck["cards"] if isinstance(deck, dict) else []
        card = next((c for c in cards if c["card_id"] == card_id), None)
        if card is None:
            raise DocumentNotFound(
                f"no card {card_id} in generation {generation} of the deck", "no-such-card"
            )
        page = await self.page(views, view, int(card["source"]["page"]))
        words: list[PageWord]
        if page.has_image:
            rendered = await self._rendered(upload_of(views, view), page.number)
            words = [PageWord(text, line, (x0, y0, x1, y1)) for x0, y0, x1, y1, text, line in rendered.words]
        else:
            words = text_words(page.text)
        passage = await asyncio.to_thread(find_passage, words, card["type"], card["front"], card["back"])
        return CardSource(card_id, page, passage)


def _key(document_id: str, name: str) -> str:
    return f"pages/{document_id}/{name}"


def _page_name(number: int) -> str:
    return f"text/p{number:06d}.json"


def _image_name(number: int, ext: str) -> str:
    return f"images/p{number:06d}-w{RENDER_WIDTH}-{RENDER_VERSION}.{ext}"
