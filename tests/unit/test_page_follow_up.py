"""Pages of a chunk that no kept card cites are asked about again, with only their text: what a
user's deck, ledger and quality report show, what the cache keeps, and what a replay costs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.cards import quality
from services.cards.cache import load_cached, pages_key
from services.cards.rules import NOT_SUPPORTED
from services.cards.writing import FOLLOW_UP_FIRST, pages_without_cards
from services.documents.decks import load_deck, store_chunk_cards
from services.documents.ledger import store_ledger
from services.documents.state import AssembleDeck, DocumentState, track
from services.domain import Chunk, Segment, card_id
from services.errors import RetryableError
from services.events import topics
from services.events.models import CardsGenerated, ChunksPlanned, ExtractionEnded, PageInfo
from services.handlers.assemble import assemble_deck
from services.storage.blobs import LocalBlobStore
from tests.unit.test_card_writing import FakeLLM, cards_json, run
from tests.unit.test_handlers import chunk_event, sent_to, settings, writer

# Three slides of a lecture, each with enough text to deserve a card (300 characters or more).
LISTS = (
    "Lists. A Python list is an ordered, mutable collection of items written between square "
    "brackets. The append method adds one item to the end of a list, and the len function returns "
    "how many items it holds. Lists may hold items of different types, even other lists, and an "
    "index starting at zero reaches each item."
)
TUPLES = (
    "Tuples. A tuple is like a list but immutable: once created, its items cannot change. Tuples are "
    "written between parentheses and are often used as dictionary keys because they are hashable. "
    "A tuple assignment such as (x, y) = (4, 'fred') gives each variable on the left the value in "
    "the same place on the right."
)
DICTIONARIES = (
    "Dictionaries. A dictionary maps keys to values and finds a value by its key instead of by a "
    "position. The get method returns a default value when a key is missing, which avoids a "
    "KeyError in a counting loop. The items method returns the key and value pairs, which a for "
    "loop can walk through two variables at a time."
)
SLIDES = Chunk(
    index=2,
    segments=(
        Segment(4, "4", ("Collections",), LISTS),
        Segment(5, "5", ("Collections",), TUPLES),
        Segment(6, "6", ("Collections",), DICTIONARIES),
    ),
    tokens=200,
)
ABOUT_LISTS = cards_json(
    ("What does the append method do?", "Adds one item to the end of a list"),
    ("What does the len function return?", "How many items a list holds"),
)
ABOUT_TUPLES = cards_json(("Why are tuples used as dictionary keys?", "They are hashable"))
ABOUT_DICTIONARIES = cards_json(("What does the get method return for a missing key?", "A default value"))
NOTHING = '{"cards": []}'
MADE_UP = cards_json(
    ("Which planet has the Great Red Spot?", "Jupiter"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
)


def asked(prompt_text: str) -> str:
    return prompt_text.split("<<<\n", 1)[1].split("\n>>>", 1)[0]


async def test_each_page_no_card_cites_is_asked_about_again_with_only_its_text() -> None:
    llm = FakeLLM(ABOUT_LISTS, ABOUT_TUPLES, ABOUT_DICTIONARIES)
    result = await run(llm, chunk=SLIDES, prompt_version="v3", language="en", source_language="en", seed=3)
    assert len(llm.prompts) == 3  # slide 4 is covered: slides 5 and 6 are asked about, one by one
    tuples, dictionaries = (p.messages[-1].content for p in llm.prompts[1:])
    assert asked(tuples) == TUPLES and asked(dictionaries) == DICTIONARIES
    # The chunk's request, on the page alone: two cards a page, within the chunk's cap.
    assert tuples.startswith("Page 5 of the course text:") and "Write 2 flashcards" in tuples
    assert "append" not in tuples + dictionaries  # nothing of the covered slide
    seeds = [int(pages_key("cards-chat-v3", label)[:8], 16) % 2**31 for label in ("5", "6")]
    assert [p.seed for p in llm.prompts[1:]] == seeds
    # Every slide now has a card, each citing its own page; no card took another's id.
    assert [(c.page, c.front) for c in result.cards] == [
        (4, "What does the append method do?"),
        (4, "What does the len function return?"),
        (5, "Why are tuples used as dictionary keys?"),
        (6, "What does the get method return for a missing key?"),
    ]
    ids = [card_id("doc-1", 2, 2, i) for i in (0, 1, FOLLOW_UP_FIRST, 2 * FOLLOW_UP_FIRST)]
    assert [c.card_id for c in result.cards] == ids
    assert result.pages is not None and result.pages.pages == ["5", "6"] and result.pages.uncovered == {}
    assert result.attempts == 3


async def test_a_page_still_without_a_card_says_why() -> None:
    llm = FakeLLM(ABOUT_LISTS, MADE_UP, NOTHING)
    result = await run(llm, chunk=SLIDES, prompt_version="v3", language="en")
    assert {c.page for c in result.cards} == {4}
    assert result.pages is not None
    assert result.pages.uncovered == {
        "5": f"asked again with only its text: {NOT_SUPPORTED} (2)",
        "6": "asked again with only its text: the model found nothing in the text worth a card",
    }
    assert result.dropped[-3:] == [
        ("Which planet has the Great Red Spot?", NOT_SUPPORTED),
        ("Who painted the Mona Lisa?", NOT_SUPPORTED),
        ("", "the model found nothing in the text worth a card"),
    ]
    unusable = FakeLLM(ABOUT_LISTS, ABOUT_TUPLES, "not json", "still not json")
    partly = await run(unusable, chunk=SLIDES, prompt_version="v3", language="en", max_attempts=3)
    assert partly.pages is not None and {c.page for c in partly.cards} == {4, 5}
    assert partly.pages.uncovered == {
        "6": "asked again with only its text: the answer was unusable: invalid JSON: "
        "Expecting value: line 1 column 1 (char 0)"
    }


async def test_no_follow_up_for_a_chunk_without_cards_a_short_page_or_when_turned_off() -> None:
    nothing = FakeLLM(NOTHING)  # a title slide: the model found nothing worth a card
    assert (await run(nothing, chunk=SLIDES, prompt_version="v3", language="en")).pages is None
    assert len(nothing.prompts) == 1
    # A page with less than 300 characters in this chunk (the previous chunk's overlap) is not asked.
    tail = Segment(3, "3", ("Intro",), "The previous slide ended with this sentence about lists.")
    overlapped = Chunk(index=2, segments=(tail, *SLIDES.segments[:1]), tokens=80)
    assert pages_without_cards(overlapped, []) == {4: "4"}
    # A page cut at the chunk's end counts from half that: its rest is in the next chunk.
    cut = Segment(7, "7", ("Collections",), DICTIONARIES[:200])
    middle = Segment(5, "5", ("Collections",), TUPLES[:200])
    ends_cut = Chunk(index=2, segments=(SLIDES.segments[0], middle, cut), tokens=150)
    assert pages_without_cards(ends_cut, []) == {4: "4", 7: "7"}
    short = FakeLLM(ABOUT_LISTS)
    assert (await run(short, chunk=overlapped, prompt_version="v3", language="en")).pages is None
    off = FakeLLM(ABOUT_LISTS)
    result = await run(off, chunk=SLIDES, prompt_version="v3", language="en", cover_pages=False)
    assert len(off.prompts) == 1 and result.pages is not None
    assert result.pages.uncovered == dict.fromkeys(["5", "6"], "its chunk's cards cite other pages")
    older = FakeLLM(ABOUT_LISTS)  # v1 has no pages prompt: as it always was
    assert len((await run(older, chunk=SLIDES, prompt_version="v1")).cards) == 2
    assert len(older.prompts) == 1


async def test_the_base_model_is_asked_again_on_each_pages_text_alone() -> None:
    first = " What does the append method do?\nA: Adds one item to the end of a list."
    more = " Why are tuples used as dictionary keys?\nA: They are hashable."
    last = " What does the get method return for a missing key?\nA: A default value."
    llm = FakeLLM(first, more, last)
    result = await run(llm, profile="completion", chunk=SLIDES, prompt_version="v3", language="en")
    tuples, dictionaries = (p.text or "" for p in llm.prompts[1:])
    assert tuples.endswith(f"Text: {' '.join(TUPLES.split())}\nQ:")
    assert dictionaries.endswith(f"Text: {' '.join(DICTIONARIES.split())}\nQ:")
    assert [c.page for c in result.cards] == [4, 5, 6]


# ── through the worker: events, cache, replay, the deck ──────────────────────────────────────


async def test_the_worker_announces_the_follow_up_caches_it_and_a_replay_asks_nothing(tmp_path: Path) -> None:
    llm = FakeLLM(ABOUT_LISTS, ABOUT_TUPLES, ABOUT_DICTIONARIES)
    write = writer(tmp_path, llm)  # type: ignore[arg-type]
    event = chunk_event(segments=list(SLIDES.segments), chunk_index=2, filename="lecture.pptx")
    (made,) = sent_to(await write(event, priority=0, give_up=None), topics.CARDS)
    assert isinstance(made, CardsGenerated) and made.pages_asked_again == ["5", "6"]
    assert made.pages_without_cards == {} and [c.page for c in made.cards] == [4, 4, 5, 6]
    key = write._job(event).key
    entry = load_cached(write.blobs, key, document_id="d", generation=1, chunk_index=2, filename="f")
    assert entry is not None
    assert sorted(entry.retries) == sorted(pages_key("cards-chat-v3", label) for label in ("5", "6"))

    replay = event.model_copy(update={"generation": 2})
    again = sent_to(await write(replay, priority=0, give_up=None), topics.CARDS)
    assert len(llm.prompts) == 3 and isinstance(again[0], CardsGenerated) and again[0].attempts == 0
    assert [c.front for c in again[0].cards] == [c.front for c in made.cards]


async def test_a_follow_up_whose_call_failed_is_the_only_call_made_next_time(tmp_path: Path) -> None:
    event = chunk_event(segments=list(SLIDES.segments), chunk_index=2, filename="lecture.pptx")
    down = FakeLLM(ABOUT_LISTS, ABOUT_TUPLES, RetryableError("503"))
    emits = await writer(tmp_path, down)(event, priority=0, give_up=None)  # type: ignore[arg-type]
    assert sent_to(emits, topics.CARDS) == [] and sent_to(emits, topics.CHUNKS_RETRY)
    back = FakeLLM(ABOUT_DICTIONARIES)  # the first answer and slide 5's are cached: slide 6 is asked
    write = writer(tmp_path, back)  # type: ignore[arg-type]
    retry = event.model_copy(update={"attempt": 1})
    (made,) = sent_to(await write(retry, priority=0, give_up=None), topics.CARDS)
    assert len(back.prompts) == 1 and asked(back.prompts[0].messages[-1].content) == DICTIONARIES
    assert isinstance(made, CardsGenerated) and [c.page for c in made.cards] == [4, 4, 5, 6]


async def test_turning_the_follow_up_off_costs_no_call(tmp_path: Path) -> None:
    llm = FakeLLM(ABOUT_LISTS)
    write = writer(tmp_path, llm)  # type: ignore[arg-type]
    write.cards_cfg = settings(tmp_path, cards={"cover_pages": False}).cards
    event = chunk_event(segments=list(SLIDES.segments), chunk_index=2, filename="lecture.pptx")
    (made,) = sent_to(await write(event, priority=0, give_up=None), topics.CARDS)
    assert isinstance(made, CardsGenerated) and len(llm.prompts) == 1 and made.pages_asked_again == []
    assert made.pages_without_cards == dict.fromkeys(["5", "6"], "its chunk's cards cite other pages")


async def test_the_deck_says_why_each_page_without_a_card_has_none(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    ids = {"tenant_id": "t", "document_id": "doc", "generation": 1}
    store_ledger(
        blobs,
        "doc",
        1,
        [
            PageInfo(number=n, label=str(n), section=[], method="text", chars=900, tokens=200)
            for n in range(1, 8)
        ],
    )
    llm = FakeLLM(ABOUT_LISTS, ABOUT_TUPLES, NOTHING)
    chunk = await run(llm, chunk=SLIDES, prompt_version="v3", language="en")
    store_chunk_cards(blobs, "doc", 1, 2, chunk.cards)
    # Slide 7 repeats slide 4 (an animation build): its card asks the same, and the deck keeps one.
    repeat = dataclasses.replace(chunk.cards[0], card_id="r", page=7, page_label="7", chunk_index=3)
    store_chunk_cards(blobs, "doc", 1, 3, [repeat])
    assert chunk.pages is not None
    made = [
        CardsGenerated(
            **ids, chunk_index=2, cards=chunk.cards, dropped=0, attempts=2, model="m",
            prompt_version="cards-chat-v3", elapsed_ms=1, pages=["4", "5", "6"],
            pages_asked_again=chunk.pages.pages, pages_without_cards=chunk.pages.uncovered,
        ),
        CardsGenerated(
            **ids, chunk_index=1, cards=[], dropped=0, attempts=1, model="m", prompt_version="cards-chat-v3",
            elapsed_ms=1, pages=["2", "3"], empty_reason="the model found nothing in the text worth a card",
        ),
    ]  # fmt: skip
    state = None
    for event in [ExtractionEnded(**ids, status="ok", pages_total=7), *made]:
        state = track(state, event).state
    state = track(state, ChunksPlanned(**ids, chunks_total=3, pages_total=7)).state
    assert isinstance(state, DocumentState)
    deck = AssembleDeck(
        status="completed", failures=[], empty=list(state.empty.values()), dropped=0, dropped_by_reason={}
    )
    stored = load_deck(blobs, (await assemble_deck(blobs, state, deck)).deck_uri)
    got = stored.summary["quality"]
    assert got["pages_without_cards"] == ["1", "2", "3", "6", "7"]
    assert got["pages_without_cards_why"] == {
        "1": quality.UNEXPLAINED,
        "2": "its chunk gave no card: the model found nothing in the text worth a card",
        "3": "its chunk gave no card: the model found nothing in the text worth a card",
        "6": "asked again with only its text: the model found nothing in the text worth a card",
        "7": quality.REPEATED,
    }
    assert got["pages_asked_again"] == 2 and got["pages_asked_again_with_cards"] == 1


def test_a_failed_chunks_pages_say_the_user_can_retry_it() -> None:
    why = quality.page_reasons([(["3"], "the model found nothing")], [(["3", "4"], "LLM timed out")], [])
    assert why == {
        "3": "its chunk failed: LLM timed out; retry the failed chunks",
        "4": "its chunk failed: LLM timed out; retry the failed chunks",
    }


async def test_the_worker_keeps_each_profiles_own_token_cap_unless_one_is_set(tmp_path: Path) -> None:
    """A base model repeats its short list until the cap stops it: the few-shot profile's 160
    tokens, not the chat profile's 768, unless DECKSTREAM_LLM_MAX_TOKENS says otherwise."""
    answer = " What does the append method do?\nA: Adds one item to the end of a list."
    for over, expected in (({}, (160, 0.1)), ({"max_tokens": 300, "temperature": 0.0}, (300, 0.0))):
        llm = FakeLLM(answer, answer)
        write = writer(tmp_path / str(expected), llm, **over)  # type: ignore[arg-type]
        write.llm.profile = "completion"  # what open() detects for a base model
        await write(chunk_event(), priority=0, give_up=None)
        assert (llm.prompts[0].max_tokens, llm.prompts[0].temperature) == expected
    chat = FakeLLM(ABOUT_LISTS)
    await writer(tmp_path / "chat", chat)(chunk_event(), priority=0, give_up=None)  # type: ignore[arg-type]
    assert (chat.prompts[0].max_tokens, chat.prompts[0].temperature) == (768, 0.2)
