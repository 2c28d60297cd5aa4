"""Cards from one chunk: prompts, parsing, validation, grounding, citations and retries."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.cards.prompting import render_prompt
from services.cards.rules import (
    NOT_SUPPORTED,
    POINTS_AT_SOURCE,
    REPEATS_QUESTION,
    WEAK_SUPPORT_KIND,
    ChunkCards,
    answer_only,
    key_terms,
    leans_on_source,
    review_kinds,
)
from services.cards.writing import write_cards
from services.domain import Chunk, Segment, card_id, count_reasons
from services.errors import BadModelOutput, PermanentError, RetryableError
from services.llm.client import Completion, Profile, Prompt

PAGE_12 = (
    "A Python list is an ordered, mutable collection of items. The append method adds one item "
    "to the end of a list, and len returns how many items it holds."
)
PAGE_13 = (
    "A tuple is like a list but immutable: once created, its items cannot change. Tuples are "
    "often used as dictionary keys because they are hashable."
)
CHUNK = Chunk(
    index=5,
    segments=(
        Segment(12, "12", ("Data structures", "Lists"), PAGE_12),
        Segment(13, "13", ("Data structures", "Tuples"), PAGE_13),
    ),
    tokens=90,
)


class FakeLLM:
    """Answers from a script: a Completion, a text (chat JSON or Q/A), or an exception."""

    def __init__(self, *script: Completion | str | Exception) -> None:
        self.script = list(script)
        self.prompts: list[Prompt] = []

    async def generate(self, prompt: Prompt) -> Completion:
        self.prompts.append(prompt)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return Completion(step, "stop") if isinstance(step, str) else step

    async def aclose(self) -> None:
        pass


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def cards_json(*cards: tuple[str, str] | tuple[str, str, str]) -> str:
    items = [{"type": c[2] if len(c) > 2 else "basic", "front": c[0], "back": c[1]} for c in cards]
    return json.dumps({"cards": items})


GOOD = cards_json(
    ("What does the append method do?", "Adds one item to the end of a list"),
    ("Why are tuples used as dictionary keys?", "They are hashable"),
)


async def run(
    llm: FakeLLM,
    *,
    profile: Profile = "chat",
    chunk: Chunk = CHUNK,
    card_types: Sequence[str] = ("basic",),
    sleep: Sleeps | None = None,
    **kwargs: Any,
) -> ChunkCards:
    return await write_cards(
        chunk,
        llm=llm,
        profile=profile,
        document_id="doc-1",
        generation=2,
        filename="python.pdf",
        card_types=card_types,
        per_chunk=4,
        sleep=sleep if sleep is not None else Sleeps(),
        rng=random.Random(1),
        **kwargs,
    )


def test_chat_prompt_marks_the_text_and_constrains_the_shape() -> None:
    rendered = render_prompt(CHUNK, profile="chat", card_types=("basic", "cloze"), per_chunk=4)
    system, user = (m.content for m in rendered.prompt.messages)
    assert rendered.version == "cards-chat-v1"
    assert f"<<<\n{CHUNK.text}\n>>>" in user and "Pages 12–13" in user and "4 flashcards" in user
    assert "{{c1::" in system and "Glucose" not in system + user  # placeholders, no example card
    card = rendered.prompt.schema["properties"]["cards"]["items"]  # type: ignore[index]
    assert card["properties"]["front"]["minLength"] == 10
    assert card["properties"]["type"]["enum"] == ["basic", "cloze"]
    assert "maxLength" not in json.dumps(rendered.prompt.schema)


def test_fewshot_prompt_continues_after_q() -> None:
    rendered = render_prompt(CHUNK, profile="completion")
    text = rendered.prompt.text or ""
    assert rendered.version == "cards-fewshot-v1"
    assert text.endswith(f"Text: {' '.join(CHUNK.text.split())}\nQ:")
    assert rendered.prompt.stop == ("\nText:", "\n\n") and rendered.prompt.max_tokens == 160
    with pytest.raises(PermanentError):
        render_prompt(CHUNK, profile="completion", card_types=("cloze",))


async def test_chat_json_becomes_cited_cards() -> None:
    result = await run(FakeLLM(f"```json\n{GOOD}\n```"))
    assert [c.front for c in result.cards] == [
        "What does the append method do?",
        "Why are tuples used as dictionary keys?",
    ]
    first, second = result.cards
    assert (first.page, first.page_label, first.section) == (12, "12", ("Data structures", "Lists"))
    assert (second.page, second.section) == (13, ("Data structures", "Tuples"))
    assert all(c.prompt_version == "cards-chat-v1" and c.file == "python.pdf" for c in result.cards)
    assert all(c.chunk_index == 5 and c.support == 1.0 and not c.needs_review for c in result.cards)
    assert result.attempts == 1 and result.dropped == []


async def test_qa_pairs_are_parsed_and_repeats_dropped() -> None:
    pair = " What does the append method do?\nA: Adds one item to the end of a list.\n"
    text = pair + "Q:" + pair + "Q: What does len return?\nA: How many items a list ho"
    result = await run(FakeLLM(Completion(text, "length")), profile="completion")
    assert [(c.front, c.back) for c in result.cards] == [
        ("What does the append method do?", "Adds one item to the end of a list.")
    ]  # the repeat is gone, and so is the pair cut at the token limit
    assert result.cards[0].prompt_version == "cards-fewshot-v1"


async def test_a_cut_answer_keeps_its_complete_sentences() -> None:
    text = " What do we know about tuples?\nA: A tuple is like a list but immutable. Tuples are often used as dicti"
    result = await run(FakeLLM(Completion(text, "length")), profile="completion")
    assert [c.back for c in result.cards] == ["A tuple is like a list but immutable."]


async def test_invalid_cards_are_dropped_with_reasons() -> None:
    answer = cards_json(
        ("What does the append method do?", ""),
        ("Append?", "Adds an item"),
        ("What are the parts of a list?", "The three parts of a list are:"),
        ("What does the append method do?", "Adds one item to the end"),
        ("what does the APPEND method do", "It adds an item"),
        ("A tuple is {{c1:immutable}} once created.", "immutable", "cloze"),
        ("A tuple is {{c1::immutable}}: its items cannot change.", "", "cloze"),
        ("Tuples are {{c1::hashable}} so they can be keys.", "hashable", "basic"),
    )
    result = await run(FakeLLM(answer), card_types=("basic", "cloze"))
    assert [c.front for c in result.cards] == [
        "What does the append method do?",
        "A tuple is {{c1::immutable}}: its items cannot change.",
    ]
    assert result.cards[1].type == "cloze" and result.cards[1].back == "immutable"
    assert [reason for _, reason in result.dropped] == [
        "empty front or back",
        "front shorter than 10 characters",
        "answer cut short",
        "duplicate card",
        "invalid cloze syntax",
        "cloze syntax on a basic card",
    ]


async def test_an_answer_is_the_answer_alone_not_the_question_again() -> None:
    answer = cards_json(
        ("What is a tuple?", "A tuple is an immutable list."),
        ("What are tuples often used as?", "Tuples are often used as dictionary keys"),
        (
            "What is the difference between a list and a tuple?",
            "A list is a mutable collection, a tuple not.",
        ),
        ("What is one use of a hashable tuple?", "A tuple is a dictionary key."),
        ("What does the append method add to a list?", "The append method adds to a list."),
        ("Are tuples immutable?", "Tuples are immutable."),
        ("Which is immutable, a list or a tuple?", "A tuple"),
    )
    result = await run(FakeLLM(answer))
    assert [(c.front, c.back) for c in result.cards] == [
        ("What is a tuple?", "an immutable list."),
        # What is left would not stand alone, or answers for two subjects: the whole answer.
        ("What are tuples often used as?", "Tuples are often used as dictionary keys"),
        (
            "What is the difference between a list and a tuple?",
            "A list is a mutable collection, a tuple not.",
        ),
        ("What is one use of a hashable tuple?", "A tuple is a dictionary key."),  # not a restatement
        ("Are tuples immutable?", "Tuples are immutable."),  # yes or no: the whole answer
        ("Which is immutable, a list or a tuple?", "A tuple"),  # a choice: from the question
    ]
    assert result.dropped == [("What does the append method add to a list?", REPEATS_QUESTION)]
    assert not any(c.needs_review for c in result.cards)


SLIDES = Chunk(
    index=3,
    segments=(
        Segment(
            4,
            "Slide 4",
            ("Tuples",),
            ">>> y = (1, 9, 2)\n>>> print(max(y))\n9\n>>> (a, b) = (99, 98)\n>>> print(a)\n99\n"
            "The built-in function sorted takes a sequence and returns a sorted list.\n"
            "l.reverse() works on a list; a tuple has no attribute 'reverse'.",
        ),
    ),
    tokens=60,
)


async def test_an_answer_that_picks_or_denies_what_the_question_names_is_not_a_repeat() -> None:
    # Qwen 2.5 1.5B on the py4e tuples slides: each answer names one thing of several in its
    # question, or denies; only the last says the question again.
    answer = cards_json(
        (
            "What is the maximum value in the tuple (1, 9, 2)?",
            "The maximum value in the tuple (1, 9, 2) is 9.",
        ),
        ("What is the value of `a` after the code `(a, b) = (99, 98)`?", "99"),
        ("What is the built-in function that returns a sorted list?", "sorted"),
        ("How do a tuple and a list differ on reverse()?", "A tuple does not have reverse(), a list does."),
        ("What does the sorted function take?", "The sorted function takes a sequence."),
        ("What does sorted return from a sequence?", "Sorted returns a sequence."),
    )
    result = await run(FakeLLM(answer), chunk=SLIDES)
    assert [(c.front, c.back) for c in result.cards] == [
        ("What is the maximum value in the tuple (1, 9, 2)?", "9."),
        ("What is the value of `a` after the code `(a, b) = (99, 98)`?", "99"),
        ("What is the built-in function that returns a sorted list?", "sorted"),
        ("How do a tuple and a list differ on reverse()?", "A tuple does not have reverse(), a list does."),
        ("What does the sorted function take?", "The sorted function takes a sequence."),  # adds "sequence"
    ]
    assert result.dropped == [("What does sorted return from a sequence?", REPEATS_QUESTION)]


async def test_a_question_that_points_at_its_text_is_kept_for_review() -> None:
    answer = cards_json(
        ("What does the text say about tuples?", "They are hashable"),
        ("What is the main point of the passage provided?", "Tuples are immutable"),
        ("What does the following statement say about lists?", "They are mutable"),
        ("What does the append method do?", "Adds one item to the end of a list"),
        ("What changes in the text of a tuple once it is created?", "Its items cannot change"),
    )
    result = await run(FakeLLM(answer))
    assert [(c.needs_review, c.review, c.support) for c in result.cards] == [
        (True, POINTS_AT_SOURCE, 1.0),
        (True, POINTS_AT_SOURCE, 1.0),
        (True, POINTS_AT_SOURCE, 1.0),
        (False, None, 1.0),
        (False, None, 1.0),  # "the text of" names a text: it asks about something
    ]


@pytest.mark.parametrize(
    ("front", "leans"),
    [
        ("What is the main argument presented in the text?", True),
        ("What does the author argue about copyright?", True),
        ("What is the output of the Python code snippet provided?", True),
        ("What is the type of the variable `y` in the code snippet?", True),
        ("According to the passage, why do tuples exist?", True),
        ("What does the following statement print?", True),
        # Qwen 2.5 on the last slides of a deck
        ("What is the main concept discussed in these slides?", True),
        ("What is the purpose of the copyright notice on these slides?", True),
        ("Who is the main author of these slides?", True),
        ("What is this chapter about?", True),
        ("What are the two main sorting methods discussed in this section?", True),
        # These name a thing called text, author or snippet: they ask about it.
        ("What is a text editor used for?", False),
        ("What does the text of the First Amendment protect?", False),
        ("Who is the author of Free Culture?", False),
        ("What is a code snippet?", False),
        ("Where do you type in the text box?", False),
        ("What is in the text file that open() reads?", False),
        ("What is a slide rule?", False),
        ("What is the purpose of the Student Accommodations section?", False),
        ("What does MongoDB store in the document store?", False),
        ("What is the title of chapter 3 of Free Culture?", False),
    ],
)
def test_a_question_points_at_its_source_only_when_it_needs_it_to_make_sense(front: str, leans: bool) -> None:
    assert leans_on_source(front) is leans


async def test_long_answers_are_trimmed() -> None:
    long_back = " ".join(["a list holds items"] * 20)
    result = await run(FakeLLM(cards_json(("What does a Python list hold?", long_back))))
    assert len(result.cards[0].back.split()) == 30 and result.cards[0].back.endswith("…")


async def test_long_answers_are_cut_at_a_sentence_end_when_one_is_near() -> None:
    first = "Lists hold items in order and can change after they are made."
    rest = "Tuples, e.g. Pairs, cannot change. " + " ".join(["A tuple holds items"] * 8)
    short = "Lists change. " + " ".join(["A list holds items, e.g. Numbers"] * 8)
    quoted = "Lists are mutable: items change in place. " + '"Tuples" ' + " ".join(["Are like lists"] * 10)
    answer = cards_json(
        ("What does a Python list hold?", f"{first} {rest}"),
        ("Can a Python list change?", short),
        ("Are Python lists mutable?", quoted),
    )
    backs = [c.back for c in (await run(FakeLLM(answer))).cards]
    # The last sentence that ends within 30 words; not after "e.g.", nor leaving two words.
    assert backs[0] == f"{first} Tuples, e.g. Pairs, cannot change."
    assert backs[1].endswith("…") and len(backs[1].split()) == 30
    assert backs[2] == "Lists are mutable: items change in place."  # the next one opens with a quote


async def test_a_card_the_text_does_not_support_is_dropped() -> None:
    answer = cards_json(
        ("What is the capital of France?", "Paris, on the Seine river"),
        ("How are lists and tuples different?", "Lists are mutable ordered sequences"),
        ("What does len return?", "How many items a list holds"),
    )
    result = await run(FakeLLM(answer))
    assert ("What is the capital of France?", NOT_SUPPORTED) in result.dropped
    assert [(c.front, c.needs_review) for c in result.cards] == [
        ("How are lists and tuples different?", True),  # "sequences" is not in the text
        ("What does len return?", False),
    ]
    assert 0.5 <= result.cards[0].support < 0.8
    assert result.cards[0].review == "only 75% of the answer's key terms occur in the source text"
    assert result.cards[1].review is None


async def test_cards_needing_review_are_counted_by_reason_without_their_figures() -> None:
    answer = cards_json(
        ("How are lists and tuples different?", "Lists are mutable ordered sequences"),  # 75%
        ("What does the text say about the differences of lists and tuples?", "Lists are mutable sequences"),
        ("What does len return?", "How many items a list holds"),
    )
    result = await run(FakeLLM(answer))
    kinds = [review_kinds(c) for c in result.cards]
    assert kinds == [[WEAK_SUPPORT_KIND], [WEAK_SUPPORT_KIND, POINTS_AT_SOURCE], []]
    assert "67%" in (result.cards[1].review or "")
    legacy = dataclasses.replace(result.cards[2], needs_review=True)  # flagged before reasons were kept
    assert review_kinds(legacy) == ["reason not recorded"]
    assert count_reasons(k for c in [*result.cards, legacy] for k in review_kinds(c)) == {
        WEAK_SUPPORT_KIND: 2,
        POINTS_AT_SOURCE: 1,
        "reason not recorded": 1,
    }


async def test_an_explicit_empty_answer_is_a_valid_result() -> None:
    result = await run(FakeLLM('{"cards": []}'))
    assert result.cards == [] and result.attempts == 1
    assert result.dropped == [("", "the model found nothing in the text worth a card")]


@pytest.mark.parametrize(
    "segments",
    [
        (Segment(1, "i", (), "  \n "),),
        (Segment(1, "i", (), "The — and of it."), Segment(2, "ii", (), "(a) … so, to!")),  # no content word
    ],
)
async def test_a_chunk_with_nothing_to_ask_about_costs_no_llm_call(segments: tuple[Segment, ...]) -> None:
    llm = FakeLLM()
    result = await run(llm, chunk=Chunk(0, segments, 9))
    assert result.cards == [] and llm.prompts == []
    assert result.dropped == [("", "the chunk has no text to ask about")]


async def test_card_ids_are_deterministic() -> None:
    first, again = await run(FakeLLM(GOOD)), await run(FakeLLM(GOOD))
    assert [c.card_id for c in first.cards] == [c.card_id for c in again.cards]
    assert [c.card_id for c in first.cards] == [card_id("doc-1", 2, 5, i) for i in range(2)]


async def test_retryable_errors_back_off_then_succeed() -> None:
    sleeps = Sleeps()
    llm = FakeLLM(RetryableError("503"), RetryableError("503"), GOOD)
    result = await run(llm, sleep=sleeps, backoff_base_s=1.0, backoff_cap_s=30.0)
    assert result.attempts == 3 and len(result.cards) == 2
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0  # full jitter


async def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    sleeps = Sleeps()
    llm = FakeLLM(RetryableError("429", retry_after=5.0), RetryableError("503", retry_after=120.0), GOOD)
    await run(llm, sleep=sleeps, backoff_base_s=0.1, backoff_cap_s=30.0)
    assert sleeps[0] >= 5.0 and sleeps[1] == 30.0


async def test_the_last_retryable_error_surfaces_after_max_attempts() -> None:
    last = RetryableError("still down", retry_after=1.0)
    llm = FakeLLM(RetryableError("down"), RetryableError("down"), last, GOOD)
    with pytest.raises(RetryableError) as caught:
        await run(llm, max_attempts=3)
    assert caught.value is last and len(llm.prompts) == 3


async def test_garbage_gets_one_repair_retry_then_fails() -> None:
    sleeps = Sleeps()
    llm = FakeLLM("not json", '{"cards": [{"front": "unterminated', GOOD)
    with pytest.raises(BadModelOutput, match="invalid JSON"):
        await run(llm, sleep=sleeps)
    assert len(llm.prompts) == 2 and sleeps == [0.0]
    assert llm.prompts[0] == llm.prompts[1]  # the same prompt again


async def test_valid_json_with_empty_content_is_bad_output() -> None:
    """What a base model says through chat + JSON schema: valid JSON, no cards in it."""
    empty = cards_json(("1", "2"), ("3", "4"))
    with pytest.raises(BadModelOutput, match="no valid cards: front shorter than 10 characters"):
        await run(FakeLLM(empty, empty))


async def test_a_repair_retry_can_succeed() -> None:
    result = await run(FakeLLM(Completion('{"cards": [{"fro', "length"), GOOD))
    assert result.attempts == 2 and len(result.cards) == 2
    assert result.answer == Completion(GOOD, "stop")  # the answer the cards came from: what is cached


async def test_each_attempt_samples_with_its_own_seed_the_same_on_every_run() -> None:
    first = FakeLLM(Completion('{"cards": [{"fro', "length"), GOOD)
    again = FakeLLM(Completion('{"cards": [{"fro', "length"), GOOD)
    await run(first, seed=2**31 - 1)
    await run(again, seed=2**31 - 1)
    assert [p.seed for p in first.prompts] == [p.seed for p in again.prompts] == [2**31 - 1, 0]
    unseeded = FakeLLM(GOOD)
    await run(unseeded)
    assert unseeded.prompts[0].seed is None  # the server's own sampling


async def test_no_qa_pairs_is_bad_output() -> None:
    with pytest.raises(BadModelOutput, match="no Q:/A: pairs"):
        await run(FakeLLM("I like turtles.", "I like turtles."), profile="completion")


WORDS = sorted(set((PAGE_12 + " " + PAGE_13).replace(",", "").replace(".", "").replace(":", "").split()))


@settings(max_examples=60, deadline=None)
@given(
    backs=st.lists(
        st.lists(st.sampled_from([*WORDS, "Paris", "quantum", "zebra"]), min_size=1, max_size=8),
        min_size=1,
        max_size=4,
    )
)
async def test_every_citation_lies_within_the_chunk(backs: list[list[str]]) -> None:
    answer = cards_json(*((f"Question number {i} about it?", " ".join(b)) for i, b in enumerate(backs)))
    result = await run(FakeLLM(answer))
    pages = {s.page: s for s in CHUNK.segments}
    for card in result.cards:
        assert card.page in pages
        assert (card.page_label, card.section) == (pages[card.page].label, pages[card.page].section)
        assert card.support >= 0.5
    assert len(result.cards) + len(result.dropped) == len(backs)


def test_why_a_chunk_gave_no_card_counts_the_reasons_most_common_first() -> None:
    from services.cards.rules import empty_reason

    dropped = [
        ("Q1", "not supported by the text"),
        ("Q2", "duplicate card"),
        ("Q3", "not supported by the text"),
    ]
    assert empty_reason(dropped) == "not supported by the text (2); duplicate card"
    assert empty_reason([]) == "the model returned no cards"


@settings(max_examples=200, deadline=None)
@given(
    question=st.lists(
        st.sampled_from(["What", "is", "are", "the", "tuple", "list", "or", "between"]), max_size=7
    ),
    answer=st.lists(
        st.sampled_from(["A", "the", "tuple", "is", "are", "list", "to", "keys", ",", "often"]), max_size=9
    ),
)
def test_an_answer_cut_down_is_never_empty_and_is_the_end_of_the_answer(
    question: list[str], answer: list[str]
) -> None:
    front, back = " ".join(question) + "?", " ".join(answer)
    kept = answer_only(front, back)
    assert kept == back or (back.endswith(kept) and key_terms(kept))
