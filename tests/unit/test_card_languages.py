"""The card rules per language: grounding (stopwords, stems, accents), "repeats the question",
"the answer alone" and "points at its source", on real sentences of the corpus.

English, Spanish (Python para Todos slides), French (Exo7's algebra textbook) and German (a
windows-1252 text) come from corpus files. The corpus has no Portuguese file: its cases use the
Spanish slide's sentences in Portuguese.
"""

from __future__ import annotations

import pytest

from services.cards.lexicon import lexicon
from services.cards.rules import NOT_SUPPORTED, REPEATS_QUESTION, answer_only, key_terms, leans_on_source
from services.domain import Chunk, Segment
from services.llm.client import Completion
from tests.unit.test_card_writing import cards_json
from tests.unit.test_language import FRENCH_BOOK, SPANISH_SLIDES, german, pdf_page, slide

PORTUGUESE = (
    "Uma variável é um lugar designado na memória onde o programador pode guardar os dados e "
    "depois recuperá-los usando o nome da variável. Os programadores escolhem os nomes das variáveis."
)


def read(text: str, language: str | None, *cards: tuple[str, str]):  # type: ignore[no-untyped-def]
    from services.cards.rules import cards_from_answer

    chunk = Chunk(0, (Segment(1, "1", ("S",), text),), len(text.split()))
    return cards_from_answer(
        chunk,
        Completion(cards_json(*cards), "stop"),
        profile="chat",
        card_types=["basic"],
        version="cards-chat-v3",
        document_id="d",
        generation=1,
        filename="f",
        language=language,
    )


def spanish() -> str:
    return slide(SPANISH_SLIDES, 4) + "\n" + slide(SPANISH_SLIDES, 2)


def french() -> str:
    return pdf_page(FRENCH_BOOK, 14)


# ── grounding ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("language", "text", "question", "answer"),
    [
        ("es", spanish, "¿Qué es una variable?", "Un lugar designado en la memoria para guardar los datos"),
        ("es", spanish, "¿Por qué las constantes se llaman así?", "Porque su valor no cambia"),
        (
            "fr",
            french,
            "Sur quoi repose le raisonnement par contraposition ?",
            "Sur l'équivalence de « P =⇒ Q » et « non(Q) =⇒ non(P) »",
        ),
        (
            "de",
            german,
            "Wer fördert die Deutschen Auslandsschulen?",
            "Die Zentralstelle für Auslandsschulwesen",
        ),
        (
            "pt",
            lambda: PORTUGUESE,
            "O que é uma variável?",
            "Um lugar designado na memória para guardar dados",
        ),
    ],
    ids=["es", "es-plural-accents", "fr", "de", "pt"],
)
def test_an_answer_in_the_texts_own_words_is_fully_supported(
    language: str, text: object, question: str, answer: str
) -> None:
    result = read(text(), language, (question, answer))  # type: ignore[operator]
    assert [(c.support, c.needs_review) for c in result.cards] == [(1.0, False)], result.dropped


def test_read_as_english_the_same_spanish_answer_looked_weakly_supported() -> None:
    """What the English-only rules did: Spanish function words counted as content words."""
    answer = "Un lugar designado en la memoria para guardar los datos"
    terms = key_terms(answer, None)
    assert {"un", "en", "la", "los", "para"} <= set(terms)
    assert key_terms(answer, "es") == ["lug", "designad", "memori", "guard", "dat"]
    assert key_terms("guarda", "es") == key_terms("guardan", "es") == ["guard"]


def test_stems_and_accents_make_one_term_of_a_words_forms() -> None:
    assert key_terms("números", "es") == key_terms("número", "es") == key_terms("numero", "es")
    assert key_terms("discrètes", "fr") == key_terms("discret", "fr")
    assert key_terms("Funktionen", "de") == key_terms("Funktion", "de")
    assert key_terms("informações", "pt") == key_terms("informação", "pt")


def test_a_made_up_answer_is_dropped_in_every_language() -> None:
    for language, text in (("es", spanish()), ("fr", french()), ("de", german()), ("pt", PORTUGUESE)):
        result = read(
            text, language, ("Quel est le plus grand planète ?", "Júpiter, con su gran mancha roja")
        )
        assert result.cards == [] and result.dropped[0][1] == NOT_SUPPORTED, language


def test_the_neutral_fallback_reads_a_language_without_its_own_words() -> None:
    italian = "La variabile è un luogo della memoria dove il programmatore conserva i dati."
    assert key_terms(italian, "it") == [
        "variabile",
        "luogo",
        "della",
        "memoria",
        "dove",
        "programmatore",
        "conserva",
        "dati",
    ]
    assert key_terms("变量是内存中的位置", "zh")[:3] == ["变量", "量是", "是内"]  # no spaces: character pairs
    result = read(italian, "it", ("Che cosa è una variabile?", "Un luogo della memoria"))
    assert [c.support for c in result.cards] == [1.0]


