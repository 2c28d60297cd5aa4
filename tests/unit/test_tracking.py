"""The document state machine: what clients see for every sequence of facts, redelivery included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.documents.state import DocumentState, Outcome, coalesce_cards, llm_notices, stalled, track
from services.domain import Card, Segment
from services.events.models import (
    CancelDocument,
    CardsGenerated,
    ChunkCreated,
    ChunkFailed,
    ChunksPlanned,
    DocumentUploaded,
    Event,
    ExtractionEnded,
    PageExtracted,
    RetryFailedChunks,
)

IDS = {"tenant_id": "t", "document_id": "d", "generation": 1}


def upload() -> DocumentUploaded:
    return DocumentUploaded(
        **IDS,
        filename="book.pdf",
        kind="pdf",
        size=10,
        sha256="s",
        blob_uri="blob://x",
        card_types=["basic"],
        cards_per_chunk=4,
    )


def page(n: int, total: int = 3) -> PageExtracted:
    return PageExtracted(
        **IDS,
        number=n,
        label=str(n),
        section=["Ch"],
        text="some text",
        method="text",
        tokens=2,
        pages_total=total,
    )


def chunk(i: int) -> ChunkCreated:
    return ChunkCreated(
        **IDS,
        chunk_index=i,
        segments=[Segment(1, "1", ("Ch",), "t")],
        tokens=1,
        content_hash="h",
        filename="book.pdf",
        card_types=["basic"],
        cards_per_chunk=4,
    )


def cards(i: int, n: int = 2) -> CardsGenerated:
    made = [
        Card(f"{i}-{k}", "basic", f"Question {i}.{k}?", "A", "book.pdf", 1, "1", ("Ch",), i, "v1")
        for k in range(n)
    ]
    return CardsGenerated(
        **IDS, chunk_index=i, cards=made, dropped=0, attempts=1, model="m", prompt_version="v1", elapsed_ms=5
    )


def failed(i: int) -> ChunkFailed:
    return ChunkFailed(
        **IDS, chunk_index=i, reason="LLM timed out", code="retryable", attempts=3, chunk=chunk(i)
    )


def run(
    events: list[Event], state: DocumentState | None = None
) -> tuple[DocumentState | None, list[Outcome]]:
    outs = []
    for ev in events:
        out = track(state, ev)
        state = out.state
        outs.append(out)
    return state, outs


def happy(chunks: int = 2) -> list[Event]:
    return [
        upload(),
        page(1),
        page(2),
        page(3),
        ExtractionEnded(**IDS, status="ok", pages_total=3),
        ChunksPlanned(**IDS, chunks_total=chunks, pages_total=3),
        *[cards(i) for i in range(chunks)],
    ]


def test_a_document_goes_from_queued_to_completed_with_absolute_counters() -> None:
    state, outs = run(happy())
    assert state is not None and state.status == "completed"
    progress = [p for o in outs for p in o.progress]
    assert [p.status for p in progress][:2] == ["queued", "extracting"]
    assert [p.kind for p in progress].count("page") == 3
    last = progress[-1]
    assert (
        last.kind,
        last.pages_done,
        last.pages_total,
        last.chunks_done,
        last.chunks_total,
        last.cards,
    ) == ("done", 3, 3, 2, 2, 4)
    assert [p.progress for p in progress] == sorted(p.progress for p in progress) and last.progress == 1.0
    assert sum(o.deck is not None for o in outs) == 1


def test_some_failed_chunks_end_partial_with_the_reasons() -> None:
    events = [*happy(3)[:-3], cards(0), failed(1), cards(2)]
    state, outs = run(events)
    assert state is not None and state.status == "partial"
    deck = next(o.deck for o in outs if o.deck)
    assert deck is not None and [(f.chunk_index, f.reason) for f in deck.failures] == [(1, "LLM timed out")]


def test_all_chunks_failed_ends_failed() -> None:
    state, _ = run([*happy(2)[:-2], failed(0), failed(1)])
    assert state is not None and state.status == "failed" and "every chunk failed" in (state.error or "")


def test_extraction_failure_ends_failed_with_its_reason() -> None:
    state, outs = run(
        [
            upload(),
            ExtractionEnded(**IDS, status="failed", pages_total=0, reason="password protected"),
            ChunksPlanned(**IDS, chunks_total=0, pages_total=0),
        ]
    )
    assert state is not None and (state.status, state.error) == ("failed", "password protected")
    assert outs[-1].progress[-1].kind == "done"


def test_a_document_without_text_fails_with_a_reason() -> None:
    state, _ = run(
        [
            upload(),
            page(1, 1),
            ExtractionEnded(**IDS, status="ok", pages_total=1),
            ChunksPlanned(**IDS, chunks_total=0, pages_total=1),
        ]
    )
    assert state is not None and state.status == "failed" and "no text" in (state.error or "")


def test_the_manifest_may_arrive_after_the_results() -> None:
    events = [
        upload(),
        page(1, 1),
        cards(0),
        cards(1),
        ExtractionEnded(**IDS, status="ok", pages_total=1),
        ChunksPlanned(**IDS, chunks_total=2, pages_total=1),
    ]
    state, _ = run(events)
    assert state is not None and state.status == "completed" and state.cards == 4


def test_cancel_keeps_cards_and_ignores_late_results() -> None:
    state, outs = run([*happy(3)[:-2], CancelDocument(**IDS), cards(1), failed(2)])
    assert state is not None and state.status == "cancelled"
    assert state.cards == 2  # only chunk 0 counted; late results ignored
    assert [o.deck.status for o in outs if o.deck] == ["cancelled"]


def test_retry_reemits_only_failed_chunks_then_completes() -> None:
    state, _ = run([*happy(3)[:-3], cards(0), failed(1), failed(2)])
    assert state is not None and state.status == "partial"
    out = track(state, RetryFailedChunks(**IDS))
    assert [c.chunk_index for c in out.retries] == [1, 2] and all(c.attempt == 1 for c in out.retries)
    assert {c.lane for c in out.retries} == {"interactive"}  # a user's retry never waits behind a book
    assert out.state is not None and out.state.status == "generating"
    state, outs = run([cards(1), cards(2)], out.state)
    assert state is not None and state.status == "completed" and state.cards == 6
    assert [o.deck.status for o in outs if o.deck] == ["completed"]


def test_retry_of_a_completed_document_does_nothing() -> None:
    state, _ = run(happy())
    assert track(state, RetryFailedChunks(**IDS)).retries == []


def test_events_of_another_generation_are_ignored() -> None:
    state, _ = run([upload()])
    other = page(1).model_copy(update={"generation": 2})
    assert track(state, other).state is state


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(happy(3)))), min_size=0, max_size=12), st.randoms())
def test_redelivery_and_reordering_never_change_the_outcome(dups: list[int], rnd: object) -> None:
    base = happy(3)
    events = list(base) + [base[i] for i in dups]
    tail = events[1:]
    rnd.shuffle(tail)  # type: ignore[attr-defined]
    state, outs = run([events[0], *tail])
    assert state is not None and state.status == "completed"
    assert state.cards == 6 and len(state.pages) == 3
    assert sum(o.deck is not None for o in outs) == 1, "a deck is assembled exactly once"


def test_an_upload_overtaken_by_other_facts_still_names_the_document() -> None:
    state, outs = run([page(1, 1), upload(), ExtractionEnded(**IDS, status="ok", pages_total=1)])
    assert state is not None and state.filename == "book.pdf" and state.pages == [1]
    assert outs[-1].progress[-1].filename == "book.pdf"


def test_tracking_never_changes_the_state_it_was_given() -> None:
    state, _ = run([upload(), page(1), ChunksPlanned(**IDS, chunks_total=3, pages_total=3), failed(0)])
    assert state is not None
    before = state.model_dump()
    for ev in (page(2), cards(1), failed(2), cards(0), RetryFailedChunks(**IDS), CancelDocument(**IDS)):
        track(state, ev)
    assert state.model_dump() == before


def test_a_batch_of_card_events_reaches_clients_as_one_event_per_run_with_every_card() -> None:
    _, outs = run(happy(chunks=3))
    progress = [p for o in outs for p in o.progress]
    merged = coalesce_cards(progress)
    kinds = [p.kind for p in merged]
    # the three chunks' card events became one; the page and done events are untouched
    assert kinds == ["progress", "page", "page", "page", "progress", "progress", "card", "done"]
    card = merged[kinds.index("card")]
    assert [c.card_id for c in card.new_cards] == [c.card_id for i in range(3) for c in cards(i).cards]
    assert card.chunks_done == 3 and card.cards == 6
    assert merged[-1] == progress[-1]


def test_card_events_of_two_documents_are_not_mixed() -> None:
    other = {**IDS, "document_id": "e"}
    a = track(None, cards(0)).progress[0]
    b = track(None, CardsGenerated(**{**cards(1).model_dump(), **other})).progress[0]
    c = track(None, cards(2)).progress[0]
    merged = coalesce_cards([a, b, c])
    assert [(p.document_id, len(p.new_cards)) for p in merged] == [("d", 4), ("e", 2)]


def at(ev: Event, ms: int) -> Event:
    return ev.model_copy(update={"occurred_at": ms})


def test_a_document_waiting_for_lost_chunks_gets_only_those_sent_again() -> None:
    events = [upload(), page(1), ExtractionEnded(**IDS, status="ok", pages_total=3)]
    events += [ChunksPlanned(**IDS, chunks_total=4, pages_total=3), cards(0), failed(2)]
    state, _ = run([at(e, 1_000 + i) for i, e in enumerate(events)])
    assert state is not None and state.updated_at == 1_005

    assert stalled(state, now_ms=60_000, after_ms=60_000) is None  # not quiet for long enough
    again = stalled(state, now_ms=61_005, after_ms=60_000)
    assert again is not None
    assert again.replay_chunks == [1, 3]  # neither done nor failed (a failure is the user's to retry)
    assert again.blob_uri == upload().blob_uri and again.event_id != state.upload.event_id  # type: ignore[union-attr]
    # The request passes the tracker (it reads documents.uploaded) without changing anything.
    assert track(state, again).state is state


def test_a_document_stalled_before_its_chunks_were_planned_is_split_again_whole() -> None:
    state, _ = run([at(upload(), 1_000), at(page(1), 2_000)])
    assert state is not None
    again = stalled(state, now_ms=100_000, after_ms=60_000)
    assert again is not None and again.replay_chunks == []


def test_finished_or_unknown_uploads_are_never_sent_again() -> None:
    done, _ = run(happy())
    assert done is not None and done.finished
    assert stalled(done, now_ms=10**13, after_ms=1) is None
    orphan, _ = run([cards(0)])  # facts without their upload: nothing to send
    assert orphan is not None and orphan.upload is None
    assert stalled(orphan, now_ms=10**13, after_ms=1) is None


def test_the_deck_counts_dropped_cards_by_reason_across_chunks() -> None:
    def dropping(i: int, dropped: int, reasons: dict[str, int]) -> CardsGenerated:
        return cards(i).model_copy(update={"dropped": dropped, "dropped_reasons": reasons})

    events = happy(chunks=3)
    events[-3:] = [
        dropping(0, 3, {"not supported by the text": 2, "duplicate card": 1}),
        dropping(1, 2, {}),  # written before the reasons were kept
        dropping(2, 2, {"not supported by the text": 2}),
    ]
    # A redelivered chunk and a state read back from its table change nothing.
    state, outs = run([*events[:-1], events[-3]])
    assert state is not None
    state = DocumentState.model_validate_json(state.model_dump_json())
    _, more = run([events[-1], events[-3]], state)
    deck = next(o.deck for o in [*outs, *more] if o.deck is not None)
    assert deck.dropped == 7
    assert list(deck.dropped_by_reason.items()) == [
        ("not supported by the text", 4),
        ("reason not recorded", 2),
        ("duplicate card", 1),
    ]


def test_chunks_without_cards_are_in_the_decks_ledger_with_the_reason_and_pages() -> None:
    nothing = CardsGenerated(
        **IDS,
        chunk_index=1,
        cards=[],
        dropped=3,
        attempts=1,
        model="m",
        prompt_version="v1",
        elapsed_ms=5,
        pages=["ii", "iii"],
        empty_reason="not supported by the text (3)",
    )
    events = happy(chunks=3)
    events[-2] = nothing  # chunk 1 gave nothing
    state, outs = run([*events, nothing])  # a redelivery changes nothing
    deck = next(o.deck for o in outs if o.deck is not None)
    assert deck.status == "completed" and deck.dropped == 3
    assert [e.model_dump() for e in deck.empty] == [
        {"chunk_index": 1, "pages": ["ii", "iii"], "reason": "not supported by the text (3)"}
    ]
    assert state is not None and state.cards == 4


def test_clients_hear_once_that_a_document_waits_for_the_llm_and_again_when_it_is_back() -> None:
    running, _ = run([upload(), page(1), ChunksPlanned(**IDS, chunks_total=4, pages_total=3), cards(0)])
    done, _ = run(happy())
    other = DocumentState(tenant_id="t", document_id="other", generation=1, status="cancelled")
    assert running is not None and done is not None
    told: set[str] = set()

    [notice] = llm_notices([running, done, other], told, "LLM answered HTTP 503")
    assert notice.kind == "waiting" and notice.document_id == "d"
    assert notice.waiting is not None and "unavailable (LLM answered HTTP 503)" in notice.waiting
    assert (notice.chunks_done, notice.chunks_total, notice.cards) == (1, 4, 2)  # counters stay
    assert llm_notices([running, done, other], told, "LLM answered HTTP 503") == []  # once

    [back] = llm_notices([running, done], told, None)
    assert back.kind == "progress" and back.waiting is None and back.document_id == "d"
    assert told == set() and llm_notices([running], told, None) == []


def test_a_document_that_finished_during_the_outage_hears_nothing_more() -> None:
    running, _ = run([upload(), ChunksPlanned(**IDS, chunks_total=2, pages_total=3)])
    assert running is not None
    told: set[str] = set()
    assert len(llm_notices([running], told, "timed out")) == 1
    finished, _ = run(
        [cards(0), cards(1), page(1), ExtractionEnded(**IDS, status="ok", pages_total=1)], running
    )
    assert finished is not None and finished.finished
    assert llm_notices([finished], told, None) == []
