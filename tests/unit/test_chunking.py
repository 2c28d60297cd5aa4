"""Chunking and clean-up properties: bounded, complete, ordered, dense, deterministic."""

from __future__ import annotations

import functools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.documents.chunking import _tail, _tail_start, chunk_pages
from services.domain import Page
from services.extraction.cleanup import (
    RepeatedEdgeFilter,
    edge_key,
    join_hyphenated,
    normalize_text,
)
from services.extraction.tokens import count_tokens, token_spans

WORD = st.one_of(
    st.sampled_from(
        ["cell", "ATP", "mitochondria", "énergie", "Zellkern", "photosynthesis", "DNA", "a", "42", "細胞"]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=60, max_size=400),  # longer than a small chunk
    st.sampled_from([",", "(see 3.2)", "—", "e.g.", "x²+y²", "f(x)=2x"]),
)
SENTENCE = st.builds(
    lambda words, end: " ".join(words) + end,
    st.lists(WORD, min_size=1, max_size=40),
    st.sampled_from([".", "?", "!", "", ":"]),
)
PARAGRAPH = st.builds(
    lambda sentences, sep: sep.join(sentences),
    st.lists(SENTENCE, min_size=1, max_size=8),
    st.sampled_from([" ", "\n"]),
)
PAGE_TEXT = st.one_of(
    st.just(""),
    st.just("   \n "),
    st.builds("\n\n".join, st.lists(PARAGRAPH, min_size=1, max_size=6)),
)
PAGES = st.lists(PAGE_TEXT, min_size=1, max_size=12).map(
    lambda texts: [
        Page(n, f"p{n}", (f"Section {n // 4}",), t, "text" if t.strip() else "skipped")
        for n, t in enumerate(texts, start=1)
    ]
)


def squash(text: str) -> str:
    return "".join(text.split())


FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(PAGES, st.integers(min_value=8, max_value=400), st.integers(min_value=0, max_value=120))
def test_chunks_are_bounded_dense_ordered_and_deterministic(
    pages: list[Page], max_tokens: int, overlap: int
) -> None:
    chunks = chunk_pages(pages, max_tokens, overlap)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(0 < c.tokens <= max_tokens and c.tokens == count_tokens(c.text) for c in chunks)
    for chunk in chunks:
        pages_in = [s.page for s in chunk.segments]
        assert pages_in == sorted(set(pages_in)), "one segment per page part, in reading order"
    assert [c.pages for c in chunks] == sorted(c.pages for c in chunks), "chunks come out in reading order"
    assert all(s.text.strip() for c in chunks for s in c.segments)
    assert {s.page for c in chunks for s in c.segments} == {p.number for p in pages if p.text.strip()}
    assert chunk_pages(pages, max_tokens, overlap) == chunks


@FAST
@given(PAGES, st.integers(min_value=8, max_value=400))
def test_without_overlap_every_page_is_in_the_chunks_exactly_once(pages: list[Page], max_tokens: int) -> None:
    chunks = chunk_pages(pages, max_tokens, 0)
    for page in pages:
        cited = "".join(s.text for c in chunks for s in c.segments if s.page == page.number)
        assert squash(cited) == squash(page.text)
        assert all(
            s.label == page.label and s.section == page.section
            for c in chunks
            for s in c.segments
            if s.page == page.number
        )


def _unique_words(pages: list[Page]) -> list[Page]:
    """Number every word so a chunk's position in the page stream is unambiguous."""
    counter = iter(range(10**9))
    return [
        Page(
            p.number,
            p.label,
            p.section,
            re.sub(r"\S+", lambda m: f"{m.group()}{next(counter)}", p.text),
            p.method,
        )
        for p in pages
    ]


def _explains(stream: str, chunks: list[str], budget: int) -> bool:
    """Can the chunks be laid over the page stream, each starting with at most ``budget`` tokens
    repeated from the end of the previous one, covering every character, in order?"""

    @functools.cache
    def fits(n: int, position: int) -> bool:
        if n == len(chunks):
            return position == len(stream)
        text = chunks[n]
        for carried in range(0, min(position, len(text) - 1) + 1 if n else 1):
            start = position - carried
            placed = stream[start : start + len(text)] == text
            if placed and count_tokens(stream[start:position]) <= budget and fits(n + 1, start + len(text)):
                return True
        return False

    return fits(0, 0)


