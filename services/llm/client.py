"""The LLM port and its adapters: OpenAI-compatible servers (vLLM, llama.cpp) and Ollama.

    Prompt ──LLMClient.generate──► Completion

Each adapter wraps one injected ``httpx.AsyncClient`` (the caller opens and closes it, and sets
its timeouts; a ``LatencyTimeout`` then shortens a call's to what the server's own latency
warrants) and maps transport and HTTP failures to the domain's error tree, here and only
here: timeouts, connection errors, 429 and 5xx become ``RetryableError`` (with the server's
``Retry-After``), other 4xx ``PermanentError``, an unreadable body ``RetryableError``.
"""

from __future__ import annotations

import email.utils
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import httpx

from services.errors import PermanentError, RetryableError
from services.settings import LLMSettings

Profile = Literal["chat", "completion"]


class Message(NamedTuple):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """Either chat messages (+ an optional JSON schema) or a raw completion text (+ stops)."""

    messages: tuple[Message, ...] = ()
    schema: Mapping[str, Any] | None = None
    text: str | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int = 768
    temperature: float = 0.2
    seed: int | None = None  # sampling seed (OpenAI-compatible `seed`, Ollama `options.seed`)

    def __post_init__(self) -> None:
        if bool(self.messages) == (self.text is not None):
            raise ValueError("a Prompt has either chat messages or a completion text")

    @property
    def profile(self) -> Profile:
        return "chat" if self.messages else "completion"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length", ...
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMClient(Protocol):
    async def generate(self, prompt: Prompt) -> Completion: ...

    async def aclose(self) -> None: ...


def http_timeout(settings: LLMSettings) -> httpx.Timeout:
    """The timeouts for the composition root's LLM ``httpx.AsyncClient``."""
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


class LatencyTimeout:
    """A call's timeout from the server's own latency: ``factor`` times the p99 of its last
    ``window`` answers, within ``floor``..``ceiling``; the ceiling until ``min_samples`` answers
    are in. A hung call on a server that answers in 3 s is given up after ~10 s, not the
    2 minutes a slow CPU server needs, and the same setting suits both.

    A call that timed out counts as one that took the whole timeout: if the server slows down
    for everyone, its timeouts grow with it (by ``factor`` per 1% of calls that time out)
    instead of failing every call. Error answers (429, 5xx) are not latency: they are fast.
    """

    def __init__(
        self, ceiling: float, floor: float, factor: float = 3.0, window: int = 200, min_samples: int = 20
    ) -> None:
        if not 0 < floor <= ceiling or factor <= 0 or min_samples < 1 or window < min_samples:
            raise ValueError("need 0 < floor <= ceiling, factor > 0 and min_samples <= window")
        self.ceiling, self.floor, self.factor, self.min_samples = ceiling, floor, factor, min_samples
        self._recent: deque[float] = deque(maxlen=window)
        self._current = ceiling

    @classmethod
    def from_settings(cls, settings: LLMSettings) -> LatencyTimeout | None:
        if settings.timeout_factor == 0:
            return None  # always timeout_s
        floor = min(settings.min_timeout_s, settings.timeout_s)
        return cls(settings.timeout_s, floor, settings.timeout_factor)

    @property
    def p99(self) -> float | None:
        if len(self._recent) < self.min_samples:
            return None
        ordered = sorted(self._recent)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def current(self) -> float:
        """The timeout for the next call, in seconds."""
        return self._current

    def observe(self, seconds: float) -> None:
        """A call's latency (or, for a call that timed out, its timeout)."""
        self._recent.append(seconds)
        p99 = self.p99
        if p99 is not None:
            self._current = min(self.ceiling, max(self.floor, self.factor * p99))


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
            "model": self._model,
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
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise _unexpected(answer) from exc

    async def aclose(self) -> None:
        """Nothing to release: the caller owns the ``httpx.AsyncClient``."""


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
        body: dict[str, Any] = {"model": self._model, "stream": False, "options": options}
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
