"""Correctness beyond shared words (opposite terms, comparisons, numbers, names) and the deck's
page coverage: what a user finds in the deck, and what they are told to check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.cards.facts import (
    COMPARES_UNKNOWN,
    CONTRADICTS,
    NAME_KIND,
    NUMBER_KIND,
    Source,
    missing_numbers,
    names,
)
from services.cards.lexicon import lexicon
from services.cards.quality import page_coverage
from services.cards.rules import review_kinds
from services.documents.decks import load_deck, store_chunk_cards
from services.documents.ledger import store_ledger
from services.documents.state import AssembleDeck, DocumentState
from services.domain import Card
from services.events.models import DocumentProgress, PageInfo
from services.handlers.assemble import assemble_deck
from services.handlers.export import deck_json
from services.storage.blobs import LocalBlobStore
from tests.unit.test_card_languages import read
from tests.unit.test_cards_pipeline import card
from tests.unit.test_language import ENGLISH_BOOK, SPANISH_SLIDES, german, pdf_page, slide

# The issue's lab handout, in its words: one kept card said the opposite of this.
HANDOUT = (
    "A uniform distribution is a continuous probability distribution: every interval of the same "
    "length within its support is equally likely. Discrete distributions, such as the binomial, "
    "give a probability to each single value."
)


def kept(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.back for c in result.cards]


def dropped(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return dict(result.dropped)


# ── opposite terms ───────────────────────────────────────────────────────────────────────────


def test_the_issues_false_card_is_dropped_and_the_true_one_kept() -> None:
    question = "What kind of probability distribution is a uniform distribution?"
    wrong = read(HANDOUT, "en", (question, "A discrete probability distribution"))
    assert kept(wrong) == [] and dropped(wrong) == {question: CONTRADICTS}
    said = read(HANDOUT, "en", ("What is a uniform distribution?", "a discrete probability distribution"))
    assert kept(said) == []  # the issue's own wording
    right = read(HANDOUT, "en", (question, "A continuous probability distribution"))
    assert kept(right) == ["A continuous probability distribution"] and not right.cards[0].needs_review
    binomial = read(HANDOUT, "en", ("What kind of distribution is the binomial?", "A discrete distribution"))
    assert kept(binomial) == ["A discrete distribution"]  # the other sentence says so


def test_a_textbook_page_that_calls_functions_continuous_drops_a_card_calling_them_discontinuous() -> None:
    page = pdf_page(ENGLISH_BOOK, 126)  # "x + 1 and 1 −x … are continuous functions"
    question = "What kind of functions are x + 1 and 1 − x, whose graphs are straight lines?"
    assert dropped(read(page, "en", (question, "Discontinuous functions"))) == {question: CONTRADICTS}
    assert kept(read(page, "en", (question, "Continuous functions"))) == ["Continuous functions"]


def test_a_true_claim_next_to_its_opposite_about_something_else_is_kept() -> None:
    text = "A Python list is mutable. A tuple is like a list but immutable: its items cannot change."
    assert kept(read(text, "en", ("Is a Python list mutable?", "Yes, lists are mutable"))) == [
        "Yes, lists are mutable"
    ]
    assert kept(read(text, "en", ("Can a tuple change?", "No, tuples are not mutable"))) == [
        "No, tuples are not mutable"
    ]  # a denial of the term is not the term


def test_opposite_terms_are_read_per_language() -> None:
    spanish = "La distribución uniforme es una distribución continua. La binomial es discreta."
    question = "¿Qué tipo de distribución es la distribución uniforme?"
    assert dropped(read(spanish, "es", (question, "Una distribución discreta"))) == {question: CONTRADICTS}
    french = "La loi uniforme est une loi continue. La loi binomiale est une loi discrète."
    assert kept(read(french, "fr", ("Quelle loi est la loi uniforme ?", "Une loi discrète"))) == []
    german_text = "Die Gleichverteilung ist eine stetige Verteilung. Die Binomialverteilung ist diskret."
    assert (
        kept(
            read(
                german_text,
                "de",
                ("Was für eine Verteilung ist die Gleichverteilung?", "Eine diskrete Verteilung"),
            )
        )
        == []
    )
    portuguese = "A distribuição uniforme é uma distribuição contínua. A binomial é discreta."
    assert kept(
        read(portuguese, "pt", ("Que tipo de distribuição é a uniforme?", "Uma distribuição contínua"))
    ) == ["Uma distribuição contínua"]


# ── comparisons ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("language", "text", "answer", "known"),
    [
        ("en", "A tuple is like a list but immutable.", "Tuples, unlike lists, are immutable", True),
        ("en", "A tuple is like a list but immutable.", "Tuples, unlike arrays, are immutable", False),
        ("en", "A tuple is like a list but immutable.", "Tuples are faster than dictionaries", False),
        ("en", "Discrete and continuous variables differ.", "discrete vs continuous", True),
        ("en", "Discrete and continuous variables differ.", "discrete vs categorical", False),
        ("es", "spanish", "Las variables, a diferencia de las constantes, cambian", True),
        ("es", "spanish", "Las variables, a diferencia de las funciones, cambian", False),
        ("de", "german", "Die Schulen sind größer als die Zentralstelle", True),
        ("de", "german", "Die Schulen sind größer als die Universitäten", False),
    ],
)
def test_each_side_of_a_comparison_must_occur_in_the_text(
    language: str, text: str, answer: str, known: bool
) -> None:
    source = {"spanish": lambda: slide(SPANISH_SLIDES, 4) + slide(SPANISH_SLIDES, 2), "german": german}
    body = source[text]() if text in source else text
    result = read(body, language, ("What does the comparison say here?", answer))
    assert bool(result.cards) is known, result.dropped  # unknown: dropped, by grounding or by this check


def test_a_comparison_with_something_the_text_never_names_is_dropped_for_it() -> None:
    text = "A tuple is like a list but immutable."
    result = read(text, "en", ("How do tuples compare?", "Tuples, unlike arrays, are immutable"))
    assert dropped(result) == {"How do tuples compare?": COMPARES_UNKNOWN}


# ── numbers and names ────────────────────────────────────────────────────────────────────────


def test_a_number_the_text_does_not_hold_is_marked_to_check() -> None:
    text = german()  # "… der mehr als 140 Deutschen Auslandsschulen …", "Kurz gefasst 10€."
    result = read(
        text,
        "de",
        ("Wie viele Deutsche Auslandsschulen gibt es?", "Mehr als 140"),
        (
            "Wie viele Schulen fördert die Zentralstelle?",
            "Mehr als 150 Deutsche Auslandsschulen im Netzwerk der Zentralstelle",
        ),
    )
    reviews = {c.back: c.review for c in result.cards}
    assert reviews == {
        "Mehr als 140": None,
        "Mehr als 150 Deutsche Auslandsschulen im Netzwerk der Zentralstelle": (
            "the number 150 in the answer is not in the text"
        ),
    }
    assert review_kinds(result.cards[1]) == [NUMBER_KIND]


def test_numbers_match_however_the_text_writes_them() -> None:
    source = Source("It costs 3,5 euros; 1,000 pages; −2 degrees.", lexicon("en"))
    assert missing_numbers("3.5 euros, 1000 pages, -2 degrees", source) == []
    assert missing_numbers("4.5 euros", source) == ["4.5"]


def test_a_name_the_text_does_not_hold_is_marked_to_check() -> None:
    text = german()  # "Von Kuala Lumpur bis Kiew, von Toronto bis Tokio …"
    result = read(
        text,
        "de",
        ("Wo gibt es Deutsche Auslandsschulen?", "Von Kuala Lumpur bis Kiew"),
        (
            "Wer fördert die Deutsche Schule?",
            "Die Zentralstelle für Auslandsschulwesen mit dem Goethe Institut",
        ),
    )
    reviews = {c.back: c.review or "" for c in result.cards}
    assert reviews["Von Kuala Lumpur bis Kiew"] == ""
    named = reviews["Die Zentralstelle für Auslandsschulwesen mit dem Goethe Institut"]
    assert 'the name "Goethe Institut" in the answer is not in the text' in named.split("; ")
    assert NAME_KIND in review_kinds(result.cards[1])


def test_what_reads_as_a_name() -> None:
    en, es = lexicon("en"), lexicon("es")
    assert names("It was written by Charles Severance at the University of Michigan.", en) == [
        "Charles Severance",
        "University of Michigan",
    ]
    assert names("The Python language. A list holds items.", en) == []  # sentence starts are not names
    assert names("El Banco de España publica datos.", es) == ["Banco de España"]


# ── page coverage in the deck's quality ──────────────────────────────────────────────────────


async def test_the_deck_reports_which_pages_with_text_got_a_card(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    ids = {"tenant_id": "t", "document_id": "doc", "generation": 1}
    pages = [
        PageInfo(number=n, label=str(n), section=[], method="text", chars=chars, tokens=chars // 4)
        for n, chars in [(1, 40), (2, 1200), (3, 900), (4, 300), (5, 2000)]  # page 1: a title page
    ]
    store_ledger(blobs, "doc", 1, pages)
    cards = [
        card_on(page=2, cid="a", front="What is on page 2?"),
        card_on(page=5, cid="b", front="What is on page 5?"),
        card_on(page=1, cid="c", front="What is the title?"),
    ]
    store_chunk_cards(blobs, "doc", 1, 0, cards)
    state = DocumentState(
        **ids, status="completed", languages={0: "en", 1: "en", 2: "fr"}, retried={1: False}
    )
    deck = AssembleDeck(status="completed", failures=[], empty=[], dropped=0, dropped_by_reason={})
    assembled = await assemble_deck(blobs, state, deck)
    stored = load_deck(blobs, assembled.deck_uri)
    snap = DocumentProgress(
        **ids, kind="done", status="completed", filename="f.pdf", created_at=0, pages_total=5,
        pages_done=5, chunks_total=3, chunks_done=3, chunks_failed=0, cards=3, progress=1.0,
    )  # fmt: skip
    quality = deck_json(snap, 1, "completed", stored.cards, stored, [])["quality"]
    assert quality["pages_with_text"] == 4 and quality["pages_with_cards"] == 2
    assert quality["page_coverage"] == 0.5 and quality["pages_without_cards"] == ["3", "4"]
    assert quality["language"] == "en" and quality["chunks_by_language"] == {"en": 2, "fr": 1}
    assert quality["retried_chunks"] == 1 and quality["retried_chunks_with_cards"] == 0
    assert quality["cards_language"] is None


def card_on(*, page: int, cid: str, front: str) -> Card:
    return dataclasses.replace(card(front, cid=cid), page=page, page_label=str(page))


def test_coverage_without_a_page_ledger_or_pages_with_text_is_unknown_not_zero() -> None:
    title = PageInfo(number=1, label="i", section=[], method="text", chars=120, tokens=30)
    assert page_coverage([], [card_on(page=1, cid="a", front="Q?")])["page_coverage"] is None
    assert page_coverage([title], [])["page_coverage"] is None
