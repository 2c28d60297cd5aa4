-- The audit trail (accounts): sign-ins and failed sign-ins, sign-outs, tenants, keys and
-- accounts created, revoked or disabled, share links created, revoked and opened. One row per
-- event (keyed by its id: a redelivered event collapses). Never a secret or a hash.
CREATE TABLE IF NOT EXISTS {db}.audit (
    event_id String,
    tenant_id LowCardinality(String),
    action LowCardinality(String),
    subject String,
    detail String,
    document_id String,
    remote String,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(at) ORDER BY (tenant_id, at, event_id);
