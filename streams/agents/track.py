"""All per-document facts ──► jobs.progress (what clients see) and decks.

The only stateful agent: a table of DocumentState keyed by document id, co-partitioned with
every input topic. It runs with concurrency 1 because it writes the table.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import faust
import structlog

from services.cards.dedup import drop_near_duplicates
from services.documents.decks import collect_cards, store_deck
from services.documents.state import DocumentState, Outcome, coalesce_cards, llm_notices, stalled, track
from services.events.models import DeckAssembled, Event, now_ms
from streams.lifecycle import PipelineResources

log = structlog.get_logger(__name__)
LLM_REPORT_EVERY_S = 1.0


def register(
    app: faust.App,
    res: PipelineResources,
    facts: Any,
    progress_topic: Any,
    decks: Any,
    chunks: Any,
    uploads: Any,
    partitions: int,
) -> Any:
    # use_partitioner: the changelog partition comes from the key (as for every input topic,
    # keyed by document id), not from "the current event", which a batch does not have. Keys
    # are the topics' key bytes (the document id, UTF-8): Faust serializes a str key as JSON
    # ('"id"'), which the partitioner puts elsewhere than the document's events. With two
    # workers, one then tracked a document's events while its state was restored on the other,
    # and the document never finished.
    table = app.Table(
        "documents",
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    # Decoded states of this worker's documents: the table (changelogged) stays the truth, this
    # only saves parsing the JSON on every event. Dropped when partitions move to another worker.
    decoded: dict[str, DocumentState] = {}

    scanned = False  # whether decoded holds every unfinished document of this worker's partitions
    resent: dict[str, int] = {}  # document id -> when its missing chunks were last sent again (ms)

    told_to_wait: set[str] = set()  # documents whose clients were told they wait for the LLM
    # A batch's progress events carry the counters after each of its facts, while `decoded`
    # already holds the state after the whole batch: a notice built from it and sent between
    # them would make the counters a client sees go back. One sender at a time.
    reporting = asyncio.Lock()

    @app.on_partitions_revoked.connect
    async def _forget(*_args: Any, **_kwargs: Any) -> None:
        nonlocal scanned
        decoded.clear()
        told_to_wait.clear()
        scanned = False

    def load(document_id: str) -> DocumentState | None:
        state = decoded.get(document_id)
        if state is None and (raw := table.get(document_id.encode())):
            state = decoded[document_id] = DocumentState.model_validate_json(raw)
        return state

    @app.agent(facts)
    async def track_documents(stream: Any) -> None:
        await res.wait_ready()
        # Batches: a book's 1,000 facts arrive within seconds; each document's state is written
        # to the table once per batch, and its cards go out as one progress event per batch.
        async for batch in stream.take(
            res.settings.kafka.track_batch, within=res.settings.kafka.track_within_s
        ):
            changed: dict[str, DocumentState] = {}
            sends: list[tuple[Event, Outcome]] = []
            for event in batch:
                if not isinstance(event, Event):
                    continue
                state = load(event.document_id)
                outcome = track(state, event)
                sends.append((event, outcome))
                if outcome.state is not None and outcome.state is not state:
                    decoded[event.document_id] = changed[event.document_id] = outcome.state
            async with reporting:
                for event, outcome in sends:
                    await emit(event, outcome)
                for progress in coalesce_cards([p for _, o in sends for p in o.progress]):
                    await progress_topic.send(key=progress.document_id, value=progress)
            for document_id, st in changed.items():
                table[document_id.encode()] = st.model_dump_json().encode()

    async def reconcile() -> None:
        """Send again what a stalled document is missing (see services.documents.state.stalled)."""
        nonlocal scanned
        if res.breaker.state != "closed":
            return  # the LLM is down: documents wait for it, by design
        if not scanned:  # after start or a rebalance: the table holds documents not seen since
            for key in list(table.keys()):
                load(key.decode())
            scanned = True
        after_ms = int(res.settings.kafka.reconcile_after_s * 1000)
        now = now_ms()
        for document_id, state in list(decoded.items()):
            again = stalled(state, now, after_ms)
            if again is None or now - resent.get(document_id, 0) < after_ms:
                continue
            resent[document_id] = now
            log.warning(
                "document stalled: sending it again",
                document_id=document_id,
                status=state.status,
                chunks=again.replay_chunks or "all",
            )
            await uploads.send(key=document_id, value=again)

    app.timer(res.settings.kafka.reconcile_every_s)(reconcile)

    async def report_llm() -> None:
        """While the breaker is open a document makes no progress: its clients hear why
        (SSE `waiting`, `waiting` in its status), and hear again once the LLM is back."""
        unavailable = res.breaker.unavailable
        if unavailable is None and not told_to_wait:
            return  # the usual case: nothing to say, and no walk over every document
        async with reporting:
            for notice in llm_notices(list(decoded.values()), told_to_wait, unavailable):
                await progress_topic.send(key=notice.document_id, value=notice)

    app.timer(LLM_REPORT_EVERY_S)(report_llm)

    async def emit(event: Event, out: Outcome) -> None:
        for retry in out.retries:
            await chunks.send(key=event.document_id, value=retry)
        if out.deck is not None and out.state is not None:
            st = out.state
            cards = await asyncio.to_thread(collect_cards, res.blobs, st.document_id, st.generation)
            cards = await asyncio.to_thread(drop_near_duplicates, cards)
            uri = await asyncio.to_thread(
                functools.partial(
                    store_deck,
                    res.blobs,
                    st.document_id,
                    st.generation,
                    out.deck.status,
                    cards,
                    empty_chunks=[e.model_dump() for e in out.deck.empty],
                    dropped=out.deck.dropped,
                    dropped_by_reason=out.deck.dropped_by_reason,
                    duplicates_removed=max(0, st.cards - len(cards)),
                )
            )
            await decks.send(
                key=event.document_id,
                value=DeckAssembled(
                    tenant_id=st.tenant_id,
                    document_id=st.document_id,
                    generation=st.generation,
                    status=out.deck.status,
                    deck_uri=uri,
                    cards=len(cards),
                    chunks_total=max(st.chunks_total, 0),
                    chunks_failed=len(st.failed),
                    failures=out.deck.failures,
                ),
            )
            log.info("deck assembled", document_id=st.document_id, status=out.deck.status, cards=len(cards))

    return track_documents
