"""Card prompts: render a chunk into a ``Prompt`` and read the model's answer back.

The wording lives in versioned files under ``services/cards/prompts/`` (``cards-chat-v1.txt`` for
instruct models, ``cards-fewshot-v1.txt`` for base models); the version string
("cards-chat-v1") is stamped on every card made with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from string import Template
from typing import Any, NamedTuple

from services.domain import Chunk
from services.errors import PermanentError, UnreadableOutput
from services.llm.client import Message, Profile, Prompt

_FILE_STYLE: dict[Profile, str] = {"chat": "chat", "completion": "fewshot"}
# (max_tokens, temperature) per profile: the few-shot output is short and repeats itself.
_DEFAULTS: dict[Profile, tuple[int, float]] = {"chat": (768, 0.2), "completion": (160, 0.1)}
FEWSHOT_STOP = ("\nText:", "\n\n")


class RawCard(NamedTuple):
    """A card as the model wrote it, before validation."""

    type: str
    front: str
    back: str


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    version: str  # e.g. "cards-chat-v1"
    prompt: Prompt


def prompt_version(profile: Profile, version: str = "v1") -> str:
    return f"cards-{_FILE_STYLE[profile]}-{version}"


def prompt_versions() -> list[str]:
    """The prompt versions a reprocessing may ask for ("v1", "v2", ...): a file of any profile."""
    names = (f.name for f in files("services.cards.prompts").iterdir())
    found = {m[1] for n in names if (m := re.fullmatch(r"cards-(?:chat|fewshot)-(v\w+)\.txt", n))}
    return sorted(found)


@lru_cache(maxsize=16)
def load_sections(name: str) -> dict[str, str]:
    """A prompt file's sections ("=== name" headers; text before any header is section "")."""
    path = files("services.cards.prompts").joinpath(f"{name}.txt")
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PermanentError(f"no prompt file {name}.txt") from None
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in raw.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("=== "):
            current = line[4:].strip()
            sections[current] = []
        else:
            sections[current].append(line)
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def page_span(chunk: Chunk) -> str:
    first, last = chunk.segments[0], chunk.segments[-1]
    return f"Page {first.label}" if first.page == last.page else f"Pages {first.label}–{last.label}"


def card_schema(card_types: Sequence[str], per_chunk: int) -> dict[str, Any]:
    """The JSON schema of the answer. No maxLength: near the limit the decoder derails."""
    card = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": list(card_types)},
            "front": {"type": "string", "minLength": 10},
            "back": {"type": "string", "minLength": 1},
        },
        "required": ["type", "front", "back"],
        "additionalProperties": False,
    }
    cards = {"type": "array", "items": card, "minItems": 0, "maxItems": per_chunk}
    return {
        "type": "object",
        "properties": {"cards": cards},
        "required": ["cards"],
        "additionalProperties": False,
    }


def render_prompt(
    chunk: Chunk,
    *,
    profile: Profile,
    card_types: Sequence[str] = ("basic",),
    per_chunk: int = 4,
    version: str = "v1",
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> RenderedPrompt:
    name = prompt_version(profile, version)
    sections = load_sections(name)
    default_tokens, default_temperature = _DEFAULTS[profile]
    tokens = max_tokens or default_tokens
    temp = default_temperature if temperature is None else temperature
    if profile == "completion":
        if "basic" not in card_types:
            raise PermanentError("a base model (completion profile) writes basic cards only")
        text = Template(sections[""]).substitute(text=" ".join(chunk.text.split()))
        prompt = Prompt(text=text, stop=FEWSHOT_STOP, max_tokens=tokens, temperature=temp)
        return RenderedPrompt(name, prompt)
    unknown = [t for t in card_types if t not in sections]
    if unknown or not card_types:
        raise PermanentError(f"prompt {name} has no card types {unknown or '(none given)'}")
    types = "\n".join(sections[t] for t in card_types)
    system = Template(sections["system"]).substitute(types=types)
    user = Template(sections["user"]).substitute(pages=page_span(chunk), text=chunk.text, n=per_chunk)
    prompt = Prompt(
        messages=(Message("system", system), Message("user", user)),
        schema=card_schema(card_types, per_chunk),
        max_tokens=tokens,
        temperature=temp,
    )
    return RenderedPrompt(name, prompt)


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_json_cards(text: str) -> list[RawCard]:
    """Cards from a chat answer: ``{"cards": [...]}`` or a bare list."""
    try:
        data = json.loads(_FENCE.sub("", text.strip()))
    except ValueError as exc:
        raise UnreadableOutput(f"invalid JSON: {exc}") from None
    items = data.get("cards") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise UnreadableOutput("JSON has no list of cards")
    cards = []
    for item in items:
        fields = item if isinstance(item, dict) else {}
        kind, front, back = (fields.get(k) for k in ("type", "front", "back"))
        cards.append(
            RawCard(
                kind if isinstance(kind, str) and kind else "basic",
                front if isinstance(front, str) else "",
                back if isinstance(back, str) else "",
            )
        )
    return cards


_QA = re.compile(r"Q:[ \t]*(?P<q>[^\n]*)\n+A:[ \t]*(?P<a>[^\n]*)")
_SENTENCES = re.compile(r".*[.!?](?=\s|$)")


def parse_qa_pairs(text: str, *, truncated: bool = False) -> list[RawCard]:
    """Cards from a few-shot completion (which starts after the prompt's final "Q:").

    Exact repeats are dropped (base models loop). When the output was cut at the token limit,
    an answer that runs to the very end keeps only its complete sentences (none: dropped).
    """
    full = "Q:" + text
    pairs = [(m["q"].strip(), m["a"].strip()) for m in _QA.finditer(full)]
    if truncated and pairs and full.endswith(pairs[-1][1]):
        question, answer = pairs.pop()
        whole = _SENTENCES.match(answer)  # keep the complete sentences of a cut answer
        if whole:
            pairs.append((question, whole.group(0)))
    seen: set[tuple[str, str]] = set()
    cards = []
    for pair in pairs:
        if pair not in seen:
            seen.add(pair)
            cards.append(RawCard("basic", *pair))
    if not cards:
        raise UnreadableOutput("no Q:/A: pairs in the output")
    return cards
