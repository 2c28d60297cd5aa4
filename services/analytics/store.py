"""The analytics store: ClickHouse through clickhouse-connect, in-process (chDB) or a server.

One code path for both: clickhouse-connect drives chDB too (`chdb://<path>`), so the DDL
(infra/clickhouse/NNNN_*.sql, applied in order at start and recorded in `schema_migrations`)
and every query are the same. chDB lets one process own a database path: in the one-box setup
that is the API process; the CLI reaches the database through it.

The client is synchronous: callers on an event loop run it in a thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import clickhouse_connect
import structlog

from services.analytics.rows import COLUMNS, Row
from services.settings import ClickHouseSettings

log = structlog.get_logger(__name__)
_MIGRATION = re.compile(r"(\d{4})_[\w-]+\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations() -> list[Migration]:
    """Every DDL file of infra/clickhouse, oldest first."""
    found = []
    for entry in files("infra.clickhouse").iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            text = "\n".join(
                line for line in entry.read_text().splitlines() if not line.lstrip().startswith("--")
            )
            statements = tuple(s.strip() for s in text.split(";") if s.strip())
            found.append(Migration(int(match[1]), entry.name, statements))
    return sorted(found, key=lambda m: m.version)


def chdb_options(cfg: ClickHouseSettings) -> dict[str, str]:
    """chDB's engine settings, sized for a guest in the API process: ClickHouse's defaults suit
    a server of its own (a 5 GB mark cache, 16 merge threads, most of the machine's memory)."""
    return {
        "max_server_memory_usage": str(cfg.chdb_memory_mb * 2**20),
        "mark_cache_size": str(32 * 2**20),
        "index_mark_cache_size": str(16 * 2**20),
        "uncompressed_cache_size": "0",
        "background_pool_size": "2",
    }


@dataclass(slots=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]


@dataclass(slots=True)
class InsertStats:
    inserts: int = 0  # INSERT statements sent
    rows: int = 0
    by_table: dict[str, int] = field(default_factory=dict)


class AnalyticsStore:
    def __init__(self, client: Any, database: str, where: str) -> None:
        self.client, self.database, self.where = client, database, where
        self.stats = InsertStats()
        # chDB's embedded server is shared by the process; one statement at a time keeps it sane.
        self._lock = threading.Lock()

    @classmethod
    def open(cls, cfg: ClickHouseSettings, chdb_dir: Path, database: str | None = None) -> AnalyticsStore:
        """The store of `cfg` (a server when its URL is set, else chDB under `chdb_dir`)."""
        if cfg.url:
            client = clickhouse_connect.get_client(dsn=cfg.url)
            where = cfg.url.split("@")[-1]  # no credentials in logs
        else:
            chdb_dir.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}", chdb_options=chdb_options(cfg))
            where = f"chdb:{chdb_dir}"
        return cls(client, database or cfg.database, where)

    def close(self) -> None:
        with self._lock:
            self.client.close()

    def migrate(self, upto: int | None = None) -> list[int]:
        """Apply the DDL files not applied yet (up to version `upto`); the versions applied."""
        db = self.database
        with self._lock:
            self.client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
            self.client.command(
                f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
                "applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
            )
            done = {
                row[0] for row in self.client.query(f"SELECT version FROM {db}.schema_migrations").result_rows
            }
            applied = []
            for m in migrations():
                if m.version in done or (upto is not None and m.version > upto):
                    continue
                for statement in m.statements:
                    self.client.command(statement.replace("{db}", db))
                self.client.insert(
                    f"{db}.schema_migrations",
                    [[m.version, m.name, datetime.now(UTC)]],
                    column_names=["version", "name", "applied_at"],
                )
                applied.append(m.version)
        if applied:
            log.info("analytics migrated", database=db, where=self.where, versions=applied)
        return applied

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        """One INSERT of `rows` (dicts with the table's columns) into `table`."""
        if not rows:
            return
        columns = COLUMNS[table]
        data = [[row[c] for c in columns] for row in rows]
        with self._lock:
            self.client.insert(f"{self.database}.{table}", data, column_names=list(columns))
        self.stats.inserts += 1
        self.stats.rows += len(rows)
        self.stats.by_table[table] = self.stats.by_table.get(table, 0) + len(rows)

    def query(self, sql: str, parameters: dict[str, Any] | None = None, *, readonly: bool = False) -> Result:
        settings = {"readonly": 2} if readonly else None  # 2: reads and per-query settings only
        with self._lock:
            result = self.client.query(sql, parameters=parameters, settings=settings)
        return Result(list(result.column_names), [list(row) for row in result.result_rows])

    def command(self, sql: str) -> None:
        with self._lock:
            self.client.command(sql)
