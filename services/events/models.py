"""Python models of the events in schemas/*.avsc (a test keeps the two in step).

Every event carries event_id, tenant_id, document_id, generation and occurred_at, and is keyed
by document_id on Kafka. Nested values reuse the domain's dataclasses (Segment, Card).
`encode`/`decode` turn a model into Avro single-object bytes and back.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

from schemas import REGISTRY
from services.domain import Card, Segment

log = structlog.get_logger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: ClassVar[str] = ""

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant_id: str
    document_id: str
    generation: int
    occurred_at: int = Field(default_factory=now_ms)

    def ids(self) -> dict[str, Any]:
        """The fields that identify the document, for deriving the next event."""
        return {"tenant_id": self.tenant_id, "document_id": self.document_id, "generation": self.generation}


class DocumentUploaded(Event):
    name = "DocumentUploaded"
    filename: str
    kind: str
    size: int
    sha256: str
    blob_uri: str
    card_types: list[str]
    cards_per_chunk: int
    language: str | None = None
    # Empty for an upload. Else a reconciliation (added in the second schema): the tracker found
    # the document stalled, and the splitter sends these chunks again and nothing else.
    replay_chunks: list[int] = []
    # Zero for an upload. Else (added in the third schema) a worker stopped splitting it for a
    # rebalance or a shutdown and handed it back: these many pages and chunks were sent already.
    # The next splitter reads the file again (same pages, same chunks) and sends the rest.
    pages_sent: int = 0
    chunks_sent: int = 0
    # None: the worker's own. Set by a reprocessing (added in the fourth schema) to write this
    # generation's cards with another model or prompt version.
    model: str | None = None
    prompt_version: str | None = None

    @property
    def is_original(self) -> bool:
        """An upload or a reprocessing, not a reconciliation or a hand-back of one."""
        return not self.replay_chunks and self.pages_sent == 0 and self.chunks_sent == 0


class PageExtracted(Event):
    name = "PageExtracted"
    number: int
    label: str
    section: list[str]
    text: str
    method: str
    reason: str | None = None
    tokens: int
    pages_total: int | None = None


class ExtractionEnded(Event):
    name = "ExtractionEnded"
    status: str
    pages_total: int
    reason: str | None = None


class ChunkCreated(Event):
    name = "ChunkCreated"
    chunk_index: int
    segments: list[Segment]
    tokens: int
    content_hash: str
    filename: str
    card_types: list[str]
    cards_per_chunk: int
    attempt: int = 0
    lane: str = "bulk"  # interactive or bulk (added in the second ChunkCreated schema)
    model: str | None = None  # the upload's overrides (added in the third schema)
    prompt_version: str | None = None
    language: str | None = None  # the cards' language the upload asked for; None: the chunk's own


class ChunksPlanned(Event):
    name = "ChunksPlanned"
    chunks_total: int
    pages_total: int


class CardsGenerated(Event):
    name = "CardsGenerated"
    chunk_index: int
    cards: list[Card]
    dropped: int
    attempts: int
    model: str
    prompt_version: str
    elapsed_ms: int
    pages: list[str] = []  # labels of the pages the chunk spans (added in the second schema)
    empty_reason: str | None = None  # why the chunk gave no cards, when it gave none
    dropped_reasons: dict[str, int] = {}  # dropped cards by reason (added in the fourth schema)
    language: str | None = None  # detected in the chunk's text, "und" when unsure (fifth schema)
    retried: bool = False  # the first cards were all dropped and the chunk was asked again
    # Pages of the chunk asked about again, with only their text, as no kept card cited them;
    # and those still without a card, with why (label -> reason). Sixth schema.
    pages_asked_again: list[str] = []
    pages_without_cards: dict[str, str] = {}


class ChunkFailed(Event):
    name = "ChunkFailed"
    chunk_index: int
    reason: str
    code: str
    attempts: int
    chunk: ChunkCreated


class ChunkFailure(BaseModel):
    model_config = ConfigDict(frozen=True)
    chunk_index: int
    reason: str


class EmptyChunk(BaseModel):
    """A chunk that was read and gave no card, and why (the deck's ledger)."""

    model_config = ConfigDict(frozen=True)
    chunk_index: int
    pages: list[str]
    reason: str


class DeckAssembled(Event):
    name = "DeckAssembled"
    status: str
    deck_uri: str
    cards: int
    chunks_total: int
    chunks_failed: int
    failures: list[ChunkFailure]
    duplicates: list[str] = []  # card ids left out as near-duplicates (added in the second schema)
    # How the document's round ended (added in the third schema: analytics read them here)
    pages_total: int = 0
    cards_written: int = 0
    created_at: int = 0
    error: str | None = None


class PageInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    number: int
    label: str
    section: list[str]
    method: str
    reason: str | None = None
    chars: int
    tokens: int


class DocumentProgress(Event):
    name = "DocumentProgress"
    kind: str  # progress, page, card, chunk_failed, waiting, done
    status: str
    filename: str
    created_at: int
    pages_total: int
    pages_done: int
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    cards: int
    progress: float
    error: str | None = None
    waiting: str | None = None  # why it is not moving (the LLM is unavailable); None once it moves
    page: PageInfo | None = None
    new_cards: list[Card] = []
    failure: ChunkFailure | None = None


class CancelDocument(Event):
    name = "CancelDocument"
    reason: str | None = None


class RetryFailedChunks(Event):
    name = "RetryFailedChunks"


class LLMCallMeasured(Event):
    """One LLM call made while writing a chunk's cards (llm.calls): what analytics measure."""

    name = "LLMCallMeasured"
    chunk_index: int
    round: int
    attempt: int
    model: str
    prompt_version: str
    latency_ms: int
    ttft_ms: int | None = None
    prompt_tokens: int
    completion_tokens: int
    outcome: str
    error: str | None = None


class GenerationPromoted(Event):
    """The generation the API serves for a document from now on (documents.generations)."""

    name = "GenerationPromoted"
    promoted_by: str


class RecordRejected(Event):
    """A dead letter (see `rejected`)."""

    name = "RecordRejected"
    source_topic: str
    partition: int
    offset: int
    stage: str
    reason: str
    payload: bytes | None = None


class AccountEvent(Event):
    """An event of the accounts topic: about a tenant, not a document. Keyed by tenant id;
    `document_id` is empty and `generation` 0."""

    document_id: str = ""
    generation: int = 0


class TenantCreated(AccountEvent):
    name = "TenantCreated"
    tenant_name: str  # not `name`: every event class has that (its schema's name)
    created_by: str


class ApiKeyCreated(AccountEvent):
    """Only the hash of the key: the key itself is never on the log."""

    name = "ApiKeyCreated"
    key_id: str
    label: str | None = None
    sha256: str
    expires_at: int | None = None  # ms since the epoch; None: never
    created_by: str


class ApiKeyRevoked(AccountEvent):
    name = "ApiKeyRevoked"
    key_id: str
    reason: str | None = None
    revoked_by: str


class UserCreated(AccountEvent):
    """An account for signing in to the web page: only an argon2id hash of the password."""

    name = "UserCreated"
    user_id: str
    username: str
    password_hash: str
    created_by: str


class UserDisabled(AccountEvent):
    name = "UserDisabled"
    user_id: str
    disabled_by: str


class SessionStarted(AccountEvent):
    """A sign-in (the audit trail's too): only the SHA-256 of the cookie's secret."""

    name = "SessionStarted"
    session_id: str
    sha256: str
    subject: str  # user:<user_id> or key:<key_id>
    expires_at: int
    user_agent: str | None = None
    remote: str | None = None


class SessionEnded(AccountEvent):
    name = "SessionEnded"
    session_id: str
    reason: str  # signed-out, user-disabled


class SignInFailed(AccountEvent):
    name = "SignInFailed"
    username: str | None = None
    key_id: str | None = None
    reason: str
    remote: str | None = None


class ShareLinkCreated(AccountEvent):
    """A read-only link to a deck; `document_id` and `generation` (0: the current) say which."""

    name = "ShareLinkCreated"
    share_id: str
    sha256: str
    expires_at: int
    label: str | None = None
    created_by: str


class ShareLinkRevoked(AccountEvent):
    name = "ShareLinkRevoked"
    share_id: str
    revoked_by: str


class ShareLinkUsed(AccountEvent):
    name = "ShareLinkUsed"
    share_id: str
    remote: str | None = None


class CardEdit(Event):
    """A person's change to a deck (cards.edits): `generation` is the deck's they changed, whose
    card ids `card_id` names; `edited_by` is who (user:<id> or key:<id>)."""

    card_id: str


class CardEdited(CardEdit):
    """The fields given replace the card's; None leaves one as it was."""

    name = "CardEdited"
    front: str | None = None
    back: str | None = None
    type: str | None = None
    tags: list[str] | None = None
    edited_by: str


class CardDeleted(CardEdit):
    name = "CardDeleted"
    edited_by: str


class CardAdded(CardEdit):
    """A person's own card, citing the source they chose (or the card's it was added next to)."""

    name = "CardAdded"
    type: str
    front: str
    back: str
    tags: list[str] = []
    page: int
    page_label: str
    section: list[str]
    chunk_index: int  # -1: no chunk
    after_card_id: str | None = None
    edited_by: str


class CardChecked(CardEdit):
    """A verdict on a card marked to check: accept keeps it and clears the mark, dismiss removes it."""

    name = "CardChecked"
    verdict: str
    edited_by: str


class CardReviewed(Event):
    """A person studied a card (cards.reviews): the rating FSRS schedules from, 1 Again to 4 Easy."""

    name = "CardReviewed"
    card_id: str
    rating: int
    reviewed_by: str


def rejected(record: Any, *, stage: str, reason: str) -> RecordRejected:
    """The dead letter of a record (anything with topic, partition, offset, key and value: a Faust
    Message, an aiokafka ConsumerRecord), logged: one id per record, however many readers report it."""
    topic, partition, offset, key = record.topic, record.partition, record.offset, record.key
    where = f"{topic}/{partition}/{offset}"
    try:
        document_id = key.decode() if key else ""
    except UnicodeDecodeError:
        document_id = key.hex()
    log.warning(
        "record rejected", topic=topic, partition=partition, offset=offset, stage=stage, reason=reason
    )
    return RecordRejected(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"deckstream:{where}").hex,
        tenant_id="",
        document_id=document_id,
        generation=0,
        source_topic=topic,
        partition=partition,
        offset=offset,
        stage=stage,
        reason=reason,
        payload=record.value,
    )


EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (
        DocumentUploaded,
        PageExtracted,
        ExtractionEnded,
        ChunkCreated,
        ChunksPlanned,
        CardsGenerated,
        ChunkFailed,
        DeckAssembled,
        DocumentProgress,
        CancelDocument,
        RetryFailedChunks,
        GenerationPromoted,
        LLMCallMeasured,
        RecordRejected,
        TenantCreated,
        ApiKeyCreated,
        ApiKeyRevoked,
        UserCreated,
        UserDisabled,
        SessionStarted,
        SessionEnded,
        SignInFailed,
        ShareLinkCreated,
        ShareLinkRevoked,
        ShareLinkUsed,
        CardEdited,
        CardDeleted,
        CardAdded,
        CardChecked,
        CardReviewed,
    )
}

E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    return REGISTRY.encode(event.name, event.model_dump(mode="python"))


def decode(data: bytes) -> Event:
    name, record = REGISTRY.decode(data)
    return EVENT_TYPES[name].model_validate(record)


def decode_as(data: bytes, cls: type[E]) -> E:
    event = decode(data)
    if not isinstance(event, cls):
        raise TypeError(f"expected {cls.name}, got {event.name}")
    return event
