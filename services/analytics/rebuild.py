"""Rebuild the analytics tables from Kafka: the topics read from their start, into fresh tables.

The rebuild fills `<database>_rebuild` from every source topic up to its end offsets (a
group-less consumer: the sink's group is untouched), compares each table with the live one
(rows and a checksum of their content, both under FINAL), then swaps each table in. A table
the rebuild would shrink is not swapped unless forced: the work topics keep a week, so rows
older than that exist only in the live tables.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from services.analytics.rows import COLUMNS, Row, rows_of
from services.analytics.sink import SOURCES
from services.analytics.store import AnalyticsStore
from services.events.models import decode


@dataclass(slots=True)
class TableReport:
    live_rows: int
    rebuilt_rows: int
    identical: bool
    swapped: bool = False


@dataclass(slots=True)
class RebuildReport:
    records: int = 0
    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "identical": self.identical,
            "tables": {name: vars_of(t) for name, t in self.tables.items()},
        }


def vars_of(t: TableReport) -> dict[str, Any]:
    return {
        "live_rows": t.live_rows,
        "rebuilt_rows": t.rebuilt_rows,
        "identical": t.identical,
        "swapped": t.swapped,
    }


async def read_all(bootstrap: str, store: AnalyticsStore, batch_rows: int) -> int:
    """Every record of the sources up to their end offsets now, as rows in `store`; the count."""
    consumer = AIOKafkaConsumer(
        *(s.name for s in SOURCES),
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_rows,
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        left = {tp for tp, end in ends.items() if end > 0}
        records = 0
        while left:
            rows: dict[str, list[Row]] = defaultdict(list)
            for tp, part in (await consumer.getmany(*left, timeout_ms=1000, max_records=batch_rows)).items():
                for record in part:
                    if record.offset >= ends[tp]:
                        continue
                    records += 1
                    try:
                        event = decode(record.value)
                    except Exception:
                        continue  # the sink skips it too
                    for table, row in rows_of(event):
                        rows[table].append(row)
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
            for table, batch in rows.items():
                await asyncio.to_thread(store.insert, table, batch)
        return records
    finally:
        await consumer.stop()


def fingerprint(store: AnalyticsStore, database: str, table: str) -> tuple[int, int]:
    """Rows and a checksum of their content, after duplicates collapse."""
    cols = ", ".join(COLUMNS[table])
    result = store.query(f"SELECT count(), groupBitXor(cityHash64({cols})) FROM {database}.{table} FINAL")
    count, digest = result.rows[0]
    return int(count), int(digest or 0)  # an empty table has no checksum


async def rebuild(
    bootstrap: str, store: AnalyticsStore, *, batch_rows: int = 5000, force: bool = False
) -> RebuildReport:
    """Rebuild every table of `store` from the log (see the module's doc)."""
    live, fresh_db = store.database, f"{store.database}_rebuild"
    await asyncio.to_thread(store.command, f"DROP DATABASE IF EXISTS {fresh_db}")
    fresh = AnalyticsStore(store.client, fresh_db, store.where)
    fresh._lock = store._lock  # one client: one statement at a time
    await asyncio.to_thread(fresh.migrate)
    await asyncio.to_thread(store.migrate)
    report = RebuildReport(records=await read_all(bootstrap, fresh, batch_rows))
    for table in COLUMNS:
        live_rows, live_sum = await asyncio.to_thread(fingerprint, store, live, table)
        new_rows, new_sum = await asyncio.to_thread(fingerprint, store, fresh_db, table)
        entry = TableReport(live_rows, new_rows, (live_rows, live_sum) == (new_rows, new_sum))
        if force or new_rows >= live_rows:
            await asyncio.to_thread(store.command, f"EXCHANGE TABLES {live}.{table} AND {fresh_db}.{table}")
            entry.swapped = True
        report.tables[table] = entry
    await asyncio.to_thread(store.command, f"DROP DATABASE IF EXISTS {fresh_db}")
    return report
