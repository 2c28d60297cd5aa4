"""What a deck's `quality` reports beside its card counts: page coverage, the document's
language, and the chunks asked again after all their cards were dropped.

Coverage counts pages with text worth a card (``SUBSTANTIAL_CHARS`` or more): of those, how many
a kept card cites, and which have none with why, so a user sees where the deck is thin and what
to do: retry a failed chunk, or write the card by hand on the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from services.cards.lexicon import NEUTRAL
from services.domain import Card
from services.events.models import PageInfo

SUBSTANTIAL_CHARS = 300  # a page with this much text should end with a card (or a reason)


# Why a page has no card when no chunk said: its text was split between chunks with less than
# SUBSTANTIAL_CHARS in each, so none asked about it again.
UNEXPLAINED = "no card cites it: its text is split between chunks, none of which held 300 characters of it"
REPEATED = "its cards repeated cards of other pages, which the deck keeps"


def page_coverage(
    pages: Iterable[PageInfo], cards: Iterable[Card], reasons: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Pages with substantial text, those a card cites, their share, the labels of the rest and
    why each has none (``reasons`` by page label, from its chunks)."""
    substantial = [p for p in pages if p.chars >= SUBSTANTIAL_CHARS]
    cited = {c.page for c in cards}
    covered = [p for p in substantial if p.number in cited]
    without = [p.label for p in substantial if p.number not in cited]
    return {
        "pages_with_text": len(substantial),
        "pages_with_cards": len(covered),
        "page_coverage": round(len(covered) / len(substantial), 3) if substantial else None,
        "pages_without_cards": without,
        "pages_without_cards_why": {label: (reasons or {}).get(label, UNEXPLAINED) for label in without},
    }


def page_reasons(
    empty: Iterable[tuple[Iterable[str], str]],
    failed: Iterable[tuple[Iterable[str], str]],
    gaps: Iterable[Mapping[str, str]],
    repeated: Iterable[str] = (),
) -> dict[str, str]:
    """Why a page may have no card, by label, from its chunks: one that failed (the user can
    retry it), cards of the page the deck removed as repeats (a slide that repeats the one
    before), a chunk that gave no card, a follow-up for the page that gave none."""
    out: dict[str, str] = {}
    for labels, reason in failed:
        out.update(dict.fromkeys(labels, f"its chunk failed: {reason}; retry the failed chunks"))
    for label in repeated:
        out.setdefault(label, REPEATED)
    for labels, reason in empty:
        for label in labels:
            out.setdefault(label, f"its chunk gave no card: {reason}")
    for gap in gaps:
        for label, reason in gap.items():
            out.setdefault(label, reason)
    return out


def pages_asked_again(asked: Iterable[Iterable[str]], cards: Iterable[Card]) -> dict[str, int]:
    """Pages asked about again as no kept card cited them, and how many now have one."""
    labels = {label for pages in asked for label in pages}
    cited = {c.page_label for c in cards}
    return {"pages_asked_again": len(labels), "pages_asked_again_with_cards": len(labels & cited)}


def document_language(chunks: Mapping[int, str]) -> dict[str, Any]:
    """The document's language (its chunks' most frequent, "und" when none could be told) and,
    when chunks differ, how many are in each."""
    told = Counter(code for code in chunks.values() if code != NEUTRAL)
    main = told.most_common(1)[0][0] if told else NEUTRAL
    out: dict[str, Any] = {"language": main}
    if len(told) > 1:
        out["chunks_by_language"] = dict(told.most_common())
    return out


def retried(outcomes: Mapping[int, bool]) -> dict[str, int]:
    """Chunks asked once more after all their cards were dropped, and how many of them that
    gave a card."""
    return {"retried_chunks": len(outcomes), "retried_chunks_with_cards": sum(outcomes.values())}
