"""A chunk whose cards were all dropped is asked once more, naming why: what a user's deck and
ledger show, what the result cache keeps, and what a replay costs."""

from __future__ import annotations

from pathlib import Path

from services.cards import quality
from services.cards.cache import load_cached, retry_key
from services.cards.rules import NOT_SUPPORTED, REPEATS_QUESTION, why_empty
from services.documents.state import track
from services.errors import RetryableError
from services.events import topics
from services.events.models import CardsGenerated, ChunksPlanned, ExtractionEnded
from services.llm.client import Completion, Prompt
from tests.unit.test_card_writing import CHUNK, FakeLLM, cards_json, run
from tests.unit.test_cards_pipeline import card
from tests.unit.test_handlers import chunk_event, sent_to, writer

# Nothing in CHUNK (lists and tuples) supports these: grounding drops both.
MADE_UP = cards_json(
    ("Which planet has the Great Red Spot?", "Jupiter"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
)
GOOD = cards_json(("What does the append method do?", "Adds one item to the end of a list"))
REPEAT_Q, REPEAT_A = "What does the append method add to a list?", "The append method adds to a list."


def last_user(prompt: Prompt) -> str:
    return prompt.messages[-1].content


async def test_a_chunk_whose_cards_were_all_unsupported_is_asked_again_naming_why() -> None:
    llm = FakeLLM(MADE_UP, GOOD)
    result = await run(llm, prompt_version="v3", language="en", source_language="en", seed=11)
    assert [c.front for c in result.cards] == ["What does the append method do?"]
    assert len(llm.prompts) == 2
    first, again = llm.prompts
    # A different prompt, naming the reason and the count, with the chunk's text still in it.
    assert "rejected" not in last_user(first)
    assert f"all rejected: {NOT_SUPPORTED} (2)." in last_user(again)
    assert "every answer states a fact the text states" in last_user(again)
    assert f"<<<\n{CHUNK.text}\n>>>" in last_user(again)
    assert first.seed == 11 and again.seed not in (None, 11, 12)  # its own seed, not the next attempt's
    # The deck counts what both attempts dropped; the retry is recorded with its reasons.
    assert result.dropped == [
        (f, NOT_SUPPORTED) for f in ("Which planet has the Great Red Spot?", "Who painted the Mona Lisa?")
    ]
    assert result.retry is not None and result.retry.reasons == [f"{NOT_SUPPORTED} (2)"]
    assert result.retry.key == retry_key("cards-chat-v3", [f"{NOT_SUPPORTED} (2)"])
    assert result.attempts == 2


async def test_a_retry_names_every_reason_with_its_hint() -> None:
    mixed = cards_json(("Which planet has the Great Red Spot?", "Jupiter"), (REPEAT_Q, REPEAT_A))
    llm = FakeLLM(mixed, GOOD)
    await run(llm, prompt_version="v3", language="en")
    asked = last_user(llm.prompts[1])
    assert f"all rejected: {REPEATS_QUESTION}; {NOT_SUPPORTED}." in asked
    assert "says something its question does not already say" in asked
    assert "states a fact the text states" in asked


async def test_a_retry_that_gives_nothing_either_says_so_in_the_ledger_reason() -> None:
    llm = FakeLLM(MADE_UP, MADE_UP)
    result = await run(llm, prompt_version="v3", language="en")
    assert result.cards == [] and len(result.dropped) == 4
    assert why_empty(result) == (f"{NOT_SUPPORTED} (2); asked again naming why: {NOT_SUPPORTED} (2)")


async def test_an_unusable_retry_answer_keeps_the_first_outcome_and_says_why() -> None:
    llm = FakeLLM(MADE_UP, "not json", "still not json")
    result = await run(llm, prompt_version="v3", language="en", max_attempts=3)
    assert result.cards == [] and result.retry is not None and result.retry.answer is None
    assert why_empty(result) == (
        f"{NOT_SUPPORTED} (2); asked again naming why: the answer was unusable: invalid JSON: "
        "Expecting value: line 1 column 1 (char 0)"
    )


async def test_no_retry_when_a_card_was_kept_when_the_model_wrote_none_or_for_older_prompts() -> None:
    one_good = cards_json(
        ("Which planet has the Great Red Spot?", "Jupiter"),
        ("What does the append method do?", "Adds one item to the end of a list"),
    )
    kept = FakeLLM(one_good)
    assert len((await run(kept, prompt_version="v3", language="en")).cards) == 1 and len(kept.prompts) == 1
    none = FakeLLM('{"cards": []}')
    assert (await run(none, prompt_version="v3", language="en")).retry is None and len(none.prompts) == 1
    older = FakeLLM(MADE_UP)  # v1 has no retry prompt: its cards stay as they always were
    result = await run(older, prompt_version="v1")
    assert result.cards == [] and result.retry is None and len(older.prompts) == 1


async def test_the_base_model_retry_is_another_few_shot_prompt_naming_why() -> None:
    unsupported = " Which planet has the Great Red Spot?\nA: Jupiter"
    good = " What does the append method do?\nA: Adds one item to the end of a list."
    llm = FakeLLM(unsupported, good)
    result = await run(llm, profile="completion", prompt_version="v3", language="en")
    assert [c.back for c in result.cards] == ["Adds one item to the end of a list."]
    first, again = (p.text or "" for p in llm.prompts)
    assert again.startswith(
        f"Answers are short phrases from the text; earlier answers were rejected: {NOT_SUPPORTED}."
    )
    assert first.endswith(again.split("\n", 1)[1][-200:])  # the same examples and chunk after it


# ── through the worker: cache, replay, events, the deck ──────────────────────────────────────


async def test_the_worker_caches_the_retry_and_a_replay_asks_nothing(tmp_path: Path) -> None:
    text = CHUNK.segments[0].text
    made_up = cards_json(("Which planet has the Great Red Spot?", "Jupiter"))
    good = cards_json(("What does the append method do?", "Adds one item to the end of a list"))
    llm = FakeLLM(made_up, good)
    write = writer(tmp_path, llm)  # type: ignore[arg-type]
    event = chunk_event(segments=[CHUNK.segments[0]], filename="python.pdf")
    (made,) = sent_to(await write(event, priority=0, give_up=None), topics.CARDS)
    assert isinstance(made, CardsGenerated) and made.retried and made.language == "en"
    assert [c.back for c in made.cards] == ["Adds one item to the end of a list"]
    assert made.dropped_reasons == {NOT_SUPPORTED: 1} and made.prompt_version == "cards-chat-v3"
    assert "English" in llm.prompts[0].messages[0].content  # the chunk's language, named
    assert text in last_user(llm.prompts[1])

    # One cache entry holds both answers: a new generation reads them back without a call.
    job = write._job(event)
    entry = load_cached(write.blobs, job.key, document_id="d", generation=2, chunk_index=0, filename="f")
    assert entry is not None and entry.answer == Completion(made_up, "stop")
    assert list(entry.retries.values()) == [Completion(good, "stop")]
    again = sent_to(
        await write(event.model_copy(update={"generation": 2}), priority=0, give_up=None), topics.CARDS
    )
    assert len(llm.prompts) == 2 and isinstance(again[0], CardsGenerated)
    assert again[0].retried and [c.back for c in again[0].cards] == ["Adds one item to the end of a list"]
    assert again[0].attempts == 0


async def test_a_cached_answer_whose_cards_are_all_dropped_asks_only_the_retry(tmp_path: Path) -> None:
    made_up = cards_json(("Which planet has the Great Red Spot?", "Jupiter"))
    good = cards_json(("What does the append method do?", "Adds one item to the end of a list"))
    event = chunk_event(segments=[CHUNK.segments[0]], filename="python.pdf")
    first = FakeLLM(made_up, RetryableError("503"))
    write = writer(tmp_path, first)  # type: ignore[arg-type]
    emits = await write(event, priority=0, give_up=None)
    assert sent_to(emits, topics.CARDS) == [] and sent_to(
        emits, topics.CHUNKS_RETRY
    )  # the retry's call failed

    second = FakeLLM(good)  # the first answer came from the cache: only the retry is asked
    write = writer(tmp_path, second)  # type: ignore[arg-type]
    (made,) = sent_to(
        await write(event.model_copy(update={"attempt": 1}), priority=0, give_up=None), topics.CARDS
    )
    assert isinstance(made, CardsGenerated) and made.retried and len(second.prompts) == 1
    assert "all rejected" in last_user(second.prompts[0])


def test_the_deck_summary_counts_retried_chunks_and_the_document_language() -> None:
    ids = {"tenant_id": "t", "document_id": "doc", "generation": 1}
    state = None
    events = [
        ExtractionEnded(**ids, status="ok", pages_total=3),
        ChunksPlanned(**ids, chunks_total=3, pages_total=3),
    ]
    for i, (retried, cards, lang) in enumerate([(True, 1, "es"), (True, 0, "es"), (False, 1, "und")]):
        card_list = []
        if cards:
            card_list = [card(f"Q{i}?", chunk=i, cid=f"c{i}")]
        events.append(
            CardsGenerated(
                **ids, chunk_index=i, cards=card_list, dropped=2, attempts=2, model="m",
                prompt_version="cards-chat-v3", elapsed_ms=1, language=lang, retried=retried,
            )
        )  # fmt: skip
    for event in events:
        state = track(state, event).state
    assert state is not None
    assert quality.retried(state.retried) == {"retried_chunks": 2, "retried_chunks_with_cards": 1}
    assert quality.document_language(state.languages) == {"language": "es"}
