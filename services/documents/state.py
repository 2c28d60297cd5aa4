"""The document state machine: every fact about a document in, what clients see out.

`track(state, event)` is pure: it returns the new state and what to emit. It is idempotent
under at-least-once delivery because it keeps *sets* (pages seen, chunks done or failed), not
counters, and a document finishes exactly once per round (a retry opens a new round).

    queued ─► extracting ─► generating ─► completed | partial | failed
         └────────────── cancel ──────────────► cancelled
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

from services.domain import UNRECORDED
from services.events.models import (
    CancelDocument,
    CardsGenerated,
    ChunkCreated,
    ChunkFailed,
    ChunkFailure,
    ChunksPlanned,
    DocumentProgress,
    DocumentUploaded,
    EmptyChunk,
    Event,
    ExtractionEnded,
    PageExtracted,
    PageInfo,
    RetryFailedChunks,
)

TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})
EXTRACT_WEIGHT = 0.2


class DocumentState(BaseModel):
    tenant_id: str
    document_id: str
    generation: int
    filename: str = ""
    created_at: int = 0
    status: str = "queued"
    pages_total: int = 0
    pages: list[int] = []
    extraction: str | None = None  # ok, partial, failed once extraction ended
    chunks_total: int = -1  # unknown until ChunksPlanned
    done: dict[int, int] = {}  # chunk index -> cards made
    failed: dict[int, ChunkFailed] = {}
    empty: dict[int, EmptyChunk] = {}  # chunks done without a card, and why
    dropped: dict[int, int] = {}  # chunk index -> cards its validation or grounding dropped
    dropped_reasons: dict[int, dict[str, int]] = {}  # chunk index -> those cards by reason
    error: str | None = None
    finished: bool = False
    upload: DocumentUploaded | None = None  # what to send again if the document stalls
    model: str = ""  # what wrote the cards (the latest CardsGenerated's), for the deck's summary
    prompt_version: str = ""
    languages: dict[int, str] = {}  # chunk index -> the language detected in its text
    retried: dict[int, bool] = {}  # chunk index -> asked again after its cards were all dropped: kept one
    pages_asked: dict[int, list[str]] = {}  # chunk index -> pages asked about again (no card cited them)
    page_gaps: dict[int, dict[str, str]] = {}  # chunk index -> its pages still without a card, and why
    updated_at: int = 0  # occurred_at (ms) of the latest fact that changed the state

    @property
    def cards(self) -> int:
        return sum(self.done.values())

    @property
    def progress(self) -> float:
        if self.status in TERMINAL:
            return 1.0
        pages = len(self.pages) / self.pages_total if self.pages_total else 0.0
        if self.extraction is not None:
            pages = 1.0
        chunks = (len(self.done) + len(self.failed)) / self.chunks_total if self.chunks_total > 0 else 0.0
        return round(min(1.0, EXTRACT_WEIGHT * pages + (1 - EXTRACT_WEIGHT) * chunks), 4)


@dataclass(frozen=True, slots=True)
class AssembleDeck:
    """Instruction to the caller: collect the stored cards, write the deck, emit DeckAssembled."""

    status: str
    failures: list[ChunkFailure]
    empty: list[EmptyChunk]
    dropped: int
    dropped_by_reason: dict[str, int]  # the most frequent reason first


@dataclass(slots=True)
class Outcome:
    state: DocumentState | None
    progress: list[DocumentProgress] = field(default_factory=list)
    retries: list[ChunkCreated] = field(default_factory=list)
    deck: AssembleDeck | None = None


def snapshot(st: DocumentState, kind: str, **extra: object) -> DocumentProgress:
    return DocumentProgress(
        tenant_id=st.tenant_id,
        document_id=st.document_id,
        generation=st.generation,
        kind=kind,
        status=st.status,
        filename=st.filename,
        created_at=st.created_at,
        pages_total=max(st.pages_total, len(st.pages)),
        pages_done=len(st.pages),
        chunks_total=max(st.chunks_total, 0),
        chunks_done=len(st.done),
        chunks_failed=len(st.failed),
        cards=st.cards,
        progress=st.progress,
        error=st.error,
        **extra,
    )


def _maybe_finish(st: DocumentState, out: Outcome) -> None:
    if st.finished or st.status in TERMINAL or st.extraction is None or st.chunks_total < 0:
        return
    if st.extraction == "failed":
        st.status = "failed"
    elif st.chunks_total == 0:
        st.status, st.error = "failed", st.error or "no text found in the document"
    elif len(st.done) + len(st.failed) < st.chunks_total:
        return
    elif not st.done:
        first = min(st.failed)
        st.status, st.error = "failed", f"every chunk failed; chunk {first}: {st.failed[first].reason}"
    elif st.failed or st.extraction == "partial":
        st.status = "partial"
    else:
        st.status = "completed"
    _finish(st, out)


def _finish(st: DocumentState, out: Outcome) -> None:
    st.finished = True
    failures = [ChunkFailure(chunk_index=i, reason=f.reason) for i, f in sorted(st.failed.items())]
    empty = [st.empty[i] for i in sorted(st.empty)]
    out.deck = AssembleDeck(
        status=st.status,
        failures=failures,
        empty=empty,
        dropped=sum(st.dropped.values()),
        dropped_by_reason=_dropped_by_reason(st),
    )
    out.progress.append(snapshot(st, "done"))


def _dropped_by_reason(st: DocumentState) -> dict[str, int]:
    """Dropped cards by reason over the document; events from before reasons were kept count
    as UNRECORDED."""
    counts: Counter[str] = Counter()
    for chunk_index, dropped in st.dropped.items():
        reasons = st.dropped_reasons.get(chunk_index, {})
        counts.update(reasons)
        counts[UNRECORDED] += dropped - sum(reasons.values())
    return {reason: n for reason, n in counts.most_common() if n > 0}


def track(state: DocumentState | None, event: Event) -> Outcome:
    out = _track(state, event)
    if out.state is not None and out.state is not state:
        out.state.updated_at = max(out.state.updated_at, event.occurred_at)
    return out


def _track(state: DocumentState | None, event: Event) -> Outcome:
    if isinstance(event, DocumentUploaded):
        if event.replay_chunks:
            return Outcome(state)  # a reconciliation request (see `stalled`), not a fact
        if state is not None and event.generation < state.generation:
            return Outcome(state)  # an older generation's upload, redelivered: that round is over
        if state is not None and state.generation == event.generation:
            if state.filename:
                return Outcome(state)  # redelivered upload
            # Other facts overtook the upload (they travel on other topics): fill in what it knows.
            update = {"filename": event.filename, "created_at": event.occurred_at, "upload": event}
            st = state.model_copy(update=update)
            return Outcome(st, [snapshot(st, "progress")])
        st = DocumentState(
            tenant_id=event.tenant_id,
            document_id=event.document_id,
            generation=event.generation,
            filename=event.filename,
            created_at=event.occurred_at,
            upload=event,
        )
        return Outcome(st, [snapshot(st, "progress")])
    if state is None:
        # A fact about a document whose upload we have not seen: create it from the ids.
        state = DocumentState(
            tenant_id=event.tenant_id,
            document_id=event.document_id,
            generation=event.generation,
            created_at=event.occurred_at,
        )
    if event.generation != state.generation:
        return Outcome(state)
    # A new state with its own containers; the values in them (ints, frozen events) are shared.
    containers = {
        "pages": list(state.pages),
        "done": dict(state.done),
        "failed": dict(state.failed),
        "empty": dict(state.empty),
        "dropped": dict(state.dropped),
        "dropped_reasons": dict(state.dropped_reasons),
    }
    st = state.model_copy(update=containers)
    out = Outcome(st)
    if isinstance(event, CancelDocument):
        if st.status not in TERMINAL:
            st.status, st.error = "cancelled", event.reason or "cancelled by the user"
            _finish(st, out)
        return out
    if st.status == "cancelled":
        return Outcome(state)  # late results of a cancelled document: keep what the deck has
    if isinstance(event, PageExtracted):
        if event.number in st.pages:
            return Outcome(state)
        st.pages.append(event.number)
        st.pages_total = max(st.pages_total, event.pages_total or 0)
        if st.status == "queued":
            st.status = "extracting"
        page = PageInfo(
            number=event.number,
            label=event.label,
            section=event.section,
            method=event.method,
            reason=event.reason,
            chars=len(event.text),
            tokens=event.tokens,
        )
        out.progress.append(snapshot(st, "page", page=page))
    elif isinstance(event, ExtractionEnded):
        if st.extraction is not None:
            return Outcome(state)
        st.extraction = event.status
        st.pages_total = max(event.pages_total, len(st.pages))
        if event.status == "failed":
            st.error = event.reason or "extraction failed"
        elif event.reason:
            st.error = event.reason
        out.progress.append(snapshot(st, "progress"))
    elif isinstance(event, ChunksPlanned):
        if st.chunks_total >= 0:
            return Outcome(state)
        st.chunks_total = event.chunks_total
        if st.status in ("queued", "extracting") and event.chunks_total > 0:
            st.status = "generating"
        out.progress.append(snapshot(st, "progress"))
    elif isinstance(event, CardsGenerated):
        if event.chunk_index in st.done:
            return Outcome(state)
        st.failed.pop(event.chunk_index, None)
        st.done[event.chunk_index] = len(event.cards)
        st.model, st.prompt_version = event.model, event.prompt_version
        if event.dropped:
            st.dropped[event.chunk_index] = event.dropped
        if event.dropped_reasons:
            st.dropped_reasons[event.chunk_index] = event.dropped_reasons
        if event.language:
            st.languages[event.chunk_index] = event.language
        if event.retried:
            st.retried[event.chunk_index] = bool(event.cards)
        if event.pages_asked_again:
            st.pages_asked[event.chunk_index] = event.pages_asked_again
        if event.pages_without_cards:
            st.page_gaps[event.chunk_index] = event.pages_without_cards
        if not event.cards:
            reason = event.empty_reason or "the model returned no cards"
            st.empty[event.chunk_index] = EmptyChunk(
                chunk_index=event.chunk_index, pages=event.pages, reason=reason
            )
        if st.status in ("queued", "extracting"):
            st.status = "generating"
        out.progress.append(snapshot(st, "card", new_cards=event.cards))
    elif isinstance(event, ChunkFailed):
        if event.chunk_index in st.done or event.chunk_index in st.failed:
            return Outcome(state)
        st.failed[event.chunk_index] = event
        failure = ChunkFailure(chunk_index=event.chunk_index, reason=event.reason)
        out.progress.append(snapshot(st, "chunk_failed", failure=failure))
    elif isinstance(event, RetryFailedChunks):
        if not st.failed or st.status not in ("partial", "failed"):
            return Outcome(state)
        for failed in st.failed.values():
            chunk = failed.chunk
            # A user's retry is interactive work: it takes the lane no book can block.
            out.retries.append(chunk.model_copy(update={"attempt": chunk.attempt + 1, "lane": "interactive"}))
        st.failed, st.finished, st.error = {}, False, None
        st.status = "generating"
        out.progress.append(snapshot(st, "progress"))
        return out
    else:
        return Outcome(state)
    _maybe_finish(st, out)
    return out


def coalesce_cards(events: list[DocumentProgress]) -> list[DocumentProgress]:
    """A batch's progress events with each document's successive card events merged into one.

    The merged event carries every new card, in order, and the later snapshot's counters, so a
    client sees the same cards and the same final numbers in fewer events. Each document's
    events keep their order.
    """
    out: list[DocumentProgress] = []
    latest: dict[str, int] = {}  # document id -> position in out of its latest event
    for ev in events:
        at = latest.get(ev.document_id)
        if at is not None:
            prev = out[at]
            if prev.kind == ev.kind == "card" and prev.generation == ev.generation:
                out[at] = ev.model_copy(update={"new_cards": [*prev.new_cards, *ev.new_cards]})
                continue
        latest[ev.document_id] = len(out)
        out.append(ev)
    return out


def stalled(st: DocumentState, now_ms: int, after_ms: int) -> DocumentUploaded | None:
    """What to send again for a document that has had no new fact for after_ms, else None.

    A message in flight can be lost when a worker stops (Faust may commit past it: bug #606).
    Then a document waits forever for a chunk nobody is working on. Extraction not finished:
    the whole upload again. Chunks missing: only those. Everything downstream is idempotent.
    Finished documents and those whose upload was never seen are left alone.
    """
    if st.finished or st.status in TERMINAL or st.upload is None or now_ms - st.updated_at < after_ms:
        return None
    again = {"event_id": uuid.uuid4().hex, "occurred_at": now_ms}
    if st.extraction is None or st.chunks_total < 0:
        return st.upload.model_copy(update=again)
    missing = [i for i in range(st.chunks_total) if i not in st.done and i not in st.failed]
    if not missing:
        return None
    return st.upload.model_copy(update={**again, "replay_chunks": missing})


def llm_notices(
    states: Iterable[DocumentState], told: set[str], unavailable: str | None
) -> list[DocumentProgress]:
    """What clients hear about the LLM. While it is unavailable (``unavailable`` says why), each
    unfinished document says once that it waits for it; once it is back, each document that
    said so says it moves again. ``told`` (the documents told to wait) is updated in place."""
    out: list[DocumentProgress] = []
    running = [st for st in states if not st.finished and st.status not in TERMINAL]
    if unavailable is not None:
        why = f"the LLM is unavailable ({unavailable}); the document goes on when it is back"
        for st in running:
            if st.document_id not in told:
                told.add(st.document_id)
                out.append(snapshot(st, "waiting", waiting=why))
    elif told:
        out += [snapshot(st, "progress") for st in running if st.document_id in told]
        told.clear()
    return out
