"""A chunk lost in flight (Faust #606: an offset committed past it, then the worker stopped).

The tracker is given the facts of a document whose last chunk never reached the LLM: the
upload, the plan and the cards of every other chunk, published as the pipeline would have.
Nobody is working on the missing chunk; the reconciler must notice the silence, have the
splitter send that chunk (and only it) again, and the document must complete.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import start_sim
from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_stack
from infra.llm.sim import SimConfig
from infra.process import terminate, wait_until
from services.documents.chunking import chunk_pages
from services.domain import Card, Chunk, Page
from services.events import topics
from services.events.models import CardsGenerated, ChunksPlanned, DocumentUploaded, Event, ExtractionEnded
from services.events.publisher import KafkaPublisher
from services.extraction import extract
from services.settings import LimitSettings, Settings
from services.storage.blobs import LocalBlobStore
from tests.conftest import TOKEN, corpus_file, stack_settings

pytestmark = pytest.mark.kafka

DOC = corpus_file("bee4750_syllabus.docx")
AFTER_S = 2.0


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    proc, url = start_sim(SimConfig(latency_s=0.05, capacity=8))
    yield url
    terminate(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, sim_url: str) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("reconcile")
    settings = stack_settings(
        home,
        kafka_bootstrap,
        sim_url,
        llm={"url": sim_url, "model": "deckstream-sim", "profile": "chat", "max_in_flight": 8},
        kafka={
            "bootstrap": kafka_bootstrap,
            "partitions": 4,
            "reconcile_after_s": AFTER_S,
            "reconcile_every_s": 0.5,
        },
    )
    st = start_stack(settings, api=True)
    yield st
    st.stop()


def plan(path: Path, settings: Settings) -> list[Chunk]:
    """The chunks the splitter makes of this file with these settings."""
    pages = (p for p in extract(path, LimitSettings(), filename=path.name) if isinstance(p, Page))
    return chunk_pages(pages, settings.chunks.max_tokens, settings.chunks.overlap_tokens)


def publish(bootstrap: str, events: list[tuple[str, Event]]) -> None:
    async def run() -> None:
        publisher = KafkaPublisher(bootstrap)
        await publisher.start()
        try:
            for topic, event in events:
                await publisher.publish(topic, event)
        finally:
            await publisher.stop()

    asyncio.run(run())


def test_a_chunk_lost_in_flight_is_sent_again_and_the_document_completes(
    stack: Stack, kafka_bootstrap: str
) -> None:
    settings = stack.settings
    chunks = plan(DOC, settings)
    assert len(chunks) >= 2, "the test needs a document of several chunks"
    with DOC.open("rb") as src:
        uri, sha, size = LocalBlobStore(settings.blob_dir).put_upload(src, max_bytes=1 << 30)
    ids = {"tenant_id": settings.tenant, "document_id": uuid.uuid4().hex, "generation": settings.generation}
    up = DocumentUploaded(
        **ids,
        filename=DOC.name,
        kind="docx",
        size=size,
        sha256=sha,
        blob_uri=uri,
        card_types=["basic"],
        cards_per_chunk=4,
    )
    lost = chunks[-1].index
    facts: list[tuple[str, Event]] = [
        (topics.PAGES.name, up),  # to the tracker only: the splitter reads documents.uploaded
        (topics.PAGES.name, ExtractionEnded(**ids, status="ok", pages_total=1)),
        (topics.CARDS.name, ChunksPlanned(**ids, chunks_total=len(chunks), pages_total=1)),
    ]
    for chunk in chunks[:-1]:
        card = Card(
            f"{ids['document_id']}-{chunk.index}",
            "basic",
            "Made before the crash?",
            "Yes",
            DOC.name,
            1,
            "1",
            (),
            chunk.index,
            "v1",
        )
        made = CardsGenerated(
            **ids,
            chunk_index=chunk.index,
            cards=[card],
            dropped=0,
            attempts=1,
            model="m",
            prompt_version="v1",
            elapsed_ms=1,
        )
        facts.append((topics.CARDS.name, made))

    publish(kafka_bootstrap, facts)

    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        # The API knows the document once the tracker has reported on these facts.
        known = f"/v1/documents/{ids['document_id']}"
        wait_until(lambda: client.http.get(known).status_code == 200, 30, interval=0.1, what="the document")
        events = list(client.events(ids["document_id"], timeout_s=60))
        final = events[-1]
        assert final.event == "done", [e.event for e in events[-5:]]
        assert final.data["status"] == "completed", final.data
        assert final.data["chunks_done"] == len(chunks) and final.data["chunks_failed"] == 0
        streamed = [e.data for e in events if e.event == "card"]
        again = {c["card_id"] for c in streamed if c["chunk_index"] == lost}
        assert again, "the lost chunk's cards never came"
        deck = client.deck(ids["document_id"]).json()
        # The deck holds what the worker stored: the lost chunk's cards, generated after all.
        assert {c["card_id"] for c in deck["cards"]} == again
