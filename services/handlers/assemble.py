"""Assemble a deck: a finished document's stored cards, without near-duplicates, as one deck
blob, announced by DeckAssembled on the compacted decks topic.

The deck's summary keeps its `quality` beside the counts the state machine has: page coverage
(from the page ledger and the kept cards), the document's language (its chunks'), and the chunks
asked again after all their cards were dropped (services/cards/quality.py).
"""

from __future__ import annotations

import asyncio
import functools

import structlog

from services.cards import quality
from services.cards.dedup import drop_near_duplicates
from services.cards.language import requested
from services.documents.decks import store_deck, stored_cards, without_repeats
from services.documents.ledger import load_ledger
from services.documents.state import AssembleDeck, DocumentState
from services.events.models import DeckAssembled
from services.storage.blobs import BlobStore

log = structlog.get_logger(__name__)


async def assemble_deck(blobs: BlobStore, st: DocumentState, deck: AssembleDeck) -> DeckAssembled:
    """The deck of a document the state machine has just finished (file I/O in threads)."""
    every = await asyncio.to_thread(stored_cards, blobs, st.document_id, st.generation)
    cards = await asyncio.to_thread(lambda: drop_near_duplicates(without_repeats(every)))
    kept = {c.card_id for c in cards}
    ledger = await asyncio.to_thread(load_ledger, blobs, st.document_id, st.generation)
    asked = requested(st.upload.language) if st.upload is not None else None
    why = quality.page_reasons(
        ((e.pages, e.reason) for e in st.empty.values()),
        ((dict.fromkeys(s.label for s in f.chunk.segments), f.reason) for f in st.failed.values()),
        st.page_gaps.values(),
        repeated={c.page_label for c in every if c.card_id not in kept},
    )
    summary_quality = {
        **quality.page_coverage(ledger or [], cards, why),
        **quality.pages_asked_again(st.pages_asked.values(), cards),
        **quality.document_language(st.languages),
        "cards_language": asked,  # None: each chunk's own
        **quality.retried(st.retried),
    }
    uri = await asyncio.to_thread(
        functools.partial(
            store_deck,
            blobs,
            st.document_id,
            st.generation,
            deck.status,
            cards,
            empty_chunks=[e.model_dump() for e in deck.empty],
            dropped=deck.dropped,
            dropped_by_reason=deck.dropped_by_reason,
            duplicates_removed=max(0, st.cards - len(cards)),
            summary={
                "model": st.model or None,
                "prompt_version": st.prompt_version or None,
                "pages_total": st.pages_total,
                "chunks_total": max(st.chunks_total, 0),
                "chunks_failed": len(st.failed),
                "failures": [f.model_dump() for f in deck.failures],
                "created_at": st.created_at,
                "finished_at": st.updated_at,
                "quality": summary_quality,
            },
        )
    )
    log.info("deck assembled", document_id=st.document_id, status=deck.status, cards=len(cards))
    return DeckAssembled(
        tenant_id=st.tenant_id,
        document_id=st.document_id,
        generation=st.generation,
        status=deck.status,
        deck_uri=uri,
        cards=len(cards),
        chunks_total=max(st.chunks_total, 0),
        chunks_failed=len(st.failed),
        failures=deck.failures,
        duplicates=[c.card_id for c in every if c.card_id not in kept],
        pages_total=st.pages_total,
        cards_written=st.cards,
        created_at=st.created_at,
        error=st.error,
    )
