"""Every Kafka topic of the pipeline, in one place: names, roles, configs.

All pipeline topics are keyed by document_id (accounts: by tenant id) and share one partition
count, so a document's events land in the same partition number everywhere (co-partitioned for
the tracker's table).
The broker launcher, the test fixtures and the Faust app all create topics from this list, and
an existing topic's configs are brought to its spec's.

Retention follows each topic's role:
  record        what happened, kept forever (uploads, tenants and API keys, card edits and
                reviews): replay, the API's key store and its decks and schedules read it
  state         the latest per document, compacted: kept forever, one record per document
  work          transient work between stages: bounded (a week)
  dead letters  what no stage could use, kept forever for inspection
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HOUR_MS = 3600 * 1000
WEEK_MS = 7 * 24 * HOUR_MS
Role = Literal["record", "state", "work", "dead letters"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    doc: str
    config: dict[str, str] = field(default_factory=dict)
    role: Role = "work"


KEPT = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
WORK = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}


UPLOADED = TopicSpec(
    "documents.uploaded",
    "DocumentUploaded: the system of record. Claim-check URI and hash, never the bytes.",
    # Full history: a replay rebuilds every deck from here.
    {**KEPT, "message.timestamp.type": "CreateTime"},
    role="record",
)
PAGES = TopicSpec(
    "documents.pages",
    "PageExtracted per page (the ledger), then ExtractionEnded.",
    WORK,
)
CHUNKS = TopicSpec(
    "documents.chunks",
    "ChunkCreated: token-bounded chunks with page span, overlap and content hash.",
    WORK,
)
CHUNKS_INTERACTIVE = TopicSpec(
    "documents.chunks.interactive",
    "ChunkCreated of small documents and user retries: a lane no big book can block.",
    WORK,
)
CHUNKS_RETRY = TopicSpec(
    "documents.chunks.retry",
    "ChunkCreated to try again after a delay (the LLM was unavailable); attempt counts rounds.",
    WORK,
)
DLQ = TopicSpec(
    "chunks.dlq",
    "ChunkFailed dead letters: the chunk, the reason and the attempts, for inspection and replay.",
    KEPT,
    role="dead letters",
)
DEAD_LETTERS = TopicSpec(
    "pipeline.dlq",
    "RecordRejected: records a stage could not use (undecodable, or not an event that topic "
    "carries), with the reason and the source topic, partition and offset.",
    KEPT,
    role="dead letters",
)
CARDS = TopicSpec(
    "chunks.cards",
    "ChunksPlanned (the manifest), CardsGenerated or ChunkFailed per chunk.",
    WORK,
)
LLM_CALLS = TopicSpec(
    "llm.calls",
    "LLMCallMeasured: each LLM call's latency, tokens, model, prompt version and outcome (analytics).",
    WORK,
)
DECKS = TopicSpec(
    "decks",
    "DeckAssembled: the latest deck per document and generation (compacted).",
    {"cleanup.policy": "compact"},
    role="state",
)
PROGRESS = TopicSpec(
    "jobs.progress",
    "DocumentProgress: what clients see (absolute counters, pages, cards, failures, done). "
    "Compacted: each document's latest snapshot is kept forever, its full history at least an hour.",
    # The open segment is never compacted: a segment closes after an hour, and a record stays
    # at least an hour, so SSE resumes of recent documents find their whole history.
    {"cleanup.policy": "compact", "segment.ms": str(HOUR_MS), "min.compaction.lag.ms": str(HOUR_MS)},
    role="state",
)
GENERATIONS = TopicSpec(
    "documents.generations",
    "GenerationPromoted: the generation the API serves per document (compacted). A document "
    "never reprocessed has none: its only generation serves.",
    {"cleanup.policy": "compact"},
    role="state",
)
CONTROL = TopicSpec(
    "jobs.control",
    "CancelDocument and RetryFailedChunks commands.",
    WORK,
)
ACCOUNTS = TopicSpec(
    "accounts",
    "Tenants, API keys, accounts, sessions and share links, keyed by tenant id (hashes only: "
    "every API process rebuilds its key store from here), and their audit trail (sign-ins, "
    "failed sign-ins, share links used).",
    KEPT,
    role="record",
)
EDITS = TopicSpec(
    "cards.edits",
    "CardEdited, CardDeleted, CardAdded, CardChecked: people's changes to decks, keyed by document "
    "id. The API rebuilds every deck's edits from here and applies them to what it serves.",
    KEPT,
    role="record",
)
REVIEWS = TopicSpec(
    "cards.reviews",
    "CardReviewed: each card a person studied and their rating, keyed by document id. Each "
    "person's FSRS schedule is these replayed through the scheduler.",
    KEPT,
    role="record",
)

ALL: tuple[TopicSpec, ...] = (
    UPLOADED,
    PAGES,
    CHUNKS,
    CHUNKS_INTERACTIVE,
    CHUNKS_RETRY,
    CARDS,
    LLM_CALLS,
    DLQ,
    DEAD_LETTERS,
    DECKS,
    PROGRESS,
    GENERATIONS,
    CONTROL,
    ACCOUNTS,
    EDITS,
    REVIEWS,
)

# How long the broker may hold a consumer's fetch when its partitions are quiet. A consumer has
# one fetch in flight, covering only partitions with nothing buffered: records arriving on the
# others wait for it (Faust's 1.5 s and aiokafka's 0.5 s stalled the pipeline and SSE).
FETCH_MAX_WAIT_MS = 50
