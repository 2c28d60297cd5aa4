"""The real local Gemma 3 270M server (xllamacpp in a child process) writing grounded cards."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pptx
import pytest

from infra.llm.server import RunningServer, start_local_llm
from services.cards.language import detect
from services.cards.writing import write_cards
from services.domain import Chunk, Segment
from services.llm.adapters import OpenAICompatibleClient, detect_profile
from services.llm.client import Prompt
from tests.conftest import corpus_file

pytestmark = pytest.mark.llm

# Two pages of textbook-like text, unlike the few-shot prompt's own photosynthesis example.
CHUNK = Chunk(
    index=3,
    segments=(
        Segment(
            4,
            "4",
            ("Hydrology", "The water cycle"),
            "The water cycle describes how water moves between the oceans, the air and the land. "
            "Heat from the sun makes water evaporate from the oceans.",
        ),
        Segment(
            5,
            "5",
            ("Hydrology", "Precipitation"),
            "Water vapour cools as it rises and condenses into clouds. Precipitation returns the "
            "water to the ground as rain or snow.",
        ),
    ),
    tokens=60,
)


def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the GGUF is assembled (~1 s, once per run unless DECKSTREAM_TEST_MODELS is set)."""
    return Path(os.environ.get("DECKSTREAM_TEST_MODELS", tmp_path_factory.getbasetemp() / "models"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    cache = models(tmp_path_factory)
    running = start_local_llm("gemma3-270m", cache=cache, n_parallel=2, ctx_per_slot=2048, threads=0)
    yield running
    running.stop()


async def test_gemma_writes_grounded_cited_cards(server: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
        profile = await detect_profile(http, server.url, "openai")
        assert profile == "completion"  # a base model: no chat template of its own
        llm = OpenAICompatibleClient(http, server.url, "gemma3-270m")
        result = await write_cards(
            CHUNK,
            llm=llm,
            profile=profile,
            document_id="syllabus",
            generation=1,
            filename="syllabus.docx",
            card_types=("basic",),
            per_chunk=4,
            max_tokens=160,
            temperature=0.0,  # greedy: the same cards on every run, so the test is not flaky
        )
    assert result.cards, result.dropped
    for card in result.cards:
        assert card.support >= 0.5 and card.front and card.back
        assert CHUNK.pages[0] <= card.page <= CHUNK.pages[1]
        assert card.prompt_version == "cards-fewshot-v1"


async def test_gemma_writes_cards_from_spanish_slides_in_spanish(server: RunningServer) -> None:
    """The v3 few-shot prompt, its example in Spanish: the cards are in the slides' language."""
    deck = pptx.Presentation(str(corpus_file("py4e_es_2.1_Spanish.pptx")))
    pages = [
        Segment(
            n, str(n), (), "\n".join(s.text_frame.text for s in deck.slides[n - 1].shapes if s.has_text_frame)
        )
        for n in (2, 4)
    ]
    chunk = Chunk(index=0, segments=tuple(pages), tokens=200)
    assert detect(chunk.text).code == "es"
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as http:
        llm = OpenAICompatibleClient(http, server.url, "gemma3-270m")
        result = await write_cards(
            chunk,
            llm=llm,
            profile="completion",
            document_id="es",
            generation=1,
            filename="es.pptx",
            card_types=("basic",),
            per_chunk=4,
            max_tokens=160,
            temperature=0.0,
            prompt_version="v3",
            language="es",
            source_language="es",
        )
    assert result.cards, result.dropped
    told = [detect(f"{c.front} {c.back}", min_confidence=0.0).code for c in result.cards]
    assert all(code in ("es", "und") for code in told) and "es" in told, [
        (c.front, c.back) for c in result.cards
    ]
    assert {c.prompt_version for c in result.cards} == {"cards-fewshot-v3"}


async def test_a_seed_makes_sampled_answers_repeatable(server: RunningServer) -> None:
    """The worker seeds each call from the chunk's cache key: one call at a time, llama.cpp
    gives the same seed the same answer."""
    prompt = Prompt(text="Text: Rain falls from clouds.\nQ:", max_tokens=24, temperature=1.0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
        llm = OpenAICompatibleClient(http, server.url, "gemma3-270m")
        seeded = [(await llm.generate(dataclasses.replace(prompt, seed=s))).text for s in (7, 7, 8, 9)]
    assert seeded[0] == seeded[1]
    assert len(set(seeded[1:])) > 1, seeded  # the seed is what decides: other seeds, other answers


def test_stopping_the_server_ends_the_child_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start_local_llm(
        "gemma3-270m", cache=models(tmp_path_factory), n_parallel=1, ctx_per_slot=1024, threads=0
    )
    assert httpx.get(f"{running.url}/health").json() == {"status": "ok"}
    pid = running.process.pid
    running.stop()
    assert running.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.url}/health")
