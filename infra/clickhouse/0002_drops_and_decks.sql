-- Cards dropped by the checks, by reason, per chunk (CardsGenerated.dropped_reasons).
CREATE TABLE IF NOT EXISTS {db}.card_drops (
    document_id String,
    generation UInt32,
    chunk_index UInt32,
    reason String,
    count UInt32,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(at) ORDER BY (document_id, generation, chunk_index, reason);

-- Assembled decks (decks), with the cards left out as near-duplicates.
CREATE TABLE IF NOT EXISTS {db}.decks (
    document_id String,
    generation UInt32,
    status LowCardinality(String),
    cards UInt32,
    duplicate_ids Array(String),
    assembled_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(assembled_at) ORDER BY (document_id, generation);
