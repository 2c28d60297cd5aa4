"""What a deck's `quality` reports beside its card counts: page coverage, the document's
language, and the chunks asked again after all their cards were dropped.

Coverage counts pages with text worth a card (``SUBSTANTIAL_CHARS`` or more): of those, how many
a kept card cites, and which have none, so a user sees where the deck is thin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from services.cards.lexicon import NEUTRAL
from services.domain import Card
from services.events.models import PageInfo

SUBSTANTIAL_CHARS = 300  # a page with this much text should end with a card (or a reason)


def page_coverage(pages: Iterable[PageInfo], cards: Iterable[Card]) -> dict[str, Any]:
    """Pages with substantial text, those a card cites, their share, the labels of the rest."""
    substantial = [p for p in pages if p.chars >= SUBSTANTIAL_CHARS]
    cited = {c.page for c in cards}
    covered = [p for p in substantial if p.number in cited]
    return {
        "pages_with_text": len(substantial),
        "pages_with_cards": len(covered),
        "page_coverage": round(len(covered) / len(substantial), 3) if substantial else None,
        "pages_without_cards": [p.label for p in substantial if p.number not in cited],
    }


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
