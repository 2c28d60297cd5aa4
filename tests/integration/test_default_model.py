"""The default model of `make run` (Qwen2.5-Coder-1.5B-Instruct, installed by `make test` too) on
its own path: the chat profile its template gives, the v3 chat prompt with its JSON schema, the
worked example in the slides' language, and the follow-up for pages left without a card."""

from __future__ import annotations

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
from services.settings import LLMSettings, Settings
from tests.conftest import corpus_file

pytestmark = pytest.mark.llm

MODEL = LLMSettings.model_fields["model"].default  # the default, whatever the environment sets


def model_cache() -> Path:
    """Where `make run` assembles the GGUF (1.1 GB, once per machine): the default home's."""
    return Path(os.environ.get("DECKSTREAM_TEST_MODELS", Settings().home / "models"))


@pytest.fixture(scope="module")
def qwen() -> Iterator[RunningServer]:
    # One slot, greedy: the same answer on every run (batched slots vary, docs/card-quality.md).
    running = start_local_llm(MODEL, cache=model_cache(), n_parallel=1, ctx_per_slot=4096, threads=0)
    yield running
    running.stop()


def slides(*numbers: int) -> Chunk:
    deck = pptx.Presentation(str(corpus_file("py4e_es_2.1_Spanish.pptx")))
    pages = [
        Segment(
            n, str(n), (), "\n".join(s.text_frame.text for s in deck.slides[n - 1].shapes if s.has_text_frame)
        )
        for n in numbers
    ]
    return Chunk(index=0, segments=tuple(pages), tokens=200)


async def test_the_default_model_writes_spanish_cards_on_every_slide_or_says_why(qwen: RunningServer) -> None:
    assert MODEL == "qwen2.5-coder-1.5b"  # the default: what `make run` serves
    chunk = slides(2, 4)
    assert detect(chunk.text).code == "es" and all(len(s.text) >= 300 for s in chunk.segments)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) as http:
        profile = await detect_profile(http, qwen.url, "openai")
        assert profile == "chat"  # an instruct model: JSON answers under a schema
        result = await write_cards(
            chunk,
            llm=OpenAICompatibleClient(http, qwen.url, MODEL),
            profile=profile,
            document_id="es",
            generation=1,
            filename="es.pptx",
            card_types=("basic",),
            per_chunk=3,
            temperature=0.0,
            prompt_version=Settings().cards.prompt_version,
            language="es",
            source_language="es",
        )
    assert result.cards, result.dropped
    pairs = [(c.front, c.back) for c in result.cards]
    told = [detect(f"{front} {back}", min_confidence=0.0).code for front, back in pairs]
    assert all(code in ("es", "und") for code in told) and "es" in told, pairs
    assert {c.prompt_version for c in result.cards} == {"cards-chat-v3"}
    assert all(c.support >= 0.5 and c.page in (2, 4) for c in result.cards), pairs
    # Each slide ends with a card, or with why it has none after it was asked about alone.
    uncovered = set(result.pages.uncovered) if result.pages is not None else set()
    assert {c.page_label for c in result.cards} | uncovered == {"2", "4"}
    assert all(
        why.startswith("asked again with only its text")
        for why in (result.pages.uncovered if result.pages else {}).values()
    )
