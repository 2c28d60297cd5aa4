"""The LLM adapters: request shapes, error mapping and profile detection (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.errors import PermanentError, RetryableError
from services.llm.adapters import (
    OllamaClient,
    OpenAICompatibleClient,
    build_llm_client,
    detect_profile,
    parse_retry_after,
)
from services.llm.client import Message, Prompt
from services.llm.timeouts import LatencyTimeout
from services.settings import LLMSettings

SCHEMA = {"type": "object", "properties": {"cards": {"type": "array"}}}
CHAT = Prompt(messages=(Message("system", "be brief"), Message("user", "hi")), schema=SCHEMA, max_tokens=99)
COMPLETION = Prompt(text="Text: x\nQ:", stop=("\nText:", "\n\n"), max_tokens=160, temperature=0.1)

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def recording(answer: dict[str, Any], seen: list[httpx.Request]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    return handle


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def test_openai_chat_asks_for_json_schema_output() -> None:
    seen: list[httpx.Request] = []
    answer = {
        "choices": [{"message": {"content": '{"cards": []}'}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5},
    }
    async with client_with(recording(answer, seen)) as http:
        llm = OpenAICompatibleClient(http, "http://llm/", "qwen", api_key="sekret")
        completion = await llm.generate(CHAT)
    (request,) = seen
    assert request.url == "http://llm/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sekret"
    sent = body(request)
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "cards", "schema": SCHEMA, "strict": True},
    }
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("qwen", 99, 0.2)
    assert (completion.text, completion.finish_reason) == ('{"cards": []}', "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 5)


async def test_openai_completion_sends_prompt_and_stops() -> None:
    seen: list[httpx.Request] = []
    answer = {"choices": [{"text": " Why?\nA: Because.", "finish_reason": "length"}]}
    async with client_with(recording(answer, seen)) as http:
        completion = await OpenAICompatibleClient(http, "http://llm", "gemma").generate(COMPLETION)
    sent = body(seen[0])
    assert seen[0].url.path == "/v1/completions"
    assert "authorization" not in seen[0].headers
    assert sent["prompt"] == "Text: x\nQ:" and sent["stop"] == ["\nText:", "\n\n"]
    assert "response_format" not in sent and "messages" not in sent
    assert completion.text == " Why?\nA: Because." and completion.finish_reason == "length"


async def test_ollama_uses_native_chat_with_schema_format() -> None:
    seen: list[httpx.Request] = []
    answer = {"message": {"content": "{}"}, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}
    async with client_with(recording(answer, seen)) as http:
        completion = await OllamaClient(http, "http://ollama:11434", "qwen2.5").generate(CHAT)
    sent = body(seen[0])
    assert seen[0].url.path == "/api/chat"
    assert sent["format"] == SCHEMA and sent["stream"] is False
    assert sent["options"] == {"temperature": 0.2, "num_predict": 99}
    assert completion == type(completion)("{}", "stop", 7, 3)


async def test_ollama_completion_is_raw_generate() -> None:
    seen: list[httpx.Request] = []
    answer = {"response": " Q?\nA: a", "done_reason": "length", "eval_count": 160}
    async with client_with(recording(answer, seen)) as http:
        completion = await OllamaClient(http, "http://ollama", "gemma").generate(COMPLETION)
    sent = body(seen[0])
    assert seen[0].url.path == "/api/generate"
    assert sent["raw"] is True and sent["prompt"] == "Text: x\nQ:"
    assert sent["options"] == {"temperature": 0.1, "num_predict": 160, "stop": ["\nText:", "\n\n"]}
    assert completion.text == " Q?\nA: a" and completion.completion_tokens == 160


async def test_time_to_first_token_is_read_where_the_server_reports_it() -> None:
    """llama.cpp's `timings.prompt_ms`; Ollama's load and prompt durations (ns); else None."""
    chat = {"choices": [{"message": {"content": "{}"}}]}
    llama = {**chat, "timings": {"prompt_ms": 41.5, "predicted_ms": 300.0}}
    ollama = {"message": {"content": "{}"}, "load_duration": 2_000_000, "prompt_eval_duration": 38_000_000}
    async with client_with(recording(llama, [])) as http:
        assert (await OpenAICompatibleClient(http, "http://l", "m").generate(CHAT)).ttft_ms == 41.5
    async with client_with(recording(chat, [])) as http:  # vLLM: not reported
        assert (await OpenAICompatibleClient(http, "http://l", "m").generate(CHAT)).ttft_ms is None
    async with client_with(recording(ollama, [])) as http:
        assert (await OllamaClient(http, "http://o", "m").generate(CHAT)).ttft_ms == 40.0


async def test_a_model_named_by_the_prompt_is_asked_for() -> None:
    """A reprocessing may name another model than the client's."""
    seen: list[httpx.Request] = []
    answer = {"choices": [{"message": {"content": "{}"}}]}
    async with client_with(recording(answer, seen)) as http:
        await OpenAICompatibleClient(http, "http://l", "default").generate(CHAT)
        await OpenAICompatibleClient(http, "http://l", "default").generate(
            dataclasses.replace(CHAT, model="other")
        )
    assert [body(r)["model"] for r in seen] == ["default", "other"]