# ── the answer alone, and answers that only repeat the question ──────────────────────────────


@pytest.mark.parametrize(
    ("language", "question", "answer", "alone"),
    [
        (
            "es",
            "¿Qué es una variable?",
            "Una variable es un lugar designado en la memoria",
            "un lugar designado en la memoria",
        ),
        (
            "fr",
            "Qu'est-ce que la contraposée ?",
            "La contraposée est l'assertion non(Q) ⟹ non(P)",
            "l'assertion non(Q) ⟹ non(P)",
        ),
        (
            "de",
            "Was ist die Zentralstelle für Auslandsschulwesen?",
            "Die Zentralstelle für Auslandsschulwesen ist eine Stelle des Auswärtigen Amtes",
            "eine Stelle des Auswärtigen Amtes",
        ),
        (
            "pt",
            "O que é uma variável?",
            "Uma variável é um lugar designado na memória",
            "um lugar designado na memória",
        ),
        (
            "es",
            "¿Cuál es la diferencia entre constantes y variables?",
            "Las constantes son valores fijos",
            "Las constantes son valores fijos",
        ),
    ],
    ids=["es", "fr", "de", "pt", "es-compares"],
)
def test_an_answer_that_restates_a_what_is_question_keeps_only_the_answer(
    language: str, question: str, answer: str, alone: str
) -> None:
    assert answer_only(question, answer, language) == alone


@pytest.mark.parametrize(
    ("language", "text", "question", "answer", "dropped"),
    [
        ("es", spanish, "¿Qué eligen los programadores?", "Los programadores eligen.", True),
        (
            "es",
            spanish,
            "¿Cambia el valor de una constante?",
            "No, el valor de una constante no cambia",
            False,
        ),
        ("es", spanish, "¿Las constantes son números o letras?", "Números, letras y cadenas", False),
        (
            "fr",
            french,
            "Sur quoi le raisonnement par contraposition est-il basé ?",
            "Le raisonnement par contraposition est basé.",
            True,
        ),
        (
            "fr",
            french,
            "Est-ce que la méthode du cas par cas montre l'assertion pour tous les x ?",
            "Oui, pour les x de A puis pour les autres",
            False,
        ),
        (
            "de",
            german,
            "Wovon wird die Deutsche Schule gefördert?",
            "Die Deutsche Schule wird gefördert.",
            True,
        ),
        (
            "de",
            german,
            "Ist die Deutsche Schule eine Auslandsschule?",
            "Ja, die Deutsche Schule ist eine Auslandsschule",
            False,
        ),
        ("pt", lambda: PORTUGUESE, "O que os programadores escolhem?", "Os programadores escolhem.", True),
        (
            "pt",
            lambda: PORTUGUESE,
            "Os programadores escolhem os dados?",
            "Não, escolhem os nomes das variáveis",
            False,
        ),
    ],
    ids=["es", "es-denies", "es-choice", "fr", "fr-yes-no", "de", "de-yes-no", "pt", "pt-denies"],
)
def test_an_answer_that_only_repeats_its_question_is_dropped_per_language(
    language: str, text: object, question: str, answer: str, dropped: bool
) -> None:
    result = read(text(), language, (question, answer), ("Una pregunta más sobre otra cosa?", "memoria"))  # type: ignore[operator]
    reasons = [reason for front, reason in result.dropped if front == question]
    assert (reasons == [REPEATS_QUESTION]) is dropped, (reasons, [c.back for c in result.cards])


# ── questions that point at their source ─────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("language", "question", "leans"),
    [
        ("es", "Según el texto, ¿qué es una variable?", True),
        ("es", "¿Qué muestra el código anterior?", True),
        ("es", "¿Qué dice el texto?", True),
        ("es", "¿Qué es una variable en Python?", False),
        ("fr", "Selon le texte, qu'est-ce que la contraposée ?", True),
        ("fr", "Que dit le texte ?", True),
        ("fr", "Que montre l'exemple ci-dessus ?", True),
        ("fr", "Qu'est-ce que la contraposée ?", False),
        ("de", "Was sagt der Text über die Auslandsschulen?", True),
        ("de", "Was steht im Text über die Schulen?", True),
        ("de", "Wer fördert die Deutschen Auslandsschulen?", False),
        ("pt", "Segundo o texto, o que é uma variável?", True),
        ("pt", "O que diz o texto?", True),
        ("pt", "O que é uma variável?", False),
    ],
)
def test_a_question_that_points_at_its_source_is_marked_per_language(
    language: str, question: str, leans: bool
) -> None:
    assert leans_on_source(question, language) is leans


def test_the_neutral_fallback_marks_nothing_it_cannot_read() -> None:
    assert not leans_on_source("Secondo il testo, che cosa è una variabile?", "it")
    assert (
        answer_only("Che cos'è una variabile?", "Una variabile è un luogo", "it")
        == "Una variabile è un luogo"
    )
    assert lexicon("it").yes_no is None
