"""`python -m bench quality`'s figures: per document and over all of them, page 1 of one document
is not page 1 of another."""

from __future__ import annotations

import dataclasses
from collections import Counter

from bench.quality import measure
from services.domain import Page
from tests.unit.test_cards_pipeline import card

TEXT = "A Python list is an ordered, mutable collection of items. " * 8  # 464 characters


def page(number: int, text: str = TEXT) -> Page:
    return Page(number=number, label=str(number), section=(), text=text, method="text")


def test_the_overall_figures_keep_each_documents_pages_apart() -> None:
    on_slides = dataclasses.replace(
        card("What is a list?", "An ordered, mutable collection"), file="slides.pptx", page=1
    )
    on_book = dataclasses.replace(card("Is a list mutable?", "Mutable"), file="book.pdf", page=2)
    pages = [("slides.pptx", page(1)), ("slides.pptx", page(2)), ("book.pdf", page(1)), ("book.pdf", page(2))]
    kept = [(on_slides, "en"), (on_book, "en")]
    overall = measure(pages, kept, Counter(written=3, chunks=2), wall=4.0)
    # Four pages with text, two cited: the book's page 1 is not covered by the slides' page 1.
    assert (overall["pages_with_text"], overall["page_coverage"]) == (4, 0.5)
    assert overall["supported"] == 1.0  # each card read against its own document's page
    assert overall["cards"] == 2 and overall["duplicates"] == round(1 / 3, 3)
    assert overall["s_per_chunk"] == 2.0
    elsewhere = dataclasses.replace(on_book, file="other.pdf")  # a page of a document not in the set
    assert measure(pages, [(elsewhere, "en")], Counter(written=1, chunks=1), 1.0)["supported"] == 0.0
