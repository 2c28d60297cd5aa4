"""The domain's value types: what a document becomes on its way to a deck.

    file ──extract──► Page* ──chunk──► Chunk* ──write cards──► Card*

They are plain frozen dataclasses with no I/O. Events (services/events/models.py) carry them over
Kafka; extraction, chunking and writing cards produce and consume them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

FileKind = Literal["pdf", "docx", "pptx", "text"]
PageMethod = Literal["text", "ocr", "skipped"]
CardType = Literal["basic", "cloze"]


@dataclass(frozen=True, slots=True)
class DocumentOpened:
    """First thing extraction reports: what the file is and how many pages it has."""

    kind: FileKind
    pages_total: int | None  # estimated for DOCX and text; None if unknown until read
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page (PDF), slide (PPTX) or estimated page (DOCX, TXT) of the page ledger."""

    number: int  # 1-based position in the file: "page 45/300"
    label: str  # what a reader sees printed: "xii", "45", "Slide 3"
    section: tuple[str, ...]  # heading path, outermost first
    text: str
    method: PageMethod
    reason: str | None = None  # why a page yielded nothing (blank, image-only, unreadable) or was cut
    tokens: int = 0

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass(frozen=True, slots=True)
class ExtractionEnded:
    """Last thing extraction reports."""

    status: Literal["ok", "partial", "failed"]
    pages_total: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """The part of one page inside a chunk."""

    page: int
    label: str
    section: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # 0-based, dense within a document
    segments: tuple[Segment, ...]
    tokens: int

    @property
    def text(self) -> str:
        return "\n".join(s.text for s in self.segments)

    @property
    def pages(self) -> tuple[int, int]:
        return self.segments[0].page, self.segments[-1].page

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str  # hash of (document, generation, chunk, index): stable across redelivery
    type: CardType
    front: str
    back: str
    file: str
    page: int
    page_label: str
    section: tuple[str, ...]
    chunk_index: int
    prompt_version: str
    support: float = 1.0  # how well the chunk supports the card, 0..1
    needs_review: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    review: str | None = None  # why it needs review: "the question points at its source", …


UNRECORDED = "reason not recorded"  # cards and events written before reasons were kept


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """How often each reason occurs, the most frequent first."""
    return dict(Counter(reasons).most_common())


def card_id(document_id: str, generation: int, chunk_index: int, index: int) -> str:
    raw = f"{document_id}/{generation}/{chunk_index}/{index}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]
