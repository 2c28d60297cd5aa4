"""All per-document facts ──► jobs.progress, decks and retried chunks: services.handlers.track.

The only stateful agent: a table of DocumentState keyed by document id, co-partitioned with
every input topic. It runs with concurrency 1 because it writes the table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import faust

from services.documents.state import DocumentState
from services.events.models import now_ms
from services.handlers.track import DocumentTracker
from streams.lifecycle import WorkerLifecycle
from streams.outbox import Outbox

LLM_REPORT_EVERY_S = 1.0


class TableStates:
    """The tracker's states: a Faust table (changelogged, the truth) and the decoded states of
    this worker's documents, which only save parsing the JSON on every event. Dropped when
    partitions move to another worker."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.decoded: dict[str, DocumentState] = {}
        self.scanned = False  # whether decoded holds every document of this worker's partitions

    def forget(self) -> None:
        self.decoded.clear()
        self.scanned = False

    def get(self, document_id: str) -> DocumentState | None:
        state = self.decoded.get(document_id)
        if state is None and (raw := self.table.get(document_id.encode())):
            state = self.decoded[document_id] = DocumentState.model_validate_json(raw)
        return state

    def put(self, state: DocumentState) -> None:
        self.decoded[state.document_id] = state

    def save(self, states: Sequence[DocumentState]) -> None:
        for st in states:
            self.table[st.document_id.encode()] = st.model_dump_json().encode()

    def cached(self) -> list[DocumentState]:
        return list(self.decoded.values())

    def every(self) -> list[DocumentState]:
        if not self.scanned:  # after start or a rebalance: the table holds documents not seen since
            for key in list(self.table.keys()):
                self.get(key.decode())
            self.scanned = True
        return self.cached()


def register(
    app: faust.App,
    life: WorkerLifecycle,
    tracker: DocumentTracker,
    outbox: Outbox,
    facts: Any,
    partitions: int,
) -> Any:
    # Keyed by the topics' key bytes, with the partitioner: docs/decisions/0011-tracker-table-keyed-by-
    # the-topics-key-bytes.md
    table = app.Table(
        "documents",
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    states = TableStates(table)
    kafka = life.parts.settings.kafka
    # A batch's progress events carry the counters after each of its facts, while the states
    # already hold the state after the whole batch: a notice built from them and sent between
    # them would make the counters a client sees go back. One sender at a time.
    reporting = asyncio.Lock()

    @app.on_partitions_revoked.connect
    async def _forget(*_args: Any, **_kwargs: Any) -> None:
        states.forget()
        tracker.forget()

    @app.agent(facts)
    async def track_documents(stream: Any) -> None:
        await life.wait_ready()
        # Batches: a book's 1,000 facts arrive within seconds; each document's state is written
        # to the table once per batch, and its cards go out as one progress event per batch.
        async for batch in stream.take(kafka.track_batch, within=kafka.track_within_s):
            async with reporting:
                folded = await tracker.fold(batch, states)
                for send in folded.sends:
                    await outbox.send(send)
            states.save(folded.changed)

    async def reconcile() -> None:
        for send in tracker.reconcile(states, now_ms()):
            await outbox.send(send)

    async def report_llm() -> None:
        if tracker.may_notify():  # the usual case: nothing to say, and no walk over every document
            async with reporting:
                for send in tracker.llm_notices(states):
                    await outbox.send(send)

    app.timer(kafka.reconcile_every_s)(reconcile)
    app.timer(LLM_REPORT_EVERY_S)(report_llm)
    return track_documents
