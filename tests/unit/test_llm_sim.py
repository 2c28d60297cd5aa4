"""The LLM simulator, through httpx's ASGI transport: slots, faults, grounded answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from infra.llm.sim import MADE_UP, SimConfig, create_sim_app, ideal_time
from services.cards.rules import NOT_SUPPORTED, ChunkCards
from services.cards.writing import write_cards
from services.domain import Chunk, Segment
from services.errors import BadModelOutput
from services.llm.adapters import OpenAICompatibleClient, detect_profile
from services.llm.client import Profile

CHUNK = Chunk(
    index=0,
    segments=(
        Segment(
            7,
            "7",
            ("Cells",),
            "Mitochondria produce most of the chemical energy needed by a cell. They convert glucose "
            "into adenosine triphosphate through cellular respiration.",
        ),
        Segment(
            8,
            "8",
            ("Cells", "Membranes"),
            "The plasma membrane controls which substances enter or leave the cell. It is built from "
            "a phospholipid bilayer with embedded proteins.",
        ),
    ),
    tokens=70,
)


@asynccontextmanager
async def sim(**config: Any) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, int]]]:
    app = create_sim_app(SimConfig(**config))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield http, app.state.sim.stats


async def sim_cards(
    http: httpx.AsyncClient, profile: Profile = "chat", types: tuple[str, ...] = ("basic",)
) -> ChunkCards:
    """The cards the real generation path makes of CHUNK with the simulator's answers."""
    llm = OpenAICompatibleClient(http, "http://sim", "sim")
    return await write_cards(
        CHUNK,
        llm=llm,
        profile=profile,
        document_id="d",
        generation=1,
        filename="bio.pdf",
        card_types=types,
        per_chunk=4,
    )


def chat_body(text: str = "Lists hold ordered items in memory.") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"<<<\n{text}\n>>>"}], "max_tokens": 256}


async def test_requests_beyond_capacity_queue() -> None:
    async with sim(capacity=3, latency_s=0.02) as (http, stats):
        started = time.monotonic()
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=chat_body()) for _ in range(9))
        )
        elapsed = time.monotonic() - started
    assert all(a.status_code == 200 for a in answers)
    assert stats["max_concurrent"] == 3 and stats["served"] == 9
    assert elapsed >= 0.9 * ideal_time(9, SimConfig(capacity=3, latency_s=0.02))  # three waves, not one


def test_ideal_time_counts_waves_and_decoding_at_the_saturated_rate() -> None:
    cfg = SimConfig(capacity=4, latency_s=0.5, tokens_per_s=20)
    # 3 waves of latency, and 900 tokens at 4 slots × 20 tokens/s
    assert ideal_time(9, cfg, completion_tokens=900) == pytest.approx(3 * 0.5 + 900 / 80)


async def test_the_simulator_counts_the_tokens_it_decoded() -> None:
    async with sim(latency_s=0) as (http, stats):
        answer = (await http.post("/v1/chat/completions", json=chat_body())).json()
    assert stats["completion_tokens"] == answer["usage"]["completion_tokens"] > 0


async def outcomes(seed: int, n: int = 300) -> tuple[list[int], dict[str, int]]:
    async with sim(latency_s=0, error_rate=0.2, garbage_rate=0.1, seed=seed) as (http, stats):
        codes = []
        for _ in range(n):
            answer = await http.post("/v1/chat/completions", json=chat_body())
            codes.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1"
        return codes, dict(stats)


async def test_faults_come_at_the_configured_rate_and_repeat_with_the_seed() -> None:
    codes, stats = await outcomes(seed=7)
    again, _ = await outcomes(seed=7)
    other, _ = await outcomes(seed=8)
    assert codes == again and codes != other
    assert 40 <= stats["errors_injected"] <= 80  # 20 % of 300 = 60
    assert codes.count(503) == stats["errors_injected"]
    assert 12 <= stats["garbage_injected"] <= 48  # ~10 % of the 240 that were not errors


async def test_faults_change_at_run_time() -> None:
    async with sim(latency_s=0) as (http, _):
        await http.post("/admin/faults", json={"down_for_s": 60})
        down = await http.post("/v1/chat/completions", json=chat_body())
        await http.post("/admin/faults", json={"down_for_s": 0, "error_rate": 1.0})
        overloaded = await http.post("/v1/chat/completions", json=chat_body())
        await http.post("/admin/faults", json={"error_rate": 0.0})
        fine = await http.post("/v1/chat/completions", json=chat_body())
        served = (await http.get("/stats")).json()
    assert (down.status_code, overloaded.status_code, fine.status_code) == (503, 503, 200)
    assert served["down_rejections"] == 1 and served["errors_injected"] == 1 and served["served"] == 1


async def test_answers_carry_usage_and_respect_max_tokens() -> None:
    async with sim(latency_s=0) as (http, _):
        full = (await http.post("/v1/chat/completions", json=chat_body())).json()
        cut = (await http.post("/v1/chat/completions", json=chat_body() | {"max_tokens": 5})).json()
    assert full["usage"]["completion_tokens"] > 5 and full["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(("profile", "types"), [("chat", ("basic", "cloze")), ("completion", ("basic",))])
async def test_sim_cards_pass_the_real_pipeline(profile: Profile, types: tuple[str, ...]) -> None:
    async with sim(latency_s=0) as (http, _):
        assert await detect_profile(http, "http://sim", "openai") == "chat"
        result = await sim_cards(http, profile, types)
    assert len(result.cards) >= 3 and result.dropped == [] and result.attempts == 1
    assert all(c.support == 1.0 and not c.needs_review for c in result.cards)
    assert {c.page for c in result.cards} == {7, 8}  # each card cites the page it came from
    assert {c.type for c in result.cards} == set(types)


async def test_garbage_from_the_sim_ends_as_bad_model_output() -> None:
    async with sim(latency_s=0, garbage_rate=1.0) as (http, stats):
        with pytest.raises(BadModelOutput):
            await sim_cards(http)
    assert stats["garbage_injected"] == 2  # the answer and its one repair retry


async def test_a_garbage_answer_carries_no_made_up_card_and_is_not_counted_as_one() -> None:
    async with sim(latency_s=0, garbage_rate=1.0, unsupported_rate=1.0) as (http, stats):
        answer = (await http.post("/v1/chat/completions", json=chat_body())).json()
    assert "Jupiter" not in answer["choices"][0]["message"]["content"]
    assert (stats["garbage_injected"], stats["unsupported_injected"]) == (1, 0)


@pytest.mark.parametrize(
    ("profile", "types"), [("chat", ("basic", "cloze")), ("chat", ("cloze",)), ("completion", ("basic",))]
)
async def test_a_made_up_card_from_the_sim_is_dropped_as_unsupported(
    profile: Profile, types: tuple[str, ...]
) -> None:
    async with sim(latency_s=0, unsupported_rate=1.0) as (http, stats):
        result = await sim_cards(http, profile, types)
    assert stats["unsupported_injected"] == 1
    assert result.dropped == [(MADE_UP[types[0]]["front"], NOT_SUPPORTED)]
    assert len(result.cards) >= 2 and all("Jupiter" not in c.front + c.back for c in result.cards)
