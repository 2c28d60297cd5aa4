"""The analytics sink: pipeline topics ──► ClickHouse tables, in batches, idempotently.

One consumer group (`deckstream-analytics`) reads every topic analytics needs. Rows are
buffered per table and inserted when `batch_rows` are waiting or `flush_s` after the first one
arrived: one INSERT per table per flush, never a row per insert. Offsets are committed only
after the flush, so a sink stopped or killed in between reads those records again; the tables
collapse the repeats (ReplacingMergeTree keyed by the event's identity). While ClickHouse
refuses an insert, the sink retries with a growing delay and reads nothing more: the
backpressure is the consumer's lag, and nothing is lost while it is down.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.analytics.rows import Row, rows_of
from services.analytics.store import AnalyticsStore
from services.events import topics
from services.events.models import decode

log = structlog.get_logger(__name__)
GROUP = "deckstream-analytics"
# What analytics read: the uploads, the work topics that carry facts, the decks (how each round
# ended) and the dead letters. Not jobs.progress: it repeats those facts for the clients.
SOURCES = (
    topics.UPLOADED,
    topics.PAGES,
    topics.CARDS,
    topics.LLM_CALLS,
    topics.DECKS,
    topics.DEAD_LETTERS,
    topics.ACCOUNTS,  # the audit trail
)
RETRY_CAP_S = 30.0


class Batch:
    """Rows waiting for their insert, per table, and the offsets they came up to."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = defaultdict(list)
        self.offsets: dict[TopicPartition, int] = {}
        self.count = 0
        self.since: float | None = None  # when the oldest waiting record was read
        self.skipped = 0  # records that could not be decoded (their stage dead-letters them)

    def add_all(self, records: list[Any]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: Any) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        try:
            event = decode(record.value)
        except Exception:
            self.skipped += 1
            return
        for table, row in rows_of(event):
            self.rows[table].append(row)
            self.count += 1


class AnalyticsSink:
    def __init__(
        self,
        bootstrap: str,
        store: AnalyticsStore,
        *,
        batch_rows: int = 2000,
        flush_s: float = 1.0,
        group: str = GROUP,
    ) -> None:
        self.store, self.batch_rows, self.flush_s = store, batch_rows, flush_s
        self._consumer = AIOKafkaConsumer(
            *(spec.name for spec in SOURCES),
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_rows,
            fetch_max_wait_ms=topics.FETCH_MAX_WAIT_MS,
            # A flush may wait out a long ClickHouse outage without reading: stay in the group.
            max_poll_interval_ms=3_600_000,
        )
        self._task: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._running.set()
        self._idle = asyncio.Event()  # set while paused with nothing waiting
        self.flushes = 0
        self.waiting = 0  # rows read and not inserted yet
        self.reading = 0  # records fetched and not yet turned into rows
        self.skipped = 0
        self.error: str | None = None  # the last insert error, while it lasts

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="analytics-sink")

    async def stop(self) -> None:
        """Stop reading; what was read and not inserted is read again at the next start."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._consumer.stop()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Nothing read or inserted inside the block (all that was read before is inserted)."""
        self._idle.clear()
        self._running.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._running.set()

    async def caught_up(self) -> bool:
        """Everything the topics held a moment ago is in the tables: every assigned partition
        read to its end offset as the broker gives it now (not as the last fetch saw it), and
        nothing read but not inserted."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return False
        ends = await self._consumer.end_offsets(assigned)
        for tp in assigned:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return self.reading == 0 and self.waiting == 0

    async def status(self) -> dict[str, Any]:
        """What /readyz shows of the sink."""
        stats = self.store.stats
        return {
            "caught_up": await self.caught_up(),
            "lag": sum(self.lag().values()),
            "waiting": self.waiting,
            "rows": stats.rows,
            "inserts": stats.inserts,
            "flushes": self.flushes,
            "error": self.error,
        }

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not read yet, per topic and partition (for /metrics)."""
        from services.metrics import aiokafka_lag

        return aiokafka_lag(self._consumer)

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def _run(self) -> None:
        batch = Batch()
        while True:
            if not self._running.is_set():
                await self._flush(batch)
                batch = Batch()
                self._idle.set()
                await self._running.wait()
            wait_ms = 500
            if batch.since is not None:
                wait_ms = max(0, int((batch.since + self.flush_s - time.monotonic()) * 1000))
            records = await self._consumer.getmany(
                timeout_ms=wait_ms, max_records=self.batch_rows - batch.count
            )
            fetched = [r for part in records.values() for r in part]
            self.reading = len(fetched)  # read (the position moved on), not yet counted below
            if fetched:
                # Decoding a fetch takes tens of milliseconds: off the loop, which serves SSE.
                await asyncio.to_thread(batch.add_all, fetched)
            self.reading, self.waiting = 0, batch.count
            due = batch.since is not None and time.monotonic() - batch.since >= self.flush_s
            if batch.count >= self.batch_rows or due:
                await self._flush(batch)
                batch = Batch()

    async def _flush(self, batch: Batch) -> None:
        """Insert the batch (retrying until ClickHouse takes it), then commit its offsets."""
        delay = 0.2
        for table, rows in batch.rows.items():
            while True:
                try:
                    await asyncio.to_thread(self.store.insert, table, rows)
                    self.error = None  # ClickHouse takes inserts again
                    break
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "analytics insert failed; retrying", table=table, rows=len(rows), error=self.error
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_CAP_S)
        self.skipped += batch.skipped
        if batch.offsets:
            offsets = {tp: OffsetAndMetadata(off, "") for tp, off in batch.offsets.items()}
            try:
                await self._consumer.commit(offsets)
            except Exception as exc:  # a rebalance: those records come again, and collapse
                log.warning("analytics commit failed", error=f"{type(exc).__name__}: {exc}")
        if batch.count:
            self.flushes += 1
        self.waiting = 0
