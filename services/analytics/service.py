"""Analytics as the API process runs them: it owns the store (with chDB, the only process that
may), feeds it with the sink, and answers the dashboards' panels, ad-hoc queries and rebuilds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog

from services.analytics.panels import Panel, expand, load_panels, plain
from services.analytics.rebuild import RebuildReport, rebuild
from services.analytics.sink import AnalyticsSink
from services.analytics.store import AnalyticsStore, Result
from services.errors import DeckstreamError, DocumentNotFound, Refused
from services.settings import ClickHouseSettings

DAY_MS = 24 * 3600 * 1000
log = structlog.get_logger(__name__)


class AnalyticsUnavailable(DeckstreamError):
    code = "analytics-unavailable"
    http_status = 503


class BadQuery(Refused):
    code = "bad-query"
    http_status = 400


class Analytics:
    def __init__(self, cfg: ClickHouseSettings, chdb_dir: Path, bootstrap: str, *, sink: bool = True) -> None:
        self.cfg, self.chdb_dir, self.bootstrap, self.with_sink = cfg, chdb_dir, bootstrap, sink
        self.store: AnalyticsStore | None = None
        self.sink: AnalyticsSink | None = None
        self.panels: dict[str, Panel] = {p.key: p for p in load_panels()}
        self.error: str | None = None

    async def start(self) -> None:
        """Open and migrate the store, start the sink. A store that cannot be opened (chDB held
        by another process, a server down) leaves analytics off, with the reason in `error`: the
        rest of the API runs without them."""
        try:
            self.store = await asyncio.to_thread(AnalyticsStore.open, self.cfg, self.chdb_dir)
            await asyncio.to_thread(self.store.migrate)
        except Exception as exc:
            self.error = f"the analytics store did not open: {type(exc).__name__}: {str(exc)[:500]}"
            log.error("analytics off", reason=self.error)
            if self.store is not None:
                await asyncio.to_thread(self.store.close)
                self.store = None
            return
        if self.with_sink:
            self.sink = AnalyticsSink(
                self.bootstrap, self.store, batch_rows=self.cfg.batch_rows, flush_s=self.cfg.flush_s
            )
            await self.sink.start()

    async def stop(self) -> None:
        if self.sink is not None:
            await self.sink.stop()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    def _store(self) -> AnalyticsStore:
        if self.store is None:
            raise AnalyticsUnavailable(self.error or "analytics are starting")
        return self.store

    async def panel(self, key: str, from_ms: int | None = None, to_ms: int | None = None) -> dict[str, Any]:
        """A panel's rows for a time range (default: the last 24 hours), cells as JSON."""
        panel = self.panels.get(key)
        if panel is None:
            raise DocumentNotFound(f"no analytics panel {key!r}")
        to_ms = to_ms if to_ms is not None else int(time.time() * 1000)
        from_ms = from_ms if from_ms is not None else to_ms - DAY_MS
        sql = expand(panel.sql, database=self._store().database, from_ms=from_ms, to_ms=to_ms)
        result = await asyncio.to_thread(self._store().query, sql)
        return {
            "id": panel.key,
            "title": panel.title,
            "kind": panel.kind,
            "columns": result.columns,
            "rows": [[plain(v) for v in row] for row in result.rows],
        }

    async def query(self, sql: str) -> Result:
        """An ad-hoc read-only query (`deckstream analytics query`); ClickHouse's refusal as BadQuery."""
        store = self._store()
        try:
            return await asyncio.to_thread(store.query, sql, readonly=True)
        except Exception as exc:
            if type(exc).__module__.startswith("clickhouse_connect"):
                raise BadQuery(f"the query failed: {str(exc)[:1000]}") from exc
            raise

    async def rebuild(self, *, force: bool = False) -> RebuildReport:
        """The tables rebuilt from the log, with the sink paused meanwhile."""
        if self.sink is None:
            return await rebuild(self.bootstrap, self._store(), force=force)
        async with self.sink.paused():
            return await rebuild(self.bootstrap, self._store(), force=force)
