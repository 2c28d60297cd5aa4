"""An OpenAI-compatible LLM simulator for tests, demos and benchmarks (`deckstream llm sim`).

It behaves like a real server where it matters to the pipeline: ``capacity`` requests are
served at once and the rest queue (a server's slots); each call takes ``latency_s`` plus
``completion_tokens / tokens_per_s``; faults are injected from a seeded RNG (503 with
Retry-After, 200 with garbage, answers slower than a client's timeout, a down period, an
answer with one made-up card the text does not support). Its cards are built from the
prompt's own text, so they pass validation and grounding:

    "What do we learn about chloroplasts?" → "which contain the green pigment chlorophyll"
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from dataclasses import dataclass, fields
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_STOPWORDS = (
    "about after also because been being between could does from have having into more most only "
    "other over such than that their them then there these they this those through under until "
    "very what when where which while will with would your"
)
_STOP = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"[^\W_][\w'-]*")


@dataclass
class SimConfig:
    latency_s: float = 0.05  # per call, before decoding
    capacity: int = 4  # requests served at once; the rest queue
    tokens_per_s: float = 0.0  # decode rate per request; 0: instant
    error_rate: float = 0.0  # 503 + Retry-After
    garbage_rate: float = 0.0  # 200 with unreadable content
    unsupported_rate: float = 0.0  # answers that open with a card the text does not support
    slow_rate: float = 0.0  # answers delayed by slow_s more
    slow_s: float = 0.0
    down_for_s: float = 0.0  # 503 to everything for this long after start (or /admin/faults)
    retry_after_s: float = 1.0
    seed: int = 0
    model: str = "deckstream-sim"


_FAULTS = (
    "latency_s",
    "error_rate",
    "garbage_rate",
    "unsupported_rate",
    "slow_rate",
    "slow_s",
    "retry_after_s",
)


def ideal_time(n_requests: int, cfg: SimConfig, completion_tokens: int = 0) -> float:
    """A lower bound on the wall time of n requests producing completion_tokens in all.

    Every wave of ``capacity`` requests pays the latency, and decoding can go no faster than
    every slot busy at once: ``capacity × tokens_per_s`` tokens a second (the saturated rate).
    """
    decode = completion_tokens / (cfg.capacity * cfg.tokens_per_s) if cfg.tokens_per_s else 0.0
    return math.ceil(n_requests / cfg.capacity) * cfg.latency_s + decode


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _facts(text: str) -> list[tuple[str, str, str]]:
    """(topic, words of its sentence around it, the sentence) for sentences with enough content."""
    facts, topics = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        words = _WORD.findall(sentence)
        content = [i for i, w in enumerate(words) if len(w) > 3 and w.lower() not in _STOP]
        if len(content) < 3 or "{" in sentence:
            continue
        at = max(content, key=lambda i: len(words[i]))  # the longest word: likely a term
        topic = words[at]
        if topic.lower() in topics:
            continue
        topics.add(topic.lower())
        after = words[at + 1 : at + 13]
        rest = after if sum(i > at for i in content) >= 2 else words[max(0, at - 12) : at]
        facts.append((topic, " ".join(rest), sentence))
    return facts


# A card no course text supports (the `unsupported_rate` fault): grounding must drop it.
MADE_UP = {
    "basic": {"type": "basic", "front": "Which planet has the Great Red Spot?", "back": "Jupiter"},
    "cloze": {"type": "cloze", "front": "{{c1::Jupiter}} has the Great Red Spot.", "back": "Jupiter"},
}


def _card(fact: tuple[str, str, str], kind: str) -> dict[str, str]:
    topic, rest, sentence = fact
    if kind == "cloze":
        term = max(_WORD.findall(rest) or [topic], key=len)
        front = re.sub(rf"\b{re.escape(term)}\b", "{{c1::" + term + "}}", sentence, count=1)
        return {"type": "cloze", "front": front, "back": term}
    return {"type": "basic", "front": f"What do we learn about {topic}?", "back": rest}


class _Sim:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.slots = asyncio.Semaphore(cfg.capacity)
        self.down_until = time.monotonic() + cfg.down_for_s
        counters = (
            "requests served in_flight max_concurrent errors_injected garbage_injected completion_tokens"
        )
        more = ["slow_injected", "down_rejections", "unsupported_injected"]
        self.stats: dict[str, Any] = dict.fromkeys([*counters.split(), *more], 0)
        self.stats["served_by_model"] = {}  # the model each request named (a replay may name another)

    def fault(self) -> tuple[bool, bool, bool, bool]:
        """Whether to answer 503, garbage, slowly, with a made-up card."""
        draws = [self.rng.random() for _ in range(4)]  # always four: deterministic per request
        cfg = self.cfg
        rates = (cfg.error_rate, cfg.garbage_rate, cfg.slow_rate, cfg.unsupported_rate)
        error, garbage, slow, unsupported = (draw < rate for draw, rate in zip(draws, rates, strict=True))
        return error, garbage, slow, unsupported

    def unavailable(self, reason: str) -> JSONResponse:
        headers = {"Retry-After": f"{self.cfg.retry_after_s:g}"}
        return JSONResponse({"error": {"message": reason, "code": 503}}, 503, headers=headers)

    async def answer(self, request: Request, chat: bool) -> JSONResponse:
        self.stats["requests"] += 1
        try:
            body = await request.json()
            source = _chat_source(body) if chat else _completion_source(body)
        except (ValueError, KeyError, TypeError, IndexError):
            return JSONResponse({"error": {"message": "bad request", "code": 400}}, 400)
        if time.monotonic() < self.down_until:
            self.stats["down_rejections"] += 1
            return self.unavailable("simulated outage")
        error, garbage, slow, unsupported = self.fault()
        if error:
            self.stats["errors_injected"] += 1
            return self.unavailable("simulated overload")
        answer = _chat_answer if chat else _completion_answer
        text = answer(body, source, made_up=unsupported and not garbage)
        if garbage:
            self.stats["garbage_injected"] += 1
            text = '{"cards": [{"front": "unterminated' if chat else "I cannot help with that."
        elif unsupported:
            self.stats["unsupported_injected"] += 1
        max_tokens = int(body.get("max_tokens") or 1 << 30)
        finish = "length" if _tokens(text) > max_tokens else "stop"
        text = text[: max_tokens * 4]
        async with self.slots:
            self.stats["in_flight"] += 1
            self.stats["max_concurrent"] = max(self.stats["max_concurrent"], self.stats["in_flight"])
            try:
                delay = self.cfg.latency_s
                delay += _tokens(text) / self.cfg.tokens_per_s if self.cfg.tokens_per_s else 0.0
                if slow:
                    self.stats["slow_injected"] += 1
                    delay += self.cfg.slow_s
                await asyncio.sleep(delay)
            finally:
                self.stats["in_flight"] -= 1
        self.stats["served"] += 1
        self.stats["completion_tokens"] += _tokens(text)
        by_model = self.stats["served_by_model"]
        named = str(body.get("model") or self.cfg.model)
        by_model[named] = by_model.get(named, 0) + 1
        usage = {"prompt_tokens": _tokens(json.dumps(body)), "completion_tokens": _tokens(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        # As llama.cpp reports them: the prompt read (the simulated latency), then the answer.
        timings = {
            "prompt_ms": self.cfg.latency_s * 1000,
            "predicted_ms": (delay - self.cfg.latency_s) * 1000,
        }
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        kind = "chat.completion" if chat else "text_completion"
        number = self.stats["served"]
        return JSONResponse(
            {"id": f"sim-{number}", "object": kind, "created": int(time.time()), "model": self.cfg.model}
            | {"choices": [choice], "usage": usage, "timings": timings}
        )


def _chat_source(body: dict[str, Any]) -> str:
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    marked = re.search(r"<<<\n?(.*)\n?>>>", user, re.S)
    return marked.group(1) if marked else str(user)


def _completion_source(body: dict[str, Any]) -> str:
    prompt = str(body["prompt"])
    return prompt.rsplit("Text:", 1)[-1].rsplit("\nQ:", 1)[0]


def _chat_answer(body: dict[str, Any], source: str, made_up: bool = False) -> str:
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    cards_schema = schema.get("properties", {}).get("cards", {})
    kinds = cards_schema.get("items", {}).get("properties", {}).get("type", {}).get("enum") or ["basic"]
    facts = _facts(source)[: int(cards_schema.get("maxItems", 4)) - made_up]
    cards = [MADE_UP[kinds[0]]] if made_up else []
    return json.dumps({"cards": cards + [_card(f, kinds[i % len(kinds)]) for i, f in enumerate(facts)]})


def _completion_answer(body: dict[str, Any], source: str, made_up: bool = False) -> str:
    pairs = [MADE_UP["basic"]] if made_up else []
    pairs += [_card(f, "basic") for f in _facts(source)[: 3 - made_up]]
    text = "\nQ: ".join(f"{c['front']}\nA: {c['back']}" for c in pairs)
    text = " " + text if text else "\n\n"
    for s in body.get("stop") or ():
        text = text.split(s, 1)[0]
    return text


def create_sim_app(cfg: SimConfig | None = None) -> Starlette:
    sim = _Sim(cfg or SimConfig())

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": sim.cfg.model, "object": "model"}]})

    async def props(_: Request) -> JSONResponse:
        template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        return JSONResponse({"chat_template": template, "total_slots": sim.cfg.capacity})

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse(sim.stats)

    async def faults(request: Request) -> JSONResponse:
        changes = await request.json()
        for name in _FAULTS:
            if name in changes:
                setattr(sim.cfg, name, float(changes[name]))
        if "down_for_s" in changes:
            sim.down_until = time.monotonic() + float(changes["down_for_s"])
        current = {f.name: getattr(sim.cfg, f.name) for f in fields(sim.cfg) if f.name in _FAULTS}
        return JSONResponse(current | {"down_for_s": max(0.0, sim.down_until - time.monotonic())})

    async def chat(request: Request) -> JSONResponse:
        return await sim.answer(request, chat=True)

    async def completions(request: Request) -> JSONResponse:
        return await sim.answer(request, chat=False)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/props", props),
            Route("/stats", stats),
            Route("/admin/faults", faults, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ]
    )
    app.state.sim = sim
    return app
