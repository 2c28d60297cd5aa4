"""People's edits of a deck: events on cards.edits, laid over the cards a generation wrote.

The deck a person sees is its generation's cards (services/documents/decks.py) with the edits
applied: `CardEdited` replaces fields, `CardDeleted` takes a card out, `CardAdded` puts the
person's own card in, and `CardChecked` settles a card marked to check: `accept` keeps it and
clears the mark, `dismiss` takes it out. Nothing is written back to the generated deck: the
edits are the record, so any generation's deck is its cards plus the edits, every time.

A document's edits apply in the order they happened (`occurred_at`, then the event id) whatever
order they arrive in, and an event seen before is left out (delivery is at-least-once): every
API process, and every restart, serves the same deck.

Edits made on one generation carry over to later ones (`match_cards` has the rule); edits carry
forward only, never back to an older generation.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from services.domain import Card, CardType
from services.errors import InputRejected
from services.events.models import CardAdded, CardChecked, CardDeleted, CardEdit, CardEdited

MAX_FRONT_CHARS = 1000
MAX_BACK_CHARS = 2000
MAX_TAGS = 20
MAX_TAG_CHARS = 50
VERDICTS = ("accept", "dismiss")
WRITTEN_BY_PERSON = "person"  # the prompt version of a card a person added
# The card writer's cloze syntax (services/cards/rules.py): {{c1::answer}} or {{c1::answer::hint}}.
CLOZE = re.compile(r"\{\{c\d+::(.*?)(?:::[^}]*)?\}\}")
_WORD = re.compile(r"[^\W_]+")


def new_card_id() -> str:
    """An added card's id: "u" and 32 hex digits, never a generated card's (hex only)."""
    return "u" + uuid.uuid4().hex


def invalid(reason: str) -> InputRejected:
    return InputRejected(reason, "invalid-card")


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags without surrounding blanks or repeats, in the order given; 422 for one Anki cannot
    keep (blank, a space inside, too long) or too many."""
    out = list(dict.fromkeys(t.strip() for t in tags))
    if len(out) > MAX_TAGS:
        raise invalid(f"at most {MAX_TAGS} tags, not {len(out)}")
    for tag in out:
        if not tag or any(ch.isspace() for ch in tag):
            raise invalid(f"a tag is one word without spaces, not {tag!r}")
        if len(tag) > MAX_TAG_CHARS:
            raise invalid(f"a tag has at most {MAX_TAG_CHARS} characters: {tag[:20]!r}… has {len(tag)}")
    return out


def check_card(kind: str, front: str, back: str) -> None:
    """Refuse (422) a card a person could not study: empty or too long text, a cloze card without
    a cloze deletion, cloze syntax on a basic card, a basic card without an answer."""
    if kind not in ("basic", "cloze"):
        raise invalid(f"a card is basic or cloze, not {kind!r}")
    if not front.strip():
        raise invalid("the front is empty")
    if len(front) > MAX_FRONT_CHARS:
        raise invalid(f"the front has {len(front)} characters, more than {MAX_FRONT_CHARS}")
    if len(back) > MAX_BACK_CHARS:
        raise invalid(f"the back has {len(back)} characters, more than {MAX_BACK_CHARS}")
    answers = CLOZE.findall(front)
    if kind == "cloze":
        if not answers or not all(a.strip() for a in answers):
            raise invalid("a cloze card needs a cloze deletion in its front, like {{c1::Paris}}")
        if "{{" in CLOZE.sub("", front) or "}}" in CLOZE.sub("", front):
            raise invalid("the front has a cloze deletion that is not closed, like {{c1::Paris}}")
    elif "{{" in front:
        raise invalid("a basic card's front has cloze syntax: make it a cloze card")
    elif not back.strip():
        raise invalid("the back is empty: a basic card needs an answer")


def _when(event: CardEdit) -> tuple[int, str]:
    return event.occurred_at, event.event_id


class DocumentEdits:
    """One document's edits, in the order they happened; applying one twice changes nothing."""

    def __init__(self) -> None:
        self._events: list[CardEdit] = []
        self._seen: set[str] = set()

    def apply(self, event: CardEdit) -> bool:
        """Keep an edit; False for one seen before (a redelivery, or the API's own read back)."""
        if event.event_id in self._seen:
            return False
        self._seen.add(event.event_id)
        bisect.insort(self._events, event, key=_when)
        return True

    def up_to(self, generation: int) -> list[CardEdit]:
        """The edits that apply to `generation`'s deck: made on it or on an older one."""
        return [e for e in self._events if e.generation <= generation]

    def __len__(self) -> int:
        return len(self._events)


