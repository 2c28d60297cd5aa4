"""A record no stage can use goes to the dead-letter topic with the reason and where it came from;
the worker and the API keep going. Real broker, worker, API and llama.cpp."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_stack
from infra.process import wait_until
from services.events import topics
from services.events.models import CancelDocument, RecordRejected, decode, encode
from tests.conftest import TOKEN, stack_settings

pytestmark = [pytest.mark.kafka, pytest.mark.llm]
GARBAGE = b"\x00not an event"
READ_BY_THE_WORKER = (
    topics.UPLOADED,
    topics.PAGES,
    topics.CHUNKS,
    topics.CHUNKS_INTERACTIVE,
    topics.CHUNKS_RETRY,
    topics.CARDS,
    topics.CONTROL,
)
READ_BY_THE_API = (topics.PROGRESS, topics.DECKS, topics.GENERATIONS, topics.ACCOUNTS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llm_url: str) -> Iterator[Stack]:
    """On a broker of its own: the garbage stays out of the other tests' topics."""
    st = start_stack(stack_settings(tmp_path_factory.mktemp("dead-letters"), "", llm_url), api=True)
    yield st
    st.stop()


async def dead_letters(bootstrap: str, key: bytes, want: int, deadline_s: float = 60) -> list[RecordRejected]:
    """The dead letters of records keyed `key`, once `want` distinct records have one."""
    consumer = AIOKafkaConsumer(
        topics.DEAD_LETTERS.name, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[str, RecordRejected] = {}
    try:
        deadline = time.monotonic() + deadline_s
        while len(found) < want:
            assert time.monotonic() < deadline, f"{len(found)} of {want} dead letters: {sorted(found)}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    letter = decode(record.value)
                    if isinstance(letter, RecordRejected) and record.key == key:
                        found[letter.event_id] = letter  # one per record, however many readers report it
    finally:
        await consumer.stop()
    return list(found.values())


async def send_garbage(bootstrap: str, key: bytes) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    """Garbage into every pipeline topic, and a CancelDocument where chunks go: where each landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = {}
        for spec in READ_BY_THE_WORKER + READ_BY_THE_API:
            meta = await producer.send_and_wait(spec.name, GARBAGE, key=key)
            sent[spec.name] = (meta.partition, meta.offset)
        wrong = CancelDocument(tenant_id="t", document_id=key.decode(), generation=1)
        meta = await producer.send_and_wait(
            topics.CHUNKS.name, encode(wrong), key=key
        )  # decodable, wrong type
        wrong_at = (meta.partition, meta.offset)
    finally:
        await producer.stop()
    return sent, wrong_at


def test_garbage_in_each_pipeline_topic_reaches_the_dead_letters_and_nothing_stops(
    stack: Stack, tmp_path: Path
) -> None:
    bootstrap = stack.settings.kafka.bootstrap
    assert bootstrap is not None and stack.api_url is not None
    key = f"garbage-{uuid.uuid4().hex}".encode()
    sent, wrong_at = asyncio.run(send_garbage(bootstrap, key))

    letters = asyncio.run(dead_letters(bootstrap, key, want=len(sent) + 1))
    where = {(d.source_topic, d.partition, d.offset): d for d in letters}
    for topic, (partition, offset) in sent.items():
        letter = where[(topic, partition, offset)]
        assert letter.payload == GARBAGE and "undecodable value" in letter.reason, letter
        assert letter.stage == ("api" if topic in {t.name for t in READ_BY_THE_API} else "worker")
    assert "not a ChunkCreated: CancelDocument" in where[(topics.CHUNKS.name, *wrong_at)].reason

    def counted() -> bool:  # the API counts them by the topic they came from
        found = httpx.get(f"{stack.api_url}/readyz", timeout=5).json()["dead_letters"]
        return all(found.get(t, 0) >= 1 for t in sent)

    wait_until(counted, 30, interval=0.2, what="the API to count a dead letter of every topic")
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        notes = tmp_path / "notes.txt"
        notes.write_text("Photosynthesis makes glucose in the chloroplasts of green plants.\n" * 3)
        r = client.upload(notes)
        assert r.status_code == 202, r.text
        events = list(client.events(r.json()["document_id"], timeout_s=300))
        assert events[-1].event == "done" and events[-1].data["status"] in ("completed", "partial")
