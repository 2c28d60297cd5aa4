"""The LLM adapters: OpenAI-compatible servers (vLLM, llama.cpp) and Ollama.

Each adapter wraps one injected ``httpx.AsyncClient`` (the caller opens and closes it, and sets
its timeouts; a ``LatencyTimeout`` then shortens a call's to what the server's own latency
warrants) and maps transport and HTTP failures to the domain's error tree, here and only
here: timeouts, connection errors, 429 and 5xx become ``RetryableError`` (with the server's
``Retry-After``), other 4xx ``PermanentError``, an unreadable body ``RetryableError``.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from services.errors import PermanentError, RetryableError
from services.llm.client import Completion, LLMClient, Profile, Prompt
from services.llm.timeouts import LatencyTimeout
from services.settings import LLMSettings


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    timeouts: LatencyTimeout | None = None,
) -> Any:
    limit = timeouts.current() if timeouts is not None else None
    timeout: Any = httpx.USE_CLIENT_DEFAULT
    if limit is not None:  # the client's connect timeout stays; the answer gets `limit`
        timeout = httpx.Timeout(limit, connect=http.timeout.connect)
    started = time.monotonic()
    try:
        response = await http.post(url, json=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        if timeouts is None or limit is None:
            raise RetryableError(f"LLM request timed out: {type(exc).__name__}") from exc
        if not isinstance(exc, httpx.ConnectTimeout):
            timeouts.observe(limit)
        raise RetryableError(
            f"LLM request timed out after {limit:.1f} s: {type(exc).__name__} "
            f"(the server's recent p99 is {_seconds(timeouts.p99)})"
        ) from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"LLM unreachable: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RetryableError(f"LLM answered HTTP {status}", retry_after=retry_after)
    if status >= 400:
        raise PermanentError(f"LLM rejected the request: HTTP {status}: {response.text[:300]}")
    try:
        answer = response.json()
    except ValueError as exc:
        raise RetryableError(f"LLM answered an unparseable body: {response.text[:100]!r}") from exc
    if timeouts is not None:
        timeouts.observe(time.monotonic() - started)
    return answer


def _seconds(value: float | None) -> str:
    return "not known yet" if value is None else f"{value:.1f} s"


def _unexpected(body: Any) -> RetryableError:
    return RetryableError(f"LLM answered an unexpected body: {str(body)[:200]!r}")


class OpenAICompatibleClient:
    """``/v1/chat/completions`` (with ``response_format`` json_schema) and ``/v1/completions``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeouts: LatencyTimeout | None = None,
    ) -> None:
        self._http, self._base, self._model = http, base_url.rstrip("/"), model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeouts = timeouts

    async def generate(self, prompt: Prompt) -> Completion:
        body: dict[str, Any] = {
            "model": prompt.model or self._model,
            "max_tokens": prompt.max_tokens,
            "temperature": prompt.temperature,
        }
        if prompt.seed is not None:
            body["seed"] = prompt.seed
        if prompt.profile == "chat":
            body["messages"] = [m._asdict() for m in prompt.messages]
            if prompt.schema is not None:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "cards", "schema": prompt.schema, "strict": True},
                }
            url = f"{self._base}/v1/chat/completions"
        else:
            body["prompt"] = prompt.text
            if prompt.stop:
                body["stop"] = list(prompt.stop)
            url = f"{self._base}/v1/completions"
        answer = await post_json(self._http, url, body, self._headers, self.timeouts)
        try:
            choice, usage = answer["choices"][0], answer.get("usage") or {}
            text = choice["message"]["content"] if prompt.profile == "chat" else choice["text"]
            return Completion(
                text=text or "",
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                # llama.cpp reports its timings; the prompt's processing ends at the first token.
                ttft_ms=_number((answer.get("timings") or {}).get("prompt_ms")),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise _unexpected(answer) from exc

    async def aclose(self) -> None:
        """Nothing to release: the caller owns the ``httpx.AsyncClient``."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _ollama_ttft(answer: dict[str, Any]) -> float | None:
    """Ollama's durations are nanoseconds: loading the model, then reading the prompt."""
    prompt = _number(answer.get("prompt_eval_duration"))
    if prompt is None:
        return None
    return (prompt + (_number(answer.get("load_duration")) or 0.0)) / 1e6


class OllamaClient:
    """Ollama's native ``/api/chat`` (``format`` = JSON schema) and raw ``/api/generate``."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, model: str, timeouts: LatencyTimeout | None = None
    ) -> None:
        self._http, self._base, self._model = http, base_url.rstrip("/"), model
        self.timeouts = timeouts

    async def generate(self, prompt: Prompt) -> Completion:
        options: dict[str, Any] = {"temperature": prompt.temperature, "num_predict": prompt.max_tokens}
        if prompt.seed is not None:
            options["seed"] = prompt.seed
        body: dict[str, Any] = {"model": prompt.model or self._model, "stream": False, "options": options}
        if prompt.profile == "chat":
            body["messages"] = [m._asdict() for m in prompt.messages]
            if prompt.schema is not None:
                body["format"] = prompt.schema
            url = f"{self._base}/api/chat"
        else:
            body.update(prompt=prompt.text, raw=True)
            if prompt.stop:
                options["stop"] = list(prompt.stop)
            url = f"{self._base}/api/generate"
        answer = await post_json(self._http, url, body, timeouts=self.timeouts)
        try:
            text = answer["message"]["content"] if prompt.profile == "chat" else answer["response"]
            return Completion(
                text=text or "",
                finish_reason=answer.get("done_reason") or "stop",
                prompt_tokens=int(answer.get("prompt_eval_count", 0)),
                completion_tokens=int(answer.get("eval_count", 0)),
                ttft_ms=_ollama_ttft(answer),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _unexpected(answer) from exc

    async def aclose(self) -> None:
        """Nothing to release: the caller owns the ``httpx.AsyncClient``."""


# llama.cpp answers with this ChatML template when the GGUF has none (a base model).
_CHATML_MARKER = "<|im_start|>"


async def detect_profile(http: httpx.AsyncClient, base_url: str, kind: str) -> Profile:
    """Say "chat" when the model has a chat template, "completion" for a base model.

    llama.cpp's ``/props`` reports ``chat_template``; for a model without one it reports its
    ChatML fallback, recognisable because the model's vocabulary has no ``<|im_start|>`` token.
    Servers without ``/props`` (vLLM, hosted APIs) and Ollama serve instruct models: "chat".
    """
    if kind == "ollama":
        return "chat"
    base = base_url.rstrip("/")
    try:
        response = await http.get(f"{base}/props")
        props = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return "chat"
    if not isinstance(props, dict):
        return "chat"
    template = props.get("chat_template") or ""
    if not template.strip():
        return "completion"
    if _CHATML_MARKER in template and await _token_count(http, base, _CHATML_MARKER) not in (None, 1):
        return "completion"
    return "chat"


async def _token_count(http: httpx.AsyncClient, base: str, text: str) -> int | None:
    try:
        response = await http.post(f"{base}/tokenize", json={"content": text, "parse_special": True})
        tokens: Sequence[Any] = response.json()["tokens"]
        return len(tokens)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def build_llm_client(http: httpx.AsyncClient, settings: LLMSettings, base_url: str) -> LLMClient:
    timeouts = LatencyTimeout.from_settings(settings)
    if settings.kind == "ollama":
        return OllamaClient(http, base_url, settings.model, timeouts)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return OpenAICompatibleClient(http, base_url, settings.model, api_key=key, timeouts=timeouts)
