"""Near-duplicate cards across chunks, by embedding similarity (wordllama, shipped in its wheel).

Overlapping chunks and repetitive textbooks ask the same question in other words; exact-text
dedup (services/decks.py) misses those. The static embedding model loads from the package's
own folder: nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from services.domain import Card

THRESHOLD = 0.92  # paraphrases of one question score 0.63-0.94, unrelated ones below 0.2


@lru_cache(maxsize=1)
def _model() -> Any:
    import wordllama
    from wordllama import WordLlama

    return WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def drop_near_duplicates(cards: list[Card], threshold: float = THRESHOLD) -> list[Card]:
    """Keep the first of every group of cards whose question and answer embed alike."""
    if len(cards) < 2:
        return cards
    vectors = np.asarray(_model().embed([f"{c.front} {c.back}" for c in cards], norm=True), dtype=np.float32)
    kept: list[int] = []
    for i in range(len(cards)):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) < threshold:
            kept.append(i)
    return [cards[i] for i in kept]
