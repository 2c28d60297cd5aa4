"""Every Kafka topic of the pipeline, in one place: names, partition counts, configs.

All pipeline topics are keyed by document_id and share one partition count, so a document's
events land in the same partition number everywhere (co-partitioned for the tracker's table).
The broker launcher, the test fixtures and the Faust app all create topics from this list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    doc: str
    config: dict[str, str] = field(default_factory=dict)


UPLOADED = TopicSpec(
    "documents.uploaded",
    "DocumentUploaded: the system of record. Claim-check URI and hash, never the bytes.",
    # Full history: a replay rebuilds every deck from here.
    {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "message.timestamp.type": "CreateTime",
    },
)
PAGES = TopicSpec(
    "documents.pages",
    "PageExtracted per page (the ledger), then ExtractionEnded.",
    {"retention.ms": str(WEEK_MS)},
)
CHUNKS = TopicSpec(
    "documents.chunks",
    "ChunkCreated: token-bounded chunks with page span, overlap and content hash.",
    {"retention.ms": str(WEEK_MS)},
)
CHUNKS_INTERACTIVE = TopicSpec(
    "documents.chunks.interactive",
    "ChunkCreated of small documents and user retries: a lane no big book can block.",
    {"retention.ms": str(WEEK_MS)},
)
CHUNKS_RETRY = TopicSpec(
    "documents.chunks.retry",
    "ChunkCreated to try again after a delay (the LLM was unavailable); attempt counts rounds.",
    {"retention.ms": str(WEEK_MS)},
)
DLQ = TopicSpec(
    "chunks.dlq",
    "ChunkFailed dead letters: the chunk, the reason and the attempts, for inspection and replay.",
    {"retention.ms": "-1"},
)
DEAD_LETTERS = TopicSpec(
    "pipeline.dlq",
    "RecordRejected: records a stage could not use (undecodable, or not an event that topic "
    "carries), with the reason and the source topic, partition and offset.",
    {"retention.ms": "-1"},
)
CARDS = TopicSpec(
    "chunks.cards",
    "ChunksPlanned (the manifest), CardsGenerated or ChunkFailed per chunk.",
    {"retention.ms": str(WEEK_MS)},
)
DECKS = TopicSpec(
    "decks",
    "DeckAssembled: the latest deck per document and generation (compacted).",
    {"cleanup.policy": "compact"},
)
PROGRESS = TopicSpec(
    "jobs.progress",
    "DocumentProgress: what clients see (absolute counters, pages, cards, failures, done).",
    {"retention.ms": str(WEEK_MS)},
)
CONTROL = TopicSpec(
    "jobs.control",
    "CancelDocument and RetryFailedChunks commands.",
    {"retention.ms": str(WEEK_MS)},
)

ALL: tuple[TopicSpec, ...] = (
    UPLOADED,
    PAGES,
    CHUNKS,
    CHUNKS_INTERACTIVE,
    CHUNKS_RETRY,
    CARDS,
    DLQ,
    DEAD_LETTERS,
    DECKS,
    PROGRESS,
    CONTROL,
)

# How long the broker may hold a consumer's fetch when its partitions are quiet. A consumer has
# one fetch in flight, covering only partitions with nothing buffered: records arriving on the
# others wait for it (Faust's 1.5 s and aiokafka's 0.5 s stalled the pipeline and SSE).
FETCH_MAX_WAIT_MS = 50
