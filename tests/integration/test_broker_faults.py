"""Processes killed under the pipeline: the local broker SIGKILLed and restarted mid-document,
and the API SIGKILLed among uploads. Real broker, worker and API; the LLM simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from bench.harness import start_sim
from deckstream.client import DeckstreamClient
from deckstream.stack import start_api_for, start_stack
from infra.kafka.launcher import start_broker
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from services.events import topics
from services.events.models import DocumentUploaded, decode
from tests.conftest import TOKEN, stack_settings, upload_until_a_card

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
LLM = {"model": "deckstream-sim", "profile": "chat", "max_in_flight": 8}
TERMINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    proc, url = start_sim(SimConfig(latency_s=0.2, capacity=8))  # a book takes ~10 s of LLM work
    yield url
    terminate(proc)


def settled(client: DeckstreamClient, doc: str, deadline_s: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = client.status(doc)
        return s if s["status"] in TERMINAL and client.deck(doc).json()["complete"] else None

    return wait_until(check, deadline_s, interval=0.2, what=f"document {doc} to settle")


def test_a_broker_killed_and_restarted_mid_document_loses_and_duplicates_no_card(
    tmp_path: Path, sim_url: str
) -> None:
    home = tmp_path / "home"
    stack = start_stack(stack_settings(home, "", sim_url, llm={"url": sim_url, **LLM}), api=True)
    try:
        assert stack.api_url is not None and stack.broker is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=60) as client:
            doc, seen = upload_until_a_card(client, "py4e_python-for-everybody_book.docx")
            killed = stack.broker
            os.kill(killed.pid, signal.SIGKILL)
            assert killed.process is not None and killed.process.wait(timeout=10) == -signal.SIGKILL
            assert client.status(doc)["status"] not in TERMINAL
            stack.broker = start_broker(
                home, port=killed.port, timeout_s=120
            )  # the same data, the same address

            rest = list(client.events(doc, last_event_id=seen[-1].id, timeout_s=240))
            assert rest and rest[-1].event == "done", [e.event for e in rest[-5:]]
            final = settled(client, doc)
            assert final["status"] == "completed", final
            assert final["chunks_done"] == final["chunks_total"] > 0 and final["chunks_failed"] == 0
            streamed = [e.data["card_id"] for e in seen + rest if e.event == "card"]
            assert len(streamed) == len(set(streamed)), "a card was streamed twice"
            cards = client.deck(doc).json()["cards"]
            ids = [c["card_id"] for c in cards]
            assert cards and len(ids) == len(set(ids)) and set(ids) <= set(streamed)
            assert final["cards"] == len(streamed)  # every chunk's cards counted once, none lost
    finally:
        stack.stop()


async def uploads_in_log(bootstrap: str, prefix: str) -> dict[str, str]:
    """filename -> document id of every upload on documents.uploaded whose name starts with prefix."""
    consumer = AIOKafkaConsumer(
        topics.UPLOADED.name, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        found: dict[str, str] = {}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for ev in (decode(r.value) for r in records):
                    if isinstance(ev, DocumentUploaded) and ev.filename.startswith(prefix):
                        found[ev.filename] = ev.document_id
        return found
    finally:
        await consumer.stop()


def test_an_api_killed_among_uploads_keeps_every_one_it_accepted_and_none_it_refused(
    tmp_path: Path, kafka_bootstrap: str, sim_url: str
) -> None:
    stack = start_stack(
        stack_settings(tmp_path / "home", kafka_bootstrap, sim_url, llm={"url": sim_url, **LLM}), api=True
    )
    prefix = f"kill-{uuid.uuid4().hex[:8]}-"
    accepted: dict[str, str] = {}  # filename -> document id, for each 202
    refused: set[str] = set()
    unanswered: set[str] = set()  # in flight when the API died
    unexpected: list[tuple[str, int, str]] = []
    lock, stop = threading.Lock(), threading.Event()

    def uploader(n: int) -> None:
        with httpx.Client(base_url=str(stack.api_url), headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            i = 0
            while not stop.is_set():
                i += 1
                good = i % 3 != 0
                name = f"{prefix}{n}-{i}.txt" if good else f"{prefix}{n}-{i}-text-named.pdf"
                body = f"Upload {n}-{i}: photosynthesis makes glucose in chloroplasts.\n".encode()
                try:
                    r = http.post("/v1/documents", files={"file": (name, body)}, timeout=30)
                except httpx.HTTPError:
                    with lock:
                        unanswered.add(name)
                    return
                with lock:
                    if r.status_code == 202:
                        accepted[name] = r.json()["document_id"]
                    elif r.status_code == 415 and not good:
                        refused.add(name)
                    else:
                        unexpected.append((name, r.status_code, r.text))

    try:
        threads = [threading.Thread(target=uploader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 12 and refused, 60, interval=0.05, what="uploads to be answered")
        api = next(p for p in stack.children if "api" in p.args and p.poll() is None)
        os.kill(api.pid, signal.SIGKILL)
        api.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stack.children.remove(api)
        assert not unexpected, unexpected[:3]

        assert kafka_bootstrap
        logged = asyncio.run(uploads_in_log(kafka_bootstrap, prefix))
        assert {n: logged.get(n) for n in accepted} == accepted  # every 202 is in the log, as answered
        assert not refused & set(logged)  # nothing refused was queued
        assert set(logged) <= set(accepted) | unanswered  # nothing else but requests cut off mid-answer

        (stack.logs / "api.log").rename(stack.logs / "api-killed.log")
        stack.settings.api.port = 0
        start_api_for(stack)
        with DeckstreamClient(str(stack.api_url), TOKEN, timeout_s=30) as client:

            def listed() -> bool:
                return set(accepted.values()) <= {
                    d["document_id"] for d in client.http.get("/v1/documents").json()
                }

            wait_until(listed, 60, interval=0.2, what="the restarted API to list every accepted upload")
    finally:
        stop.set()
        stack.stop()
