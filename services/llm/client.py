"""The LLM port: what the card writer asks (a ``Prompt``) and gets back (a ``Completion``).

    Prompt ──LLMClient.generate──► Completion

The adapters (``services.llm.adapters``) implement it for OpenAI-compatible servers and Ollama.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

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
    model: str | None = None  # None: the client's model; a reprocessing may name another

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
    ttft_ms: float | None = None  # time to the first token, when the server reports it


class LLMClient(Protocol):
    async def generate(self, prompt: Prompt) -> Completion: ...

    async def aclose(self) -> None: ...