@dataclass(frozen=True, slots=True)
class Matching:
    """The cards of an older generation matched to a newer one's (`match_cards`)."""

    to: dict[str, str]  # older card id -> newer card id
    why_not: dict[str, str]  # older card id -> why it has no match


def _words(card: Card) -> list[str]:
    return _WORD.findall(f"{card.front} {card.back}".lower())


def similarity(a: Card, b: Card) -> float:
    """How alike two cards read, 0..1: difflib's ratio over the words of front and back."""
    return SequenceMatcher(None, _words(a), _words(b), autojunk=False).ratio()


def match_cards(older: Sequence[Card], newer: Sequence[Card], generation: int) -> Matching:
    """The carry-over rule: the card of a newer generation (`generation`) that an edit made on
    an older generation's card applies to.

    1. Same source span: an older card's candidates are the newer generation's cards with its
       `chunk_index` and `page` (chunking is deterministic, so a chunk is the same text in
       every generation of a document).
    2. Within a span, cards pair one to one, the most alike pair first (`similarity` of front
       and back as the model wrote them); equally alike pairs go in deck order.
    3. An older card left without a partner (the span has fewer cards in the newer generation,
       or none) has no match: its edits are listed as unplaced, with the reason.

    Cards a person added need no matching: they keep their id in every generation.
    """
    spans: dict[tuple[int, int], list[Card]] = defaultdict(list)
    for card in newer:
        spans[card.chunk_index, card.page].append(card)
    mine: dict[tuple[int, int], list[Card]] = defaultdict(list)
    for card in older:
        mine[card.chunk_index, card.page].append(card)
    to: dict[str, str] = {}
    why_not: dict[str, str] = {}
    for (chunk, page), olds in mine.items():
        news = spans.get((chunk, page), [])
        pairs = sorted((-similarity(o, n), i, j) for i, o in enumerate(olds) for j, n in enumerate(news))
        taken: set[int] = set()
        for _, i, j in pairs:
            if olds[i].card_id not in to and j not in taken:
                to[olds[i].card_id] = news[j].card_id
                taken.add(j)
        for card in olds:
            if card.card_id in to:
                continue
            where = f"chunk {chunk}, page {card.page_label}"
            why_not[card.card_id] = (
                f"generation {generation} has fewer cards on {where}, and more alike ones took them"
                if news
                else f"generation {generation} has no card on {where}"
            )
    return Matching(to, why_not)


class CarryOver:
    """Card ids of generation S ≤ T as generation T's: the same id on T itself or for a card a
    person added, else through `match_cards`, made once per S when first needed."""

    def __init__(
        self,
        generation: int,
        cards: Sequence[Card],
        cards_of: Callable[[int], Sequence[Card]],
        added: Iterable[str] = (),
    ) -> None:
        self.generation = generation
        self.cards = {c.card_id: c for c in cards}
        self.cards_of = cards_of
        self.added = set(added)
        self._older: dict[int, dict[str, Card]] = {}
        self._matchings: dict[int, Matching] = {}

    def original(self, generation: int, card_id: str) -> Card | None:
        """A card of generation `generation` as the model wrote it."""
        if generation == self.generation:
            return self.cards.get(card_id)
        if generation not in self._older:
            self._older[generation] = {c.card_id: c for c in self.cards_of(generation)}
        return self._older[generation].get(card_id)

    def resolve(self, generation: int, card_id: str) -> tuple[str | None, str]:
        """Generation T's id of the card, or None and why it has none."""
        if generation == self.generation or card_id in self.added:
            return card_id, ""
        if generation > self.generation:
            return None, f"made on generation {generation}: edits carry forward only"
        if generation not in self._matchings:
            self.original(generation, card_id)  # loads the generation
            older = list(self._older[generation].values())
            self._matchings[generation] = match_cards(older, list(self.cards.values()), self.generation)
        matching = self._matchings[generation]
        if card_id in matching.to:
            return matching.to[card_id], ""
        return None, matching.why_not.get(card_id, f"no card {card_id} in generation {generation}")


@dataclass(frozen=True, slots=True)
class Placed:
    event: CardEdit
    card_id: str  # the card of the served generation it applied to


@dataclass(frozen=True, slots=True)
class Unplaced:
    event: CardEdit
    reason: str


@dataclass(slots=True)
class Overlaid:
    """A generation's deck as edited, and where each edit went."""

    cards: list[Card]
    carry: CarryOver
    placed: list[Placed] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)