async def test_a_sampling_seed_is_sent_to_both_apis() -> None:
    seeded = Prompt(text="Text: x\nQ:", max_tokens=16, seed=1234)
    seen: list[httpx.Request] = []
    async with client_with(recording({"choices": [{"text": "x"}]}, seen)) as http:
        await OpenAICompatibleClient(http, "http://llm", "gemma").generate(seeded)
        await OpenAICompatibleClient(http, "http://llm", "gemma").generate(COMPLETION)
    assert body(seen[0])["seed"] == 1234 and "seed" not in body(seen[1])
    seen.clear()
    async with client_with(recording({"response": "x"}, seen)) as http:
        await OllamaClient(http, "http://ollama", "gemma").generate(seeded)
    assert body(seen[0])["options"]["seed"] == 1234


def test_a_prompt_is_either_chat_or_completion() -> None:
    with pytest.raises(ValueError):
        Prompt()
    with pytest.raises(ValueError):
        Prompt(messages=(Message("user", "x"),), text="y")


def answering(status: int, headers: dict[str, str] | None = None, content: bytes = b"{}") -> Handler:
    return lambda request: httpx.Response(status, headers=headers, content=content)


def raising(error: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    return handle


@pytest.mark.parametrize(
    ("handler", "expected", "retry_after"),
    [
        (answering(503, {"Retry-After": "7"}), RetryableError, 7.0),
        (answering(429, {"Retry-After": "0.5"}), RetryableError, 0.5),
        (answering(500), RetryableError, None),
        (answering(400, content=b'{"error": "bad schema"}'), PermanentError, None),
        (answering(404), PermanentError, None),
        (answering(200, content=b"<html>proxy error</html>"), RetryableError, None),
        (answering(200, content=b'{"unexpected": true}'), RetryableError, None),
        (raising(httpx.ReadTimeout("slow")), RetryableError, None),
        (raising(httpx.ConnectError("refused")), RetryableError, None),
    ],
)
@pytest.mark.parametrize("adapter", [OpenAICompatibleClient, OllamaClient])
async def test_errors_map_to_the_domain_tree(
    handler: Handler, expected: type[Exception], retry_after: float | None, adapter: type[Any]
) -> None:
    async with client_with(handler) as http:
        with pytest.raises(expected) as caught:
            await adapter(http, "http://llm", "m").generate(CHAT)
    if isinstance(caught.value, RetryableError):
        assert caught.value.retry_after == retry_after


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


LLAMACPP_CHATML_FALLBACK = (
    "{%- for message in messages -%}\n  {{- '<|im_start|>' + message.role + '\\n' + message.content"
    " + '<|im_end|>\\n' -}}\n{%- endfor -%}"
)


def llama_server(template: str | None, im_start_tokens: int) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/props":
            return httpx.Response(200, json={"total_slots": 2, "chat_template": template})
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": list(range(im_start_tokens))})
        return httpx.Response(404)

    return handle


@pytest.mark.parametrize(
    ("handler", "profile"),
    [
        (llama_server(None, 1), "completion"),
        (llama_server("", 1), "completion"),
        # A base GGUF (Gemma 270M): llama.cpp reports its ChatML fallback, unknown to the vocab.
        (llama_server(LLAMACPP_CHATML_FALLBACK, 6), "completion"),
        # An instruct model whose own template is ChatML (Qwen): one special token.
        (llama_server(LLAMACPP_CHATML_FALLBACK, 1), "chat"),
        (llama_server("{% for m in messages %}<start_of_turn>{{ m.content }}{% endfor %}", 9), "chat"),
        (answering(404), "chat"),  # vLLM, hosted APIs: no /props
        (raising(httpx.ConnectError("refused")), "chat"),
    ],
)
async def test_profile_detection(handler: Handler, profile: str) -> None:
    async with client_with(handler) as http:
        assert await detect_profile(http, "http://llm", "openai") == profile


async def test_ollama_is_always_chat() -> None:
    async with client_with(raising(AssertionError("no request expected"))) as http:
        assert await detect_profile(http, "http://ollama", "ollama") == "chat"


async def test_build_llm_client_picks_the_adapter() -> None:
    seen: list[httpx.Request] = []
    answer = {"choices": [{"message": {"content": "{}"}}]}
    async with client_with(recording(answer, seen)) as http:
        openai = build_llm_client(http, LLMSettings(kind="openai", api_key=SecretStr("k")), "http://v")
        ollama = build_llm_client(http, LLMSettings(kind="ollama", model="qwen2.5"), "http://o")
        await openai.generate(CHAT)
        await openai.aclose()
    assert isinstance(openai, OpenAICompatibleClient) and isinstance(ollama, OllamaClient)
    assert seen[0].headers["authorization"] == "Bearer k"


async def test_aclose_leaves_the_callers_client_open() -> None:
    async with client_with(answering(200)) as http:
        await OpenAICompatibleClient(http, "http://llm", "m").aclose()
        await OllamaClient(http, "http://llm", "m").aclose()
        assert not http.is_closed


async def test_sharded_transport_spreads_requests_and_frees_a_pool_when_the_response_closes() -> None:
    from services.llm.pools import ShardedTransport

    transport = ShardedTransport(connections=24, pool_size=8)
    assert len(transport.pools) == 3
    gate, all_in = asyncio.Event(), asyncio.Event()
    seen_busy: list[list[int]] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        seen_busy.append(list(transport.busy))
        if len(seen_busy) == 4:
            all_in.set()
        await gate.wait()
        if request.url.path == "/boom":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"ok": True})

    transport.pools = [httpx.MockTransport(slow) for _ in transport.pools]  # type: ignore[misc]
    async with httpx.AsyncClient(transport=transport, base_url="http://llm") as http:
        calls = [asyncio.create_task(http.get(p)) for p in ("/a", "/b", "/c", "/boom")]
        await asyncio.wait_for(all_in.wait(), 5)
        assert transport.busy == [2, 1, 1]  # least busy first: one per pool, then the first again
        gate.set()
        done = await asyncio.gather(*calls, return_exceptions=True)
    assert [r.json() for r in done[:3] if isinstance(r, httpx.Response)] == [{"ok": True}] * 3
    assert isinstance(done[3], httpx.ConnectError)
    assert transport.busy == [0, 0, 0]  # read responses and the failed request all gave back their pool


