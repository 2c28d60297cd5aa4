"""ClickHouse DDL, applied in order by services.analytics.store (one version per file)."""