def added_card(event: CardAdded, filename: str) -> Card:
    kind: CardType = "cloze" if event.type == "cloze" else "basic"
    return Card(
        card_id=event.card_id,
        type=kind,
        front=event.front,
        back=event.back,
        file=filename,
        page=event.page,
        page_label=event.page_label,
        section=tuple(event.section),
        chunk_index=event.chunk_index,
        prompt_version=WRITTEN_BY_PERSON,
        tags=tuple(event.tags),
    )


def edited(card: Card, event: CardEdited) -> Card:
    changes: dict[str, object] = {
        name: value for name in ("front", "back", "type") if (value := getattr(event, name)) is not None
    }
    if event.tags is not None:
        changes["tags"] = tuple(event.tags)
    return dataclasses.replace(card, **changes)  # type: ignore[arg-type]


def overlay(
    base: Sequence[Card],
    generation: int,
    events: Iterable[CardEdit],
    cards_of: Callable[[int], Sequence[Card]],
    filename: str,
) -> Overlaid:
    """Generation `generation`'s cards (`base`, as generated) with the edits applied, in order.

    `cards_of(S)` gives an older generation's cards as generated (for the carry-over). A
    carried-over `accept` applies only where the card reads as the person accepted it: each of
    its front and back is their own edit or the same as generated then; otherwise the mark
    stays and the verdict is unplaced (the newer wording is not checked yet)."""
    todo = [e for e in events if e.generation <= generation]
    carry = CarryOver(generation, base, cards_of, (e.card_id for e in todo if isinstance(e, CardAdded)))
    cards = {c.card_id: c for c in base}
    added: dict[str, tuple[Card, str | None]] = {}  # added card -> it and the card it follows
    written: dict[str, set[str]] = defaultdict(set)  # card -> the fields a person wrote
    gone: set[str] = set()
    out = Overlaid([], carry)
    for event in todo:
        if isinstance(event, CardAdded):
            anchor = carry.resolve(event.generation, event.after_card_id)[0] if event.after_card_id else None
            card = added_card(event, filename)
            cards[card.card_id] = card
            added[card.card_id] = (card, anchor)
            out.placed.append(Placed(event, card.card_id))
            continue
        target, why = carry.resolve(event.generation, event.card_id)
        if target is None:
            out.unplaced.append(Unplaced(event, why))
            continue
        current = cards.get(target)
        if current is None:
            why = "the card was deleted before" if target in gone else f"no card {target} in the deck"
            out.unplaced.append(Unplaced(event, why))
            continue
        if isinstance(event, CardEdited):
            cards[target] = edited(current, event)
            written[target] |= {n for n in ("front", "back") if getattr(event, n) is not None}
        elif isinstance(event, CardDeleted) or (isinstance(event, CardChecked) and event.verdict != "accept"):
            del cards[target]
            gone.add(target)
        elif isinstance(event, CardChecked):
            if target in carry.cards and not _reads_as_accepted(carry, event, target, written[target]):
                out.unplaced.append(Unplaced(event, "the card reads otherwise now: check it again"))
                continue
            cards[target] = dataclasses.replace(current, needs_review=False, review=None)
        out.placed.append(Placed(event, target))
    out.cards = _in_order(base, cards, added)
    return out


def _reads_as_accepted(carry: CarryOver, event: CardChecked, target: str, written: set[str]) -> bool:
    """Whether a generated card reads as the one accepted on an older generation: each of its
    front and back is the person's own edit, or the same as generated on that one."""
    source = carry.original(event.generation, event.card_id)
    if event.generation == carry.generation or source is None:
        return True
    now = carry.cards[target]
    return all(name in written or getattr(source, name) == getattr(now, name) for name in ("front", "back"))


def _in_order(
    base: Sequence[Card], cards: dict[str, Card], added: dict[str, tuple[Card, str | None]]
) -> list[Card]:
    """The deck's order: generated cards as they were, each added card after the card it was
    added next to (after the last card of its page when that one is not in this generation)."""
    known = {c.card_id for c in base} | set(added)
    follows: dict[str | None, list[str]] = defaultdict(list)
    for card_id, (card, anchor) in added.items():
        if anchor is None or anchor not in known:
            on_or_before = [c.card_id for c in base if c.page <= card.page]
            anchor = on_or_before[-1] if on_or_before else None
        follows[anchor].append(card_id)
    out: list[Card] = []

    def put(card_id: str) -> None:
        if card_id in cards:
            out.append(cards[card_id])
        for after in follows.get(card_id, ()):
            put(after)

    for first in follows.get(None, ()):
        put(first)
    for card in base:
        put(card.card_id)
    return out
