"""Which language a text is in, and which one its cards are written in.

Detection is py3langid (a naive Bayes model over byte n-grams, 97 languages, shipped in its
wheel: nothing is downloaded). On the corpus it labelled 259 of 261 chunks right (English,
French, Spanish, German) at 0.6 ms a chunk; the two misses were an index page and a page of
formulas (docs/card-quality.md has the comparison with langid, lingua and langdetect).

A chunk's language is detected from its own text, so a document that mixes languages gets
each chunk's. A chunk too short or too unlike any language to tell (code, formulas, an index)
is "und": its prompt asks for the language of the text without naming one. Cards are written
in the source's language unless the upload's ``language`` option asks for another.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from typing import Any

from services.cards.lexicon import NEUTRAL, fold

MIN_LETTERS = 40  # fewer letters than this: too little to tell a language by
MIN_CONFIDENCE = 0.9  # below this (normalised) probability a chunk's language is "und"

# English names of the languages py3langid knows that prompts may name; others are "und".
NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan",
    "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "eo": "Esperanto", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "ga": "Irish", "gl": "Galician", "he": "Hebrew", "hi": "Hindi",
    "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "la": "Latin", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "nb": "Norwegian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sq": "Albanian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese",
}  # fmt: skip
# What people type in the upload option besides a code: the English and the native names.
_ALIASES = {fold(name): code for code, name in NAMES.items()} | {
    "espanol": "es", "castellano": "es", "francais": "fr", "deutsch": "de", "portugues": "pt",
    "italiano": "it", "nederlands": "nl", "brazilian portuguese": "pt",
}  # fmt: skip
_SOURCE = {"", "auto", "source", "original", "same", "und"}
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True, slots=True)
class Detected:
    code: str  # ISO 639-1, or "und"
    confidence: float  # the model's probability of it, 0..1


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


_LOCK = threading.Lock()  # the identifier keeps no state per call, but loading it is not atomic


def load() -> Any:
    """The model, loaded once per process (~0.9 s, 4.5 MB): call it at start."""
    with _LOCK:
        return _identifier()


def detect(text: str, min_confidence: float = MIN_CONFIDENCE) -> Detected:
    """The language of a text; "und" when there is too little to tell or the model is unsure."""
    if len(_LETTER.findall(text)) < MIN_LETTERS:
        return Detected(NEUTRAL, 0.0)
    code, confidence = load().classify(text)
    if confidence < min_confidence:
        return Detected(NEUTRAL, round(float(confidence), 3))
    return Detected(str(code), round(float(confidence), 3))


def requested(option: str | None) -> str | None:
    """The upload option as a language code: "fr", "pt-BR" → "pt", "French", "français" → "fr";
    None (or "auto", "source") for the source's own language. Anything else is kept, folded: the
    prompt names it as given and the rules read it with the neutral fallback."""
    if option is None:
        return None
    value = fold(option.strip())
    if value in _SOURCE:
        return None
    base = re.split(r"[-_]", value)[0]
    if base in NAMES:
        return base
    return _ALIASES.get(value, value)


def name(code: str) -> str | None:
    """The language's English name for a prompt; None for "und" (the prompt names none)."""
    if code == NEUTRAL:
        return None
    return NAMES.get(code, code if len(code) > 3 else None)


def card_language(source: str, option: str | None) -> str:
    """The language a chunk's cards are written in: the upload's choice, else the source's."""
    return requested(option) or source
