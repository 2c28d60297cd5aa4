"""Card prompts: render a chunk into a ``Prompt`` and read the model's answer back.

The wording lives in versioned files under ``services/cards/prompts/`` (``cards-chat-v1.txt`` for
instruct models, ``cards-fewshot-v1.txt`` for base models); the version string
("cards-chat-v1") is stamped on every card made with it.

From v3 a prompt names the card's language and shows a worked example in it
(``cards-examples-v3.txt``: English, Spanish, French, German, Portuguese; for another language
the chat prompt names it without an example, the few-shot one keeps the English example, which
a base model needs for the format). A v3 file also has a ``retry`` prompt: when every card of a
chunk was dropped, it asks once more and says why they were (``reasons``), with a hint per
reason. Older versions render as they always did, whatever the language.
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

from services.cards import language as languages
from services.cards.lexicon import NEUTRAL
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


def uses_language(profile: Profile, version: str) -> bool:
    """Whether the prompt names the card's language (v3 on): then the language is part of what
    determines the answer, and of the result cache's key."""
    sections = load_sections(prompt_version(profile, version))
    return "language.named" in sections or "$example" in sections.get("prompt", "")


def can_cover(profile: Profile, version: str) -> bool:
    """Whether the prompt version has a pages prompt for pages of a chunk left without a card."""
    return "pages" in load_sections(prompt_version(profile, version))


def can_retry(profile: Profile, version: str) -> bool:
    """Whether the prompt version has a retry prompt for a chunk whose cards were all dropped."""
    return "retry" in load_sections(prompt_version(profile, version))


@lru_cache(maxsize=8)
def examples(version: str) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """The worked examples of a version by language: (text, ((question, answer), ...))."""
    try:
        sections = load_sections(f"cards-examples-{version}")
    except PermanentError:
        return {}
    out = {}
    for code, body in sections.items():
        if not code:
            continue
        text = body.split("\n", 1)[0].removeprefix("Text:").strip()
        pairs = tuple((m["q"].strip(), m["a"].strip()) for m in _QA.finditer(body))
        out[code] = (text, pairs)
    return out


def _example_block(version: str, code: str) -> str:
    """An example as a base model continues it; English for a language without one."""
    found = examples(version)
    text, pairs = found.get(code) or found["en"]
    return "\n".join([f"Text: {text}", *(f"Q: {q}\nA: {a}" for q, a in pairs)])


# Which hint a retry gives for a drop reason (a prefix of the reason); "other" for the rest.
_HINTS = (
    ("not supported", "unsupported"),
    ("the answer only repeats", "repeats"),
    ("duplicate", "duplicate"),
    ("the answer says the opposite", "contradicts"),
    ("the answer compares", "compares"),
)


def _hints(sections: dict[str, str], reasons: Sequence[str]) -> str:
    names = [next((h for prefix, h in _HINTS if r.startswith(prefix)), "other") for r in reasons]
    return "\n".join(sections[f"hint.{h}"] for h in dict.fromkeys(names) if f"hint.{h}" in sections)


def render_prompt(
    chunk: Chunk,
    *,
    profile: Profile,
    card_types: Sequence[str] = ("basic",),
    per_chunk: int = 4,
    version: str = "v1",
    max_tokens: int | None = None,
    temperature: float | None = None,
    language: str = NEUTRAL,
    source_language: str = NEUTRAL,
    retry_reasons: Sequence[str] = (),
    pages: bool = False,
) -> RenderedPrompt:
    """The prompt for a chunk's cards in ``language`` ("und": the text's own, unnamed), from a
    chunk in ``source_language``; with ``retry_reasons``, the retry prompt that names them; with
    ``pages``, the pages prompt (the chunk is then a page left without a card)."""
    name = prompt_version(profile, version)
    sections = load_sections(name)
    default_tokens, default_temperature = _DEFAULTS[profile]
    tokens = max_tokens or default_tokens
    temp = default_temperature if temperature is None else temperature
    said = languages.name(language)
    reasons = "; ".join(retry_reasons)
    if retry_reasons and "retry" not in sections:
        raise PermanentError(f"prompt {name} has no retry prompt")
    if pages and "pages" not in sections:
        raise PermanentError(f"prompt {name} has no pages prompt")
    which = "retry" if retry_reasons else "pages" if pages else None
    if profile == "completion":
        if "basic" not in card_types:
            raise PermanentError("a base model (completion profile) writes basic cards only")
        template = sections[which or "prompt"] if "prompt" in sections else sections[""]
        text = Template(template).substitute(
            text=" ".join(chunk.text.split()),
            example=_example_block(version, language) if "$example" in template else "",
            reasons=reasons,
        )
        prompt = Prompt(text=text, stop=FEWSHOT_STOP, max_tokens=tokens, temperature=temp)
        return RenderedPrompt(name, prompt)
    unknown = [t for t in card_types if t not in sections]
    if unknown or not card_types:
        raise PermanentError(f"prompt {name} has no card types {unknown or '(none given)'}")
    types = "\n".join(sections[t] for t in card_types)
    named = {"language": said or "", "language_short": said or "the language of the text"}
    if "language.named" in sections:
        source = languages.name(source_language)
        rule = "language.source" if not said else "language.named"
        if said and source and source_language != language:
            rule = "language.translated"
        named["language_rule"] = Template(sections[rule]).substitute(named, source=source or "")
    system = Template(sections["system"]).substitute(named, types=types)
    user_template = sections[which or "user"]
    user = Template(user_template).substitute(
        named,
        pages=page_span(chunk),
        text=chunk.text,
        n=per_chunk,
        reasons=reasons,
        hints=_hints(sections, retry_reasons),
    )
    messages = [Message("system", system)]
    example = examples(version).get(language) if "basic" in card_types else None
    if example is not None:  # a worked example in the card's language, as a turn of its own
        text, pairs = example
        asked = Template(sections["user"]).substitute(named, pages="Page 1", text=text, n=len(pairs))
        answer = json.dumps(
            {"cards": [{"type": "basic", "front": q, "back": a} for q, a in pairs]}, ensure_ascii=False
        )
        messages += [Message("user", asked), Message("assistant", answer)]
    prompt = Prompt(
        messages=(*messages, Message("user", user)),
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