async def test_an_idle_connection_is_dropped_before_the_server_closes_it() -> None:
    """A server closes a connection left idle too long (uvicorn and llama.cpp: after 5 s). A
    request sent on it as it closes never reaches the server and costs the chunk an attempt.
    This server always wins that race: it drops a request on a connection idle for 0.5 s."""
    from services.llm.pools import KEEPALIVE_EXPIRY_S, ShardedTransport

    loop = asyncio.get_running_loop()
    body = json.dumps({"choices": [{"text": "ok", "finish_reason": "stop"}]}).encode()
    seen = {"connections": 0, "answered": 0, "dropped": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        idle_since = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                await reader.readexactly(length)
                if idle_since is not None and loop.time() - idle_since >= 0.5:
                    seen["dropped"] += 1  # its keep-alive timer fired first
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
                writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                seen["answered"] += 1
                idle_since = loop.time()
        except asyncio.IncompleteReadError:
            return  # the client closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def two_calls_with_a_pause(keepalive_expiry: float) -> str:
        transport = ShardedTransport(connections=4, keepalive_expiry=keepalive_expiry)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as http:
            llm = OpenAICompatibleClient(http, url, "m")
            assert (await llm.generate(Prompt(text="first"))).text == "ok"
            await asyncio.sleep(0.6)  # the connection sits idle past the server's limit
            try:
                return (await llm.generate(Prompt(text="second"))).text
            except RetryableError as exc:
                return exc.reason

    async with server:
        assert "LLM unreachable" in await two_calls_with_a_pause(keepalive_expiry=5.0)  # httpx's default
        assert seen == {"connections": 1, "answered": 1, "dropped": 1}
        assert await two_calls_with_a_pause(keepalive_expiry=0.3) == "ok"
        assert seen == {"connections": 3, "answered": 3, "dropped": 1}  # the second call: a new one
    assert KEEPALIVE_EXPIRY_S < 5.0


# ---------------------------------------------------------------- timeouts from the server's latency


def test_the_timeout_follows_the_servers_p99_within_its_bounds() -> None:
    t = LatencyTimeout(ceiling=120.0, floor=10.0, factor=3.0, window=100, min_samples=20)
    for _ in range(19):
        t.observe(4.0)
    assert t.current() == 120.0 and t.p99 is None  # too few answers to judge the server by
    t.observe(6.0)
    assert t.p99 == 6.0 and t.current() == 18.0  # 3 x the slowest 1%
    fast = LatencyTimeout(ceiling=120.0, floor=10.0, factor=3.0, window=100, min_samples=20)
    for _ in range(50):
        fast.observe(0.05)
    assert fast.current() == 10.0  # never below the floor
    slow = LatencyTimeout(ceiling=120.0, floor=10.0, factor=3.0, window=100, min_samples=20)
    for _ in range(50):
        slow.observe(70.0)
    assert slow.current() == 120.0  # never above the ceiling


def test_timeouts_grow_when_the_server_slows_down_for_everyone_and_old_answers_age_out() -> None:
    t = LatencyTimeout(ceiling=120.0, floor=1.0, factor=3.0, window=100, min_samples=20)
    for _ in range(100):
        t.observe(2.0)
    assert t.current() == 6.0
    t.observe(6.0)  # a call timed out: it counts as taking the whole timeout
    t.observe(6.0)
    assert t.current() == 18.0
    for _ in range(100):
        t.observe(1.0)  # the calls that timed out leave the window
    assert t.current() == 3.0


def test_timeout_settings() -> None:
    assert LatencyTimeout.from_settings(LLMSettings(timeout_factor=0)) is None
    t = LatencyTimeout.from_settings(LLMSettings(timeout_s=2.0, min_timeout_s=10.0))
    assert t is not None and (t.floor, t.ceiling, t.current()) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        LatencyTimeout(ceiling=1.0, floor=2.0)


async def test_each_request_carries_the_current_timeout_and_answers_are_timed() -> None:
    seen: list[httpx.Request] = []
    answer = {"choices": [{"text": "Q: a\nA: b", "finish_reason": "stop"}]}
    timeouts = LatencyTimeout(ceiling=60.0, floor=0.5, factor=3.0, window=20, min_samples=2)
    async with client_with(recording(answer, seen)) as http:
        llm = OpenAICompatibleClient(http, "http://llm", "m", timeouts=timeouts)
        for _ in range(3):
            await llm.generate(COMPLETION)
    reads = [r.extensions["timeout"]["read"] for r in seen]
    assert reads[:2] == [60.0, 60.0] and reads[2] == 0.5  # a mock answers at once: the floor
    assert seen[0].extensions["timeout"]["connect"] == http.timeout.connect  # the client's stays


async def test_a_hung_call_is_given_up_at_the_servers_pace_not_the_ceiling() -> None:
    """A real server on a socket (httpx enforces timeouts in its transport): 20 answers at once,
    then one that never comes. It is given up at 3 x the server's p99 (at least 0.3 s), not at
    the 30 s ceiling."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    hung = asyncio.Event()

    async def complete(request: Request) -> JSONResponse:
        if (await request.json())["prompt"] == "hang":
            await hung.wait()
        return JSONResponse({"choices": [{"text": "ok", "finish_reason": "stop"}]})

    listening = socket.create_server(("127.0.0.1", 0))  # connections wait in its backlog
    port = listening.getsockname()[1]
    app = Starlette(routes=[Route("/v1/completions", complete, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        timeouts = LatencyTimeout(ceiling=30.0, floor=0.3, factor=3.0)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as http:
            llm = OpenAICompatibleClient(http, f"http://127.0.0.1:{port}", "m", timeouts=timeouts)
            for _ in range(20):
                assert (await llm.generate(Prompt(text="fine"))).text == "ok"
            p99 = timeouts.p99
            assert p99 is not None and timeouts.current() == max(0.3, 3 * p99) < 30.0
            limit = timeouts.current()
            with pytest.raises(RetryableError, match=rf"timed out after {limit:.1f} s.*recent p99"):
                await llm.generate(Prompt(text="hang"))
        assert timeouts.current() > limit  # the call that timed out raised the next timeout
    finally:
        hung.set()
        server.should_exit = True
        await serving
