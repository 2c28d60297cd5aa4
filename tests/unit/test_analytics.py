"""Analytics without a broker, on chDB through clickhouse-connect: the DDL on an empty and on an
older database, events into rows, every dashboard panel's SQL over a small run, read-only
queries, and the LLM call figures the card writer reports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.analytics.panels import expand, load_panels, plain, step_s
from services.analytics.rows import COLUMNS, rows_of
from services.analytics.store import AnalyticsStore, migrations
from services.cards.writing import CallMeasured, write_cards
from services.domain import Card, Chunk, Segment
from services.errors import RetryableError
from services.events.models import (
    AccountEvent,
    ApiKeyRevoked,
    CardsGenerated,
    ChunkFailed,
    DeckAssembled,
    Event,
    ExtractionEnded,
    LLMCallMeasured,
    PageExtracted,
    RecordRejected,
    SessionStarted,
    SignInFailed,
)
from services.llm.client import Completion, Prompt
from services.settings import ClickHouseSettings
from tests.unit.test_handlers import GOOD, TEXT, chunk_event, progress, upload_event

pytestmark = pytest.mark.clickhouse
IDS: dict[str, Any] = {"tenant_id": "t", "document_id": "doc", "generation": 1}


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[AnalyticsStore]:
    opened = AnalyticsStore.open(ClickHouseSettings(), tmp_path / "chdb")
    yield opened
    opened.close()


def card(i: int, page: int, **kw: Any) -> Card:
    return Card(
        f"c{i}",
        "basic",
        f"What is fact {i}?",
        "answer",
        "f.pdf",
        page,
        str(page),
        ("Intro",),
        0,
        "cards-chat-v1",
        **kw,
    )


def a_small_run() -> list[Event]:
    """The facts of a three-page document: page 3 with no text, one chunk dropped a card, one
    chunk failed, one LLM call unreadable; a record no stage could use."""
    now = int(time.time() * 1000)
    page = {**IDS, "section": ["Intro"], "method": "text", "tokens": 40, "occurred_at": now}
    return [
        upload_event(**{**IDS, "occurred_at": now - 5000}),
        upload_event(**{**IDS, "replay_chunks": [1]}),  # a reconciliation: not a document
        PageExtracted(**page, number=1, label="1", text=TEXT),
        PageExtracted(**page, number=2, label="2", text=TEXT),
        PageExtracted(**{**page, "tokens": 0}, number=3, label="3", text="", reason="image-only page"),
        ExtractionEnded(**IDS, status="partial", pages_total=3),
        CardsGenerated(
            **IDS,
            chunk_index=0,
            cards=[card(1, 1), card(2, 1, needs_review=True, review="weakly supported")],
            dropped=1,
            dropped_reasons={"not supported by the text": 1},
            attempts=1,
            model="m",
            prompt_version="cards-chat-v1",
            elapsed_ms=120,
            pages=["1"],
            retried=True,
        ),
        ChunkFailed(
            **IDS,
            chunk_index=1,
            reason="LLM answered HTTP 503",
            code="unavailable",
            attempts=3,
            chunk=chunk_event(chunk_index=1, segments=[Segment(2, "2", ("Intro",), TEXT)]),
        ),
        *(
            LLMCallMeasured(
                **IDS,
                chunk_index=0,
                round=0,
                attempt=n,
                model="m",
                prompt_version="cards-chat-v1",
                latency_ms=100 * n,
                prompt_tokens=300,
                completion_tokens=80,
                outcome=outcome,
            )
            for n, outcome in ((1, "unreadable"), (2, "ok"))
        ),
        DeckAssembled(
            **IDS,
            status="partial",
            deck_uri="blob://d",
            cards=2,
            chunks_total=2,
            chunks_failed=1,
            failures=[],
            duplicates=["c9"],
            pages_total=3,
            cards_written=2,
            created_at=now - 5000,
        ),
        progress(  # the clients' view: analytics read the deck instead
            "doc", "partial", tenant="t", kind="done", created_at=now - 5000, chunks_failed=1, progress=1.0
        ),
        RecordRejected(
            **{**IDS, "generation": 0},
            source_topic="documents.pages",
            partition=0,
            offset=7,
            stage="split",
            reason="undecodable",
        ),
        SessionStarted(
            tenant_id="t",
            session_id="s1",
            sha256="f" * 64,
            subject="user:usr_1",
            expires_at=now + 1,
            remote="10.0.0.7",
        ),
        SignInFailed(tenant_id="t", username="ada", reason="wrong-password", remote="10.0.0.8"),
        ApiKeyRevoked(tenant_id="t", key_id="k1", reason="left the school", revoked_by="cli:op"),
    ]


def load(store: AnalyticsStore, events: list[Event]) -> None:
    by_table: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        for table, row in rows_of(ev):
            by_table.setdefault(table, []).append(row)
    for table, rows in by_table.items():
        store.insert(table, rows)


def count(store: AnalyticsStore, table: str, final: bool = True) -> int:
    return int(store.query(f"SELECT count() FROM deckstream.{table}{' FINAL' if final else ''}").rows[0][0])


def test_the_ddl_applies_to_an_empty_and_to_an_older_database(store: AnalyticsStore) -> None:
    assert [m.version for m in migrations()] == [1, 2, 3, 4]
    assert store.migrate(upto=1) == [1]  # a database an older deckstream made
    older = (DeckAssembled, CardsGenerated, ChunkFailed, AccountEvent)  # their tables or columns came later
    load(store, [e for e in a_small_run() if not isinstance(e, older)])
    assert store.migrate() == [2, 3, 4] and store.migrate() == []
    assert count(store, "pages") == 3  # kept across the upgrade
    load(store, a_small_run())
    assert count(store, "decks") == 1 and count(store, "card_drops") == 1


def test_events_become_rows_and_a_redelivery_collapses(store: AnalyticsStore) -> None:
    store.migrate()
    run = a_small_run()
    load(store, run)
    load(store, run)  # every event delivered twice
    assert count(store, "pages", final=False) == 6 and count(store, "pages") == 3
    assert count(store, "documents") == 1  # the reconciliation is not a document
    assert count(store, "cards") == 2 and count(store, "llm_calls") == 2
    chunks = store.query(
        "SELECT chunk_index, outcome, reason, retried FROM deckstream.chunks FINAL ORDER BY chunk_index"
    ).rows
    assert chunks == [[0, "cards", "", 1], [1, "failed", "LLM answered HTTP 503", 0]]
    failures = store.query("SELECT stage, code FROM deckstream.failures FINAL ORDER BY stage").rows
    assert failures == [["split", "rejected"], ["write_cards", "unavailable"]]
    assert store.stats.inserts == 2 * len(
        {t for e in run for t, _ in rows_of(e)}
    )  # one INSERT per table per load


def test_a_later_fact_replaces_an_earlier_one(store: AnalyticsStore) -> None:
    store.migrate()
    failed = ChunkFailed(
        **IDS, chunk_index=1, reason="503", code="unavailable", attempts=3, chunk=chunk_event(chunk_index=1)
    )
    retried = CardsGenerated(
        **IDS,
        chunk_index=1,
        cards=[card(3, 2)],
        dropped=0,
        attempts=1,
        model="m",
        prompt_version="v",
        elapsed_ms=5,
        occurred_at=failed.occurred_at + 1000,
    )
    load(store, [failed])
    load(store, [retried])
    assert store.query("SELECT outcome FROM deckstream.chunks FINAL").rows == [["cards"]]


def test_the_audit_trail_has_sign_ins_failures_and_keys_and_no_secret(store: AnalyticsStore) -> None:
    store.migrate()
    load(store, a_small_run())
    rows = store.query(
        "SELECT action, subject, detail, remote FROM deckstream.audit FINAL ORDER BY at, action"
    ).rows
    assert sorted(map(tuple, rows)) == [
        ("key-revoked", "key:k1", "by cli:op: left the school", ""),
        ("sign-in", "user:usr_1", "", "10.0.0.7"),
        ("sign-in-failed", "user:ada", "wrong-password", "10.0.0.8"),
    ]
    assert "f" * 64 not in str(rows)  # the session's hash is not copied


def test_every_panel_runs_on_chdb_and_answers_with_rows(store: AnalyticsStore) -> None:
    store.migrate()
    load(store, a_small_run())
    now = int(time.time() * 1000)
    panels = load_panels()
    assert len({p.key for p in panels}) == len(panels) >= 10
    for panel in panels:
        sql = expand(panel.sql, database="deckstream", from_ms=now - 3_600_000, to_ms=now + 60_000)
        assert "$__" not in sql and "${" not in sql
        result = store.query(sql)
        assert result.rows, f"{panel.key}: no rows"
        if panel.kind == "timeseries":
            assert result.columns[0] == "time" and isinstance(plain(result.rows[0][0]), int)
    why = store.query(
        expand(
            next(p.sql for p in panels if p.key == "no_cards"),
            database="deckstream",
            from_ms=0,
            to_ms=now + 60_000,
        )
    )
    assert [(row[2], row[-1]) for row in why.rows] == [
        ("2", "LLM answered HTTP 503"),
        ("3", "image-only page"),
    ]


def test_macros_expand_like_grafanas_and_unknown_ones_are_refused() -> None:
    sql = expand(
        "SELECT $__timeInterval(at) AS time FROM ${database}.t WHERE $__timeFilter(at) / $__interval_s",
        database="db",
        from_ms=0,
        to_ms=3_600_000,
    )
    assert sql == (
        "SELECT toStartOfInterval(toDateTime(at), INTERVAL 60 second) AS time FROM db.t "
        "WHERE at >= toDateTime(0) AND at <= toDateTime(3600) / 60"
    )
    assert step_s(0, 24 * 3_600_000) == 1800
    with pytest.raises(ValueError, match="not supported"):
        expand("SELECT $__timeGroup(at, '5m')", database="db", from_ms=0, to_ms=1)
    with pytest.raises(ValueError, match="bad database"):
        expand("SELECT 1", database="db; DROP", from_ms=0, to_ms=1)


def test_ad_hoc_queries_are_read_only(store: AnalyticsStore) -> None:
    store.migrate()
    with pytest.raises(Exception, match="readonly"):
        store.query("DROP TABLE deckstream.pages", readonly=True)
    assert count(store, "pages") == 0  # still there


def test_every_table_has_the_columns_the_rows_give(store: AnalyticsStore) -> None:
    store.migrate()
    for table, columns in COLUMNS.items():
        described = [row[0] for row in store.query(f"DESCRIBE TABLE deckstream.{table}").rows]
        assert described == list(columns), table


class Scripted:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)

    async def generate(self, prompt: Prompt) -> Completion:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Completion(answer, "stop", prompt_tokens=200, completion_tokens=40)

    async def aclose(self) -> None:
        return None


async def test_the_card_writer_reports_every_llm_call() -> None:
    chunk = Chunk(index=0, segments=(Segment(1, "1", ("Intro",), TEXT),), tokens=30)
    calls: list[CallMeasured] = []

    async def no_wait(_: float) -> None:
        return None

    result = await write_cards(
        chunk,
        llm=Scripted(RetryableError("LLM answered HTTP 503"), "not json", GOOD),
        profile="chat",
        document_id="doc",
        generation=1,
        filename="f.txt",
        card_types=["basic"],
        per_chunk=2,
        max_attempts=3,
        sleep=no_wait,
        on_call=calls.append,
    )
    assert result.cards and [c.outcome for c in calls] == ["retryable", "unreadable", "ok"]
    assert [c.attempt for c in calls] == [1, 2, 3] and calls[0].completion is None
    assert calls[2].completion is not None and calls[2].completion.completion_tokens == 40
    assert all(c.latency_s >= 0 for c in calls) and calls[0].error == "LLM answered HTTP 503"


def test_the_grafana_provisioning_and_dashboards_agree() -> None:
    import json

    import yaml

    root = Path(__file__).resolve().parents[2]
    sources = yaml.safe_load(
        (root / "infra/grafana/provisioning/datasources/deckstream-clickhouse.yaml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    for path in (root / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert {v["name"] for v in dashboard["templating"]["list"]} == {"database"}
        for panel in dashboard["panels"]:
            (target,) = panel["targets"]
            assert panel["datasource"]["uid"] == target["datasource"]["uid"] == source["uid"]
            assert target["editorType"] == "sql" and target["rawSql"].startswith("SELECT")
            timeseries = panel["deckstream"]["kind"] == "timeseries"
            assert (target["format"], target["queryType"]) == (
                (0, "timeseries") if timeseries else (1, "table")
            )


def test_how_a_round_ended_is_read_from_its_deck(store: AnalyticsStore) -> None:
    store.migrate()
    load(store, a_small_run())
    (row,) = store.query(
        "SELECT status, pages_total, chunks_done, chunks_failed, cards, "
        "dateDiff('millisecond', created_at, finished_at) FROM deckstream.outcomes FINAL"
    ).rows
    assert row[:5] == ["partial", 3, 1, 1, 2] and 4000 <= row[5] <= 6000


def test_the_range_ends_after_the_last_milliseconds(store: AnalyticsStore) -> None:
    """An event in the current second is in a range that ends now (the end rounds up)."""
    store.migrate()
    now = int(time.time() * 1000)
    page = PageExtracted(
        **IDS, number=1, label="1", section=[], text="x", method="text", tokens=1, occurred_at=now
    )
    load(store, [page])
    sql = expand(
        "SELECT count() FROM ${database}.pages FINAL WHERE $__timeFilter(extracted_at)",
        database="deckstream",
        from_ms=now - 60_000,
        to_ms=now,
    )
    assert store.query(sql).rows == [[1]]
