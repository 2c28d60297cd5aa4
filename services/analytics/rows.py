"""Events into analytics rows: pure functions, one event in, rows for each table out.

Each table's rows are keyed so that a redelivered event gives the same row again (the tables
are ReplacingMergeTree), and a later fact about the same thing (a retried chunk, a document
that finishes again) replaces the earlier one by its version column. Events no table wants
give no row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from services.events.models import (
    AccountEvent,
    ApiKeyCreated,
    ApiKeyRevoked,
    CardsGenerated,
    ChunkFailed,
    DeckAssembled,
    DocumentUploaded,
    Event,
    ExtractionEnded,
    LLMCallMeasured,
    PageExtracted,
    RecordRejected,
    SessionEnded,
    SessionStarted,
    ShareLinkCreated,
    ShareLinkRevoked,
    ShareLinkUsed,
    SignInFailed,
    TenantCreated,
    UserCreated,
    UserDisabled,
)

Row = dict[str, Any]


def _cols(names: str) -> tuple[str, ...]:
    return tuple(names.split())


# Every table the sink writes, with its columns in insert order (infra/clickhouse/*.sql).
COLUMNS: dict[str, tuple[str, ...]] = {
    "documents": _cols(
        "document_id generation tenant_id filename kind size uploaded_at model_requested "
        "prompt_version_requested"
    ),
    "outcomes": _cols(
        "document_id generation tenant_id status created_at finished_at pages_total chunks_total "
        "chunks_done chunks_failed cards error"
    ),
    "pages": _cols("document_id generation number label section method reason chars tokens extracted_at"),
    "chunks": _cols(
        "document_id generation chunk_index outcome cards dropped attempts model prompt_version "
        "elapsed_ms pages reason code finished_at retried"
    ),
    "llm_calls": _cols(
        "event_id document_id generation chunk_index round attempt model prompt_version latency_ms "
        "ttft_ms prompt_tokens completion_tokens outcome error at"
    ),
    "cards": _cols(
        "card_id document_id generation chunk_index type page page_label section needs_review review "
        "model prompt_version created_at"
    ),
    "failures": _cols("event_id stage code reason document_id generation chunk_index source_topic at"),
    "card_drops": _cols("document_id generation chunk_index reason count at"),
    "decks": _cols("document_id generation status cards duplicate_ids assembled_at"),
    "audit": _cols("event_id tenant_id action subject detail document_id remote at"),
}


def when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rows_of(event: Event) -> Iterator[tuple[str, Row]]:
    """(table, row) for each row the event gives."""
    ids = {"document_id": event.document_id, "generation": event.generation}
    at = when(event.occurred_at)
    if isinstance(event, DocumentUploaded):
        if event.is_original:  # reconciliations and hand-backs repeat an upload
            yield (
                "documents",
                {
                    **ids,
                    "tenant_id": event.tenant_id,
                    "filename": event.filename,
                    "kind": event.kind,
                    "size": event.size,
                    "uploaded_at": at,
                    "model_requested": event.model or "",
                    "prompt_version_requested": event.prompt_version or "",
                },
            )
    elif isinstance(event, PageExtracted):
        yield (
            "pages",
            {
                **ids,
                "number": event.number,
                "label": event.label,
                "section": list(event.section),
                "method": event.method,
                "reason": event.reason or "",
                "chars": len(event.text),
                "tokens": event.tokens,
                "extracted_at": at,
            },
        )
    elif isinstance(event, ExtractionEnded):
        if event.status == "failed":
            yield (
                "failures",
                _failure(event, "extract", "extraction-failed", event.reason or "extraction failed"),
            )
    elif isinstance(event, CardsGenerated):
        yield from _cards_generated(event, ids, at)
    elif isinstance(event, ChunkFailed):
        yield (
            "chunks",
            {
                **ids,
                "chunk_index": event.chunk_index,
                "outcome": "failed",
                "cards": 0,
                "dropped": 0,
                "attempts": event.attempts,
                "model": event.chunk.model or "",
                "prompt_version": event.chunk.prompt_version or "",
                "elapsed_ms": 0,
                "pages": list(dict.fromkeys(s.label for s in event.chunk.segments)),
                "reason": event.reason,
                "code": event.code,
                "finished_at": at,
                "retried": 0,
            },
        )
        yield (
            "failures",
            _failure(event, "write_cards", event.code, event.reason, chunk_index=event.chunk_index),
        )
    elif isinstance(event, LLMCallMeasured):
        yield (
            "llm_calls",
            {
                "event_id": event.event_id,
                **ids,
                "chunk_index": event.chunk_index,
                "round": event.round,
                "attempt": event.attempt,
                "model": event.model,
                "prompt_version": event.prompt_version,
                "latency_ms": event.latency_ms,
                "ttft_ms": event.ttft_ms,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "outcome": event.outcome,
                "error": event.error or "",
                "at": at,
            },
        )
    elif isinstance(event, DeckAssembled):
        # How the round ended: read here rather than from jobs.progress, whose every page and
        # card event the sink would otherwise decode for this one row.
        yield (
            "outcomes",
            {
                **ids,
                "tenant_id": event.tenant_id,
                "status": event.status,
                "created_at": when(event.created_at),
                "finished_at": at,
                "pages_total": event.pages_total,
                "chunks_total": event.chunks_total,
                "chunks_done": event.chunks_total - event.chunks_failed,
                "chunks_failed": event.chunks_failed,
                "cards": event.cards_written,
                "error": event.error or "",
            },
        )
        yield (
            "decks",
            {
                **ids,
                "status": event.status,
                "cards": event.cards,
                "duplicate_ids": list(event.duplicates),
                "assembled_at": at,
            },
        )
    elif isinstance(event, RecordRejected):
        yield "failures", _failure(event, event.stage, "rejected", event.reason, source=event.source_topic)
    elif isinstance(event, AccountEvent) and (audited := _audit(event)) is not None:
        action, subject, detail, remote = audited
        yield (
            "audit",
            {
                "event_id": event.event_id,
                "tenant_id": event.tenant_id,
                "action": action,
                "subject": subject,
                "detail": detail,
                "document_id": event.document_id,
                "remote": remote or "",
                "at": at,
            },
        )


def _audit(e: AccountEvent) -> tuple[str, str, str, str | None] | None:
    """(action, who or what, detail, address) of an account event: never a hash or a secret."""
    if isinstance(e, SessionStarted):
        return "sign-in", e.subject, e.user_agent or "", e.remote
    if isinstance(e, SignInFailed):
        who = f"user:{e.username}" if e.username else f"key:{e.key_id}" if e.key_id else ""
        return "sign-in-failed", who, e.reason, e.remote
    if isinstance(e, SessionEnded):
        return "session-ended", f"session:{e.session_id}", e.reason, None
    if isinstance(e, TenantCreated):
        return "tenant-created", e.created_by, e.tenant_name, None
    if isinstance(e, ApiKeyCreated):
        return "key-created", f"key:{e.key_id}", f"by {e.created_by}", None
    if isinstance(e, ApiKeyRevoked):
        return "key-revoked", f"key:{e.key_id}", f"by {e.revoked_by}: {e.reason or ''}".rstrip(": "), None
    if isinstance(e, UserCreated):
        return "user-created", f"user:{e.user_id}", f"{e.username} by {e.created_by}", None
    if isinstance(e, UserDisabled):
        return "user-disabled", f"user:{e.user_id}", f"by {e.disabled_by}", None
    if isinstance(e, ShareLinkCreated):
        return "share-link-created", f"share:{e.share_id}", f"by {e.created_by}", None
    if isinstance(e, ShareLinkRevoked):
        return "share-link-revoked", f"share:{e.share_id}", f"by {e.revoked_by}", None
    if isinstance(e, ShareLinkUsed):
        return "share-link-used", f"share:{e.share_id}", "", e.remote
    return None


def _cards_generated(event: CardsGenerated, ids: Row, at: datetime) -> Iterator[tuple[str, Row]]:
    yield (
        "chunks",
        {
            **ids,
            "chunk_index": event.chunk_index,
            "outcome": "cards" if event.cards else "empty",
            "cards": len(event.cards),
            "dropped": event.dropped,
            "attempts": event.attempts,
            "model": event.model,
            "prompt_version": event.prompt_version,
            "elapsed_ms": event.elapsed_ms,
            "pages": list(event.pages),
            "reason": event.empty_reason or "",
            "code": "",
            "finished_at": at,
            "retried": int(event.retried),
        },
    )
    for card in event.cards:
        yield (
            "cards",
            {
                "card_id": card.card_id,
                **ids,
                "chunk_index": event.chunk_index,
                "type": card.type,
                "page": card.page,
                "page_label": card.page_label,
                "section": list(card.section),
                "needs_review": int(card.needs_review),
                "review": card.review or "",
                "model": event.model,
                "prompt_version": card.prompt_version,
                "created_at": at,
            },
        )
    for reason, count in event.dropped_reasons.items():
        yield (
            "card_drops",
            {**ids, "chunk_index": event.chunk_index, "reason": reason, "count": count, "at": at},
        )


def _failure(
    event: Event, stage: str, code: str, reason: str, *, chunk_index: int | None = None, source: str = ""
) -> Row:
    return {
        "event_id": event.event_id,
        "stage": stage,
        "code": code,
        "reason": reason,
        "document_id": event.document_id,
        "generation": event.generation,
        "chunk_index": chunk_index,
        "source_topic": source,
        "at": when(event.occurred_at),
    }
