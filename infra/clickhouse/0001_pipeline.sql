-- The pipeline's facts, one table per kind, each keyed so that a redelivered event collapses
-- (ReplacingMergeTree: read with FINAL). `{db}` is the analytics database (DECKSTREAM_CLICKHOUSE_DATABASE).
-- Times are UTC with milliseconds. Text columns default to '' rather than NULL: joins stay simple.

-- An upload or a reprocessing: one row per document and generation (documents.uploaded).
CREATE TABLE IF NOT EXISTS {db}.documents (
    document_id String,
    generation UInt32,
    tenant_id LowCardinality(String),
    filename String,
    kind LowCardinality(String),
    size UInt64,
    uploaded_at DateTime64(3, 'UTC'),
    model_requested String,
    prompt_version_requested String
) ENGINE = ReplacingMergeTree(uploaded_at) ORDER BY (document_id, generation);

-- How a document's generation ended: its latest `done` (jobs.progress); a retry ends it again.
CREATE TABLE IF NOT EXISTS {db}.outcomes (
    document_id String,
    generation UInt32,
    tenant_id LowCardinality(String),
    status LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    pages_total UInt32,
    chunks_total UInt32,
    chunks_done UInt32,
    chunks_failed UInt32,
    cards UInt32,
    error String
) ENGINE = ReplacingMergeTree(finished_at) ORDER BY (document_id, generation);

-- The page ledger (documents.pages).
CREATE TABLE IF NOT EXISTS {db}.pages (
    document_id String,
    generation UInt32,
    number UInt32,
    label String,
    section Array(String),
    method LowCardinality(String),
    reason String,
    chars UInt32,
    tokens UInt32,
    extracted_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(extracted_at) ORDER BY (document_id, generation, number);

-- Each chunk's latest outcome (chunks.cards): cards, empty (and why) or failed (and why).
CREATE TABLE IF NOT EXISTS {db}.chunks (
    document_id String,
    generation UInt32,
    chunk_index UInt32,
    outcome LowCardinality(String),
    cards UInt32,
    dropped UInt32,
    attempts UInt32,
    model LowCardinality(String),
    prompt_version LowCardinality(String),
    elapsed_ms UInt32,
    pages Array(String),
    reason String,
    code LowCardinality(String),
    finished_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(finished_at) ORDER BY (document_id, generation, chunk_index);

-- Every LLM call (llm.calls).
CREATE TABLE IF NOT EXISTS {db}.llm_calls (
    event_id String,
    document_id String,
    generation UInt32,
    chunk_index UInt32,
    round UInt32,
    attempt UInt32,
    model LowCardinality(String),
    prompt_version LowCardinality(String),
    latency_ms UInt32,
    ttft_ms Nullable(UInt32),
    prompt_tokens UInt32,
    completion_tokens UInt32,
    outcome LowCardinality(String),
    error String,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(at) ORDER BY event_id;

-- Every card written (chunks.cards).
CREATE TABLE IF NOT EXISTS {db}.cards (
    card_id String,
    document_id String,
    generation UInt32,
    chunk_index UInt32,
    type LowCardinality(String),
    page UInt32,
    page_label String,
    section Array(String),
    needs_review UInt8,
    review String,
    model LowCardinality(String),
    prompt_version LowCardinality(String),
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at) ORDER BY card_id;

-- What failed where, and why: chunks, extractions, records no stage could use.
CREATE TABLE IF NOT EXISTS {db}.failures (
    event_id String,
    stage LowCardinality(String),
    code LowCardinality(String),
    reason String,
    document_id String,
    generation UInt32,
    chunk_index Nullable(UInt32),
    source_topic String,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(at) ORDER BY event_id;
