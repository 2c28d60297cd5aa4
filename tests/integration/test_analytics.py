"""Analytics on a real run: the API's sink fills chDB from the topics in batches, every dashboard
panel answers with rows, redelivered events collapse, a rebuild from Kafka matches, and the CLI
queries through the API. Real broker, worker and API; the LLM simulator (with made-up cards, so
that the checks drop some)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import start_sim
from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, settings_env, start_stack
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from services.events import topics
from tests.conftest import TOKEN, corpus_file, stack_settings

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
DOCUMENTS = ("bee4750_syllabus.docx", "bee4750_hw01_julia-intro.pdf")
NO_TEXT = "samplefiles_imagemagick-images_no-text.pdf"  # image-only: fails without OCR


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sim, sim_url = start_sim(SimConfig(latency_s=0.02, capacity=8))
    httpx.post(f"{sim_url}/admin/faults", json={"unsupported_rate": 0.3}, timeout=5).raise_for_status()
    llm = {"url": sim_url, "model": "deckstream-sim", "profile": "chat", "max_in_flight": 8}
    home = tmp_path_factory.mktemp("analytics") / "home"
    limits = {"max_upload_bytes": 3 * 1024 * 1024, "extract_timeout_s": 120, "ocr": False}
    # Its own broker: a rebuild reads every topic from its start, and this run's are all there.
    running = start_stack(stack_settings(home, "", sim_url, llm=llm, limits=limits), api=True)
    try:
        assert running.api_url is not None
        with DeckstreamClient(running.api_url, TOKEN, timeout_s=30) as client:
            for name in (*DOCUMENTS, NO_TEXT):
                doc = client.upload(corpus_file(name)).json()["document_id"]
                assert list(client.events(doc, timeout_s=180))[-1].event == "done"
            # A sign-in and a failed one, for the audit trail.
            assert client.http.post("/v1/auth/session", json={"key": TOKEN}).status_code == 200
            assert client.http.post("/v1/auth/session", json={"key": "dsk_nosuchkey00_x"}).status_code == 401
        yield running
    finally:
        running.stop()
        terminate(sim)


@pytest.fixture()
def client(stack: Stack) -> Iterator[DeckstreamClient]:
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as c:
        yield c


def sql(client: DeckstreamClient, statement: str) -> list[list[Any]]:
    r = client.http.post("/v1/analytics/query", json={"sql": statement})
    assert r.status_code == 200, r.text
    rows: list[list[Any]] = r.json()["rows"]
    return rows


def settled(client: DeckstreamClient) -> None:
    """Wait until the sink has read and inserted everything the run produced."""

    def caught_up() -> bool:
        return bool(client.http.get("/readyz").json()["analytics"]["caught_up"])

    wait_until(caught_up, 60, interval=0.2, what="the analytics sink to catch up")


def test_every_panel_answers_with_rows_after_a_run(client: DeckstreamClient) -> None:
    settled(client)
    listed = client.http.get("/v1/analytics/panels").json()["panels"]
    keys = [p["id"] for p in listed]
    assert {"throughput", "llm_tokens", "failures", "no_cards", "quality", "cards_per_page"} <= set(keys)
    for key in keys:
        r = client.http.get(f"/v1/analytics/panels/{key}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rows"], f"panel {key} has no rows"
        if body["kind"] == "timeseries":
            assert body["columns"][0] == "time" and isinstance(body["rows"][0][0], int)
    failures = client.http.get("/v1/analytics/panels/failures").json()["rows"]
    assert any("extract" in label for label, _ in failures), failures  # the image-only PDF
    no_cards = client.http.get("/v1/analytics/panels/no_cards").json()
    why = dict(zip(no_cards["columns"], zip(*no_cards["rows"], strict=True), strict=True))["why"]
    assert any("image-only page" in w for w in why), why
    quality = client.http.get("/v1/analytics/panels/quality").json()
    row = dict(zip(quality["columns"], quality["rows"][0], strict=True))
    assert row["prompt_version"] == "cards-chat-v3" and row["cards"] > 0 and row["dropped"] > 0
    audit = client.http.get("/v1/analytics/panels/audit").json()
    actions = {row[audit["columns"].index("action")] for row in audit["rows"]}
    assert {"sign-in", "sign-in-failed"} <= actions, audit["rows"]
    assert client.http.get("/v1/analytics/panels/nope").status_code == 404
    # The simulator reports its timings as llama.cpp does: each call's time to the first token.
    calls = sql(
        client,
        "SELECT count(), countIf(ttft_ms = 20), sum(completion_tokens) FROM deckstream.llm_calls FINAL",
    )
    assert calls[0][0] > 0 and calls[0][1] == calls[0][0] and calls[0][2] > 0, calls


def test_the_sink_inserts_in_batches_and_redelivered_events_collapse(
    client: DeckstreamClient, stack: Stack
) -> None:
    settled(client)
    sink = client.http.get("/readyz").json()["analytics"]
    assert sink["rows"] > 0 and sink["inserts"] * 5 <= sink["rows"], sink  # never a row per insert
    before = sql(client, "SELECT count() FROM deckstream.llm_calls FINAL")[0][0]
    raw_before = sql(client, "SELECT count() FROM deckstream.llm_calls")[0][0]
    copied = _redeliver(stack.settings.kafka.bootstrap or "", topics.LLM_CALLS.name, 20)
    wait_until(
        lambda: sql(client, "SELECT count() FROM deckstream.llm_calls")[0][0] >= raw_before + copied,
        60,
        interval=0.2,
        what="the redelivered calls to be inserted",
    )
    assert sql(client, "SELECT count() FROM deckstream.llm_calls FINAL")[0][0] == before


def test_a_rebuild_from_kafka_matches_and_the_cli_queries_through_the_api(
    stack: Stack, client: DeckstreamClient
) -> None:
    settled(client)
    before = {
        table: sql(client, f"SELECT count() FROM deckstream.{table} FINAL")[0][0]
        for table in ("documents", "pages", "chunks", "cards", "llm_calls", "failures")
    }
    env = settings_env(stack.settings) | {"DECKSTREAM_API_URL": stack.api_url or ""}
    done = subprocess.run(
        [sys.executable, "-m", "deckstream", "analytics", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["identical"] is True, report
    assert all(t["live_rows"] == t["rebuilt_rows"] and t["swapped"] for t in report["tables"].values())
    after = {table: sql(client, f"SELECT count() FROM deckstream.{table} FINAL")[0][0] for table in before}
    assert after == before and before["cards"] > 0
    asked = subprocess.run(
        [
            sys.executable,
            "-m",
            "deckstream",
            "analytics",
            "query",
            "SELECT count() AS n FROM deckstream.cards FINAL",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.split() == ["n", str(before["cards"])]
    refused = subprocess.run(
        [sys.executable, "-m", "deckstream", "analytics", "query", "DROP TABLE deckstream.cards"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "readonly" in refused.stderr.lower(), refused.stderr
    assert sql(client, "SELECT count() FROM deckstream.cards FINAL")[0][0] == before["cards"]


def _redeliver(bootstrap: str, topic: str, count: int) -> int:
    """Send the first `count` records of `topic` again, as a redelivery would: the same bytes."""
    import asyncio

    async def run() -> int:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=5000, max_records=count)
            records = [r for part in got.values() for r in part][:count]
        finally:
            await consumer.stop()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for r in records:
                await producer.send_and_wait(topic, r.value, key=r.key)
        finally:
            await producer.stop()
        return len(records)

    sent = asyncio.run(run())
    assert sent > 0
    return sent
