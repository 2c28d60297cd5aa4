"""Which language a chunk is in, and which one its cards are asked in (real corpus text)."""

from __future__ import annotations

import time
from pathlib import Path

import pptx
import pymupdf
import pytest

from services.cards.language import card_language, detect, requested
from services.cards.prompting import render_prompt
from services.domain import Chunk, Segment
from services.events import topics
from services.events.models import CardsGenerated
from services.handlers.split import _chunk_event
from tests.conftest import corpus_file
from tests.unit.test_card_writing import FakeLLM, cards_json
from tests.unit.test_handlers import ScriptedLLM, chunk_event, sent_to, upload_event, writer

SPANISH_SLIDES = "py4e_es_2.1_Spanish.pptx"
FRENCH_BOOK = "exo7_algebre_cours-premiere-annee.pdf"
GERMAN_TEXT = "chardet_windows-1252_german_ude_1.txt"
ENGLISH_BOOK = "whitehead_introduction-to-mathematics_pg41568.pdf"


def slide(name: str, number: int) -> str:
    deck = pptx.Presentation(str(corpus_file(name)))
    return "\n".join(s.text_frame.text for s in deck.slides[number - 1].shapes if s.has_text_frame)


def pdf_page(name: str, number: int) -> str:
    with pymupdf.open(corpus_file(name)) as doc:
        return str(doc[number - 1].get_text())


def german() -> str:
    return corpus_file(GERMAN_TEXT).read_bytes().decode("cp1252")


def one_chunk(text: str, page: int = 1) -> Chunk:
    return Chunk(0, (Segment(page, str(page), ("Section",), text),), len(text.split()))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (lambda: slide(SPANISH_SLIDES, 4), "es"),
        (lambda: pdf_page(FRENCH_BOOK, 14), "fr"),
        (german, "de"),
        (lambda: pdf_page(ENGLISH_BOOK, 126), "en"),
    ],
    ids=["spanish-slide", "french-textbook", "german-text", "english-textbook"],
)
def test_a_chunks_language_is_told_from_its_own_text(source: object, expected: str) -> None:
    text = source()  # type: ignore[operator]
    found = detect(text)
    assert found.code == expected and found.confidence >= 0.9


def test_code_and_scraps_are_undetermined_rather_than_guessed() -> None:
    code = slide(SPANISH_SLIDES, 9)  # "x1q3z9ocd = 35.0 …" and one Spanish question
    assert detect(code).code == "und"
    assert detect("x = 2\nx = x + 2\nprint(x)").code == "und"
    assert detect("").code == "und"


def test_detection_is_fast_enough_to_run_on_every_chunk() -> None:
    text = pdf_page(FRENCH_BOOK, 14)
    detect(text)  # the model is loaded once per process
    started = time.perf_counter()
    for _ in range(50):
        detect(text)
    assert (time.perf_counter() - started) / 50 < 0.01  # ~0.6 ms measured; 10 ms is a generous bound


@pytest.mark.parametrize(
    ("option", "code"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        ("source", None),
        ("fr", "fr"),
        ("FR", "fr"),
        ("pt-BR", "pt"),
        ("es_MX", "es"),
        ("French", "fr"),
        ("français", "fr"),
        ("Deutsch", "de"),
        ("Português", "pt"),
        ("klingon", "klingon"),  # kept: the prompt names it as given, the rules fall back
    ],
)
def test_the_upload_option_reads_as_a_language_code(option: str | None, code: str | None) -> None:
    assert requested(option) == code


def test_cards_follow_the_source_unless_the_upload_asks_for_another_language() -> None:
    assert card_language("es", None) == "es"
    assert card_language("es", "auto") == "es"
    assert card_language("es", "French") == "fr"
    assert card_language("und", None) == "und"


def test_the_prompt_names_the_language_and_shows_an_example_in_it() -> None:
    chunk = one_chunk(slide(SPANISH_SLIDES, 4), page=4)
    rendered = render_prompt(chunk, profile="chat", version="v3", language="es", source_language="es")
    system, example_text, example_a, asked = (m.content for m in rendered.prompt.messages)
    assert "write every question and every answer in Spanish" in system
    assert "La fotosíntesis es el proceso" in example_text  # a worked example, in Spanish
    assert "¿Qué producen las plantas durante la fotosíntesis?" in example_a
    assert "Write 4 flashcards in Spanish" in asked and chunk.text in asked
    base = render_prompt(chunk, profile="completion", version="v3", language="es")
    assert "Q: ¿En qué parte de la célula ocurre la fotosíntesis?" in (base.prompt.text or "")

    translated = render_prompt(chunk, profile="chat", version="v3", language="fr", source_language="es")
    assert "the text is in Spanish; write every question and every answer in French" in (
        translated.prompt.messages[0].content
    )
    assert "Que fabriquent les plantes" in translated.prompt.messages[2].content

    unknown = render_prompt(one_chunk("x = 2"), profile="chat", version="v3", language="und")
    assert "in the language of the text" in unknown.prompt.messages[0].content
    assert len(unknown.prompt.messages) == 2  # no example to show in an unknown language


def test_the_upload_option_travels_with_every_chunk() -> None:
    up = upload_event(language="fr")
    event = _chunk_event(up, one_chunk("Some text"), "bulk")
    assert event.language == "fr"
    assert _chunk_event(upload_event(), one_chunk("Some text"), "bulk").language is None


async def test_the_worker_asks_in_the_chunks_language_and_reads_the_cards_by_it(tmp_path: Path) -> None:
    text = slide(SPANISH_SLIDES, 4)
    answer = cards_json(("¿Qué es una variable?", "Un lugar designado en la memoria para guardar datos"))
    llm = FakeLLM(answer)
    write = writer(tmp_path, llm)  # type: ignore[arg-type]
    event = chunk_event(segments=[Segment(4, "4", ("Variables",), text)], filename="es.pptx")
    (made,) = sent_to(await write(event, priority=0, give_up=None), topics.CARDS)
    assert isinstance(made, CardsGenerated) and made.language == "es"
    assert "in Spanish" in llm.prompts[0].messages[0].content
    # Read with Spanish stopwords and stems, the answer is wholly supported by the slide.
    assert [(c.back, c.support, c.needs_review) for c in made.cards] == [
        ("Un lugar designado en la memoria para guardar datos", 1.0, False)
    ]


async def test_cards_asked_in_another_language_are_not_dropped_for_other_words(tmp_path: Path) -> None:
    text = german()
    answer = cards_json(
        ("Combien d'écoles allemandes à l'étranger le réseau compte-t-il ?", "Plus de 140 écoles"),
        ("Combien d'élèves y a-t-il ?", "Plus de 9000 élèves"),
    )
    llm = ScriptedLLM(answer)
    write = writer(tmp_path, llm)
    event = chunk_event(segments=[Segment(1, "1", (), text)], filename="de.txt", language="fr")
    (made,) = sent_to(await write(event, priority=0, give_up=None), topics.CARDS)
    assert isinstance(made, CardsGenerated) and made.language == "de"
    backs = {c.back: c.review for c in made.cards}
    # Shared words cannot ground a translation: kept; its numbers are still checked against the text.
    assert backs == {
        "Plus de 140 écoles": None,
        "Plus de 9000 élèves": "the number 9000 in the answer is not in the text",
    }
