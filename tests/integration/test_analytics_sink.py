"""The analytics sink against a real broker and chDB: ClickHouse refusing inserts loses nothing
(the sink waits, reads nothing more, and resumes), and a sink stopped before its flush leaves
those records to the next one (offsets are committed only after the insert). The server path
runs the same DDL and queries when DECKSTREAM_CLICKHOUSE_URL is set."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from services.analytics.rows import Row
from services.analytics.sink import AnalyticsSink
from services.analytics.store import AnalyticsStore
from services.events import topics
from services.events.models import PageExtracted
from services.events.publisher import KafkaPublisher
from services.settings import ClickHouseSettings

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


class Refusing(AnalyticsStore):
    """A real store whose next `refuse` inserts fail, as a ClickHouse that is down would."""

    refuse = 0
    refused = 0

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if self.refuse > 0:
            self.refuse -= 1
            self.refused += 1
            raise ConnectionError("ClickHouse is down")
        super().insert(table, rows)


@pytest.fixture()
async def store(tmp_path: Path) -> AsyncIterator[Refusing]:
    plain = AnalyticsStore.open(ClickHouseSettings(), tmp_path / "chdb")
    opened = Refusing(plain.client, plain.database, plain.where)
    opened.migrate()
    yield opened
    opened.close()


async def publish_pages(bootstrap: str, document_id: str, pages: range) -> None:
    publisher = KafkaPublisher(bootstrap)
    await publisher.start()
    try:
        for n in pages:
            page = PageExtracted(
                tenant_id="t",
                document_id=document_id,
                generation=1,
                number=n,
                label=str(n),
                section=[],
                text="text",
                method="text",
                tokens=1,
            )
            await publisher.publish(topics.PAGES.name, page)
    finally:
        await publisher.stop()


async def wait_until_async(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` (on the loop, so the sink runs meanwhile) until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def pages_of(store: AnalyticsStore, document_id: str) -> int:
    sql = "SELECT count() FROM deckstream.pages FINAL WHERE document_id = {d:String}"
    return int(store.query(sql, {"d": document_id}).rows[0][0])


async def test_clickhouse_down_loses_nothing_and_a_stopped_sink_leaves_its_records_to_the_next(
    kafka_bootstrap: str, store: Refusing
) -> None:
    group = f"analytics-test-{uuid.uuid4().hex[:8]}"
    doc = uuid.uuid4().hex
    store.refuse = 3
    sink = AnalyticsSink(kafka_bootstrap, store, batch_rows=50, flush_s=0.2, group=group)
    await sink.start()
    try:
        await publish_pages(kafka_bootstrap, doc, range(1, 31))
        await wait_until_async(
            lambda: pages_of(store, doc) == 30 and sink.error is None, 60, what="the pages after the outage"
        )
        assert store.refused == 3
    finally:
        await sink.stop()

    # A sink that stops between reading and inserting: the next one reads those records again.
    slow = AnalyticsSink(kafka_bootstrap, store, batch_rows=10_000, flush_s=3600, group=group)
    await slow.start()
    await publish_pages(kafka_bootstrap, doc, range(31, 41))
    await wait_until_async(lambda: slow.waiting >= 10, 60, what="the sink to read the new pages")
    await slow.stop()  # stopped before its flush: nothing inserted, nothing committed
    assert pages_of(store, doc) == 30
    again = AnalyticsSink(kafka_bootstrap, store, batch_rows=50, flush_s=0.2, group=group)
    await again.start()
    try:
        await wait_until_async(lambda: pages_of(store, doc) == 40, 60, what="the pages the stopped sink left")
    finally:
        await again.stop()


@pytest.mark.skipif(not os.environ.get("DECKSTREAM_CLICKHOUSE_URL"), reason="no ClickHouse server configured")
def test_the_server_path_runs_the_same_ddl_and_panels() -> None:
    from services.analytics.panels import expand, load_panels
    from tests.unit.test_analytics import a_small_run, load

    database = f"deckstream_contract_{uuid.uuid4().hex[:8]}"
    cfg = ClickHouseSettings(url=os.environ["DECKSTREAM_CLICKHOUSE_URL"], database=database)
    server = AnalyticsStore.open(cfg, Path("unused"))
    try:
        assert server.migrate() == [1, 2]
        load(server, a_small_run())
        now = int(time.time() * 1000)
        for panel in load_panels():
            sql = expand(panel.sql, database=database, from_ms=now - 3_600_000, to_ms=now + 60_000)
            assert server.query(sql).rows, panel.key
    finally:
        server.command(f"DROP DATABASE IF EXISTS {database}")
        server.close()
