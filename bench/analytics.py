"""`python -m bench analytics`: what analytics cost.

1. Sink throughput: `--events N` synthetic pipeline events (pages, chunks with cards, LLM calls)
   on a fresh broker, read by the analytics sink into chDB: rows per second from its start to
   the last row in the tables. Side by side, the floor: the same rows inserted straight into
   chDB in batches of the sink's size, with no Kafka.
2. The cost the sink adds to the pipeline: the `pipeline` bench's 352-page book through the
   real broker, worker and API against the simulator, with the API's sink off and on,
   alternating (`--rounds` of each, the best of each kept); target: under 5% added wall time.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import BOOK, run_document, sim_stack
from bench.pipeline import SIM
from infra.kafka.admin import ensure_topics
from infra.kafka.launcher import start_broker, stop_broker
from services.analytics.rows import Row, rows_of
from services.analytics.sink import AnalyticsSink
from services.analytics.store import AnalyticsStore
from services.domain import Card
from services.events import topics
from services.events.models import CardsGenerated, Event, LLMCallMeasured, PageExtracted, encode
from services.settings import ClickHouseSettings

BATCH = 2000


def synthetic(n: int) -> list[tuple[str, Event]]:
    """(topic, event) for a mix like a book's: per page a page event, a chunk with 3 cards, a call."""
    out: list[tuple[str, Event]] = []
    for i in range(n // 3):
        ids = {"tenant_id": "t", "document_id": f"d{i // 300}", "generation": 1}
        page = i % 300 + 1
        out.append(
            (
                topics.PAGES.name,
                PageExtracted(
                    **ids,
                    number=page,
                    label=str(page),
                    section=["A"],
                    text="x" * 1500,
                    method="text",
                    tokens=350,
                ),
            )
        )
        cards = [
            Card(
                f"c{i}-{k}",
                "basic",
                f"Question {k} of chunk {i}?",
                "answer",
                "book.pdf",
                page,
                str(page),
                ("A",),
                i,
                "cards-chat-v1",
            )
            for k in range(3)
        ]
        out.append(
            (
                topics.CARDS.name,
                CardsGenerated(
                    **ids,
                    chunk_index=i,
                    cards=cards,
                    dropped=1,
                    dropped_reasons={"not supported by the text": 1},
                    attempts=1,
                    model="m",
                    prompt_version="cards-chat-v1",
                    elapsed_ms=300,
                    pages=[str(page)],
                ),
            )
        )
        out.append(
            (
                topics.LLM_CALLS.name,
                LLMCallMeasured(
                    **ids,
                    chunk_index=i,
                    round=0,
                    attempt=1,
                    model="m",
                    prompt_version="cards-chat-v1",
                    latency_ms=300,
                    prompt_tokens=500,
                    completion_tokens=120,
                    outcome="ok",
                ),
            )
        )
    return out


def rows_in(store: AnalyticsStore) -> int:
    tables = ("pages", "chunks", "cards", "llm_calls", "card_drops")
    return sum(int(store.query(f"SELECT count() FROM deckstream.{t}").rows[0][0]) for t in tables)


async def sink_throughput(events: list[tuple[str, Event]], home: Path) -> dict[str, Any]:
    broker = start_broker(home, heap="512m")
    try:
        ensure_topics(broker.bootstrap, topics.ALL, partitions=4)
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, linger_ms=20, max_batch_size=512 * 1024
        )
        await producer.start()
        try:
            for topic, ev in events:
                await producer.send(topic, encode(ev), key=ev.document_id.encode())
            await producer.flush()
        finally:
            await producer.stop()
        expected = sum(1 for _, ev in events for _ in rows_of(ev))

        store = AnalyticsStore.open(ClickHouseSettings(), home / "chdb-sink")
        store.migrate()
        sink = AnalyticsSink(broker.bootstrap, store, batch_rows=BATCH, flush_s=1.0)
        loop, all_in = asyncio.get_running_loop(), asyncio.Event()
        insert = store.insert

        def counted(table: str, rows: list[Row]) -> None:  # runs in the sink's insert thread
            insert(table, rows)
            if store.stats.rows >= expected:
                loop.call_soon_threadsafe(all_in.set)

        store.insert = counted  # type: ignore[method-assign,assignment]
        t0 = time.monotonic()
        await sink.start()
        await asyncio.wait_for(all_in.wait(), 600)
        sink_s = time.monotonic() - t0
        await sink.stop()
        inserts = store.stats.inserts
        assert rows_in(store) == expected
        store.close()
    finally:
        stop_broker(broker)

    direct = AnalyticsStore.open(ClickHouseSettings(), home / "chdb-direct")
    direct.migrate()
    by_table: dict[str, list[Row]] = {}
    for _, ev in events:
        for table, row in rows_of(ev):
            by_table.setdefault(table, []).append(row)
    t0 = time.monotonic()
    for table, rows in by_table.items():
        for start in range(0, len(rows), BATCH):
            direct.insert(table, rows[start : start + BATCH])
    direct_s = time.monotonic() - t0
    direct.close()
    return {
        "events": len(events),
        "rows": expected,
        "sink_s": round(sink_s, 3),
        "sink_rows_per_s": round(expected / sink_s),
        "sink_inserts": inserts,
        "direct_s": round(direct_s, 3),
        "direct_rows_per_s": round(expected / direct_s),
        "sink_vs_direct": round(sink_s / direct_s, 2),
    }


def pipeline_cost(rounds: int, flush_s: float) -> dict[str, Any]:
    walls: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            with sim_stack(SIM, analytics=mode == "on", clickhouse={"flush_s": flush_s}) as run:
                walls[mode].append(run_document(run.client, BOOK)["wall_s"])
    best = {mode: min(v) for mode, v in walls.items()}
    median = {mode: statistics.median(v) for mode, v in walls.items()}
    return {
        "file": BOOK.name,
        "rounds": rounds,
        "flush_s": flush_s,
        "wall_s": {mode: [round(w, 3) for w in v] for mode, v in walls.items()},
        "best_off_s": round(best["off"], 3),
        "best_on_s": round(best["on"], 3),
        "added": round(best["on"] / best["off"] - 1, 3),
        "median_off_s": round(median["off"], 3),
        "median_on_s": round(median["on"], 3),
        "added_median": round(median["on"] / median["off"] - 1, 3),
        "target_added": 0.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench analytics")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--flush-s", type=float, default=1.0, help="the sink's flush interval in the pipeline runs"
    )
    parser.add_argument("--pipeline-only", action="store_true", help="skip the sink throughput part")
    args = parser.parse_args(sys.argv[2:])
    sink: dict[str, Any] | None = None
    if not args.pipeline_only:
        home = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
        try:
            sink = asyncio.run(sink_throughput(synthetic(args.events), home))
        finally:
            shutil.rmtree(home, ignore_errors=True)
    result = {"bench": "analytics", "sink": sink, "pipeline": pipeline_cost(args.rounds, args.flush_s)}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