@FAST
@given(
    PAGES.map(_unique_words),
    st.integers(min_value=16, max_value=400),
    st.integers(min_value=1, max_value=120),
)
def test_overlap_repeats_at_most_overlap_tokens_and_loses_nothing(
    pages: list[Page], max_tokens: int, overlap: int
) -> None:
    stream = "".join(squash(p.text) for p in pages)
    chunks = [squash(c.text) for c in chunk_pages(pages, max_tokens, overlap)]
    assert _explains(stream, chunks, min(overlap, max_tokens // 2))


def test_tiny_slides_merge_into_one_chunk() -> None:
    slides = [Page(n, f"Slide {n}", (f"Topic {n}",), f"Topic {n}\n- fact {n}", "text") for n in range(1, 11)]
    [chunk] = chunk_pages(slides, 350, 40)
    assert [s.label for s in chunk.segments] == [f"Slide {n}" for n in range(1, 11)]
    assert chunk.pages == (1, 10)


def test_paragraphs_stay_whole_when_they_fit() -> None:
    para = " ".join(["Enzymes speed up reactions."] * 10)  # 50 tokens
    page = Page(1, "1", (), "\n\n".join([para] * 6), "text")
    chunks = chunk_pages([page], 120, 0)
    assert all(squash(seg.text) in {squash(para), squash(para + para)} for c in chunks for seg in c.segments)


def test_overlap_carries_whole_sentences_into_the_next_chunk() -> None:
    sentences = [f"Fact number {n} about osmosis." for n in range(40)]
    page = Page(7, "vii", ("Water",), " ".join(sentences), "text")
    first, second, *_ = chunk_pages([page], 60, 15)
    assert first.text.endswith("Fact number 5 about osmosis.")  # 9 tokens a sentence: one fits in 15
    assert second.text.startswith("Fact number 5 about osmosis. Fact number 6 about osmosis.")
    assert (second.segments[0].page, second.segments[0].label) == (7, "vii")


def test_an_overlong_sentence_is_hard_split() -> None:
    page = Page(1, "1", (), " ".join(["glycolysis"] * 2000), "text")
    chunks = chunk_pages([page], 50, 10)
    assert len(chunks) > 10 and all(c.tokens <= 50 for c in chunks)


def test_pages_without_text_are_skipped() -> None:
    pages = [Page(1, "1", (), "", "skipped", "blank page"), Page(2, "2", (), "Cells.", "text")]
    [chunk] = chunk_pages(pages, 100, 10)
    assert [s.page for s in chunk.segments] == [2]


LINE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@FAST
@given(st.lists(LINE, max_size=20).map("\n".join))
def test_normalize_text_is_idempotent_and_keeps_every_visible_character(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    invisible = re.compile("[\x00-\x1f\x7f\u00ad\u200b\u2060\ufeff\ufffd\\s]")
    ligatures = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
    expected = invisible.sub("", "".join(ligatures.get(c, c) for c in text))
    assert invisible.sub("", once) == expected


@FAST
@given(st.lists(st.text(alphabet="abcXYZ -", max_size=20), max_size=12).map("\n".join))
def test_join_hyphenated_only_removes_line_end_hyphens(text: str) -> None:
    joined = join_hyphenated(text)
    removed = text.count("-") - joined.count("-")
    assert 0 <= removed <= text.count("\n")
    assert squash(joined.replace("-", "")) == squash(text.replace("-", ""))
    assert joined.count("\n") <= text.count("\n")


def test_join_hyphenated_examples() -> None:
    assert join_hyphenated("the mito-\nchondria make ATP") == "the mitochondria\nmake ATP"
    assert join_hyphenated("is propor-\n\ntional to mM") == "is proportional\nto mM"  # split by a figure
    assert join_hyphenated("ends in photo-\nsynthesis\nnext") == "ends in photosynthesis\nnext"
    assert join_hyphenated("well-\nKnown") == "well-\nKnown"
    assert join_hyphenated("- item\n- next") == "- item\n- next"


@given(
    st.lists(st.sampled_from(["cell", "ATP", "membrane", "1", "ii"]), min_size=1, max_size=6),
    st.integers(1, 400),
)
def test_edge_key_ignores_page_numbers_only(words: list[str], number: int) -> None:
    line = " ".join(words)
    assert edge_key(f"{line} {number}") == edge_key(f"{line} {number + 1}")
    assert edge_key("Exemple 2.") != edge_key("Exemple 5.")


@FAST
@given(st.lists(st.text(alphabet="abcdef ", min_size=1, max_size=30), min_size=1, max_size=30))
def test_edge_filter_never_drops_a_line_seen_once(bodies: list[str]) -> None:
    edges: RepeatedEdgeFilter[int] = RepeatedEdgeFilter()
    decided: dict[int, set[tuple[int, int]]] = {}
    for n, body in enumerate(bodies):
        blocks = [
            (10.0, 20.0, ["Course notes"]),
            (100.0, 700.0, [f"{body} {n}" if bodies.count(body) > 1 else body]),
            (780.0, 790.0, [str(n + 1)]),
        ]
        decided.update(edges.push(n, blocks, 800.0))
    decided.update(edges.flush())
    assert sorted(decided) == list(range(len(bodies)))
    for drop in decided.values():
        assert (1, 0) not in drop  # body text is never a header
        if len(bodies) >= 3:
            assert {(0, 0), (2, 0)} <= drop  # the running head and the page number go


@given(st.text(max_size=200), st.text(max_size=200))
def test_token_count_is_additive_over_whitespace(a: str, b: str) -> None:
    assert count_tokens(a + "\n" + b) == count_tokens(a) + count_tokens(b)
    assert count_tokens(a) == sum(tokens for _, _, tokens in token_spans(a))
    assert count_tokens(a) <= max(1, len(a))


def _tail_start_over_every_token(text: str, budget: int) -> int:
    """Where the overlap's tail starts, walking back over every token of the text."""
    used, cut = 0, len(text)
    for begin, _end, tokens in reversed(token_spans(text)):
        if used + tokens > budget:
            break
        used, cut = used + tokens, begin
    return cut


@FAST
@given(PARAGRAPH, st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=3))
def test_the_overlap_tail_of_a_long_paragraph_starts_where_a_walk_over_every_token_says(
    paragraph: str, budget: int, repeat: int
) -> None:
    text = " ".join([paragraph] * (1 + repeat * 20))  # often longer than the window _tail reads
    assert _tail_start(text, budget) == _tail_start_over_every_token(text, budget)
    assert count_tokens(_tail(text, budget)) <= budget
