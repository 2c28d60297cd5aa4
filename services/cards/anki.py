"""A deck as an Anki package (.apkg), made with genanki: cards in, the package's bytes out.

Re-importing a later export must update the notes a student already studies, never add copies:
Anki matches notes by GUID, so each note's GUID is ``guid_for(tenant, document, card_id)`` (the
card id is stable across redelivery, see ``services.domain.card_id``), the note models have
fixed ids, and the deck id is derived from the tenant and document (never random per export).

Anki fields are HTML: card text is escaped (``<b>`` from a model's answer shows as text) and line
breaks become ``<br>``. Cloze cards already use Anki's syntax (``{{c1::term}}``, see the card
prompts); escaping leaves the braces alone, so the front is the cloze note's Text as it is. A
"cloze" card without any ``{{cN::…}}`` would give Anki a note with no card: it goes out as basic.

Tags cannot hold spaces: the source (``source::<file>``, ``page::<label>``,
``section::<heading>::<subheading>``) and the card's own tags are cut down to plain words joined
by ``_``; cards that need review carry ``to-check``.
"""

from __future__ import annotations

import hashlib
import html
import io
import itertools
import re
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import genanki

from services.domain import Card

BASIC_MODEL_ID = 1_736_402_917  # fixed forever: Anki keys note types by id
CLOZE_MODEL_ID = 1_736_402_918
TO_CHECK = "to-check"
MAX_TAG_PART = 80
_CLOZE = re.compile(r"\{\{c(\d+)::(.*?)(?:::[^}]*)?\}\}", re.DOTALL)
_TAG_SPLIT = re.compile(r"[\s:\"]+")  # spaces are refused; ':' runs would nest tags
CSS = """.card { font-family: sans-serif; font-size: 20px; text-align: center; color: black; }
.cloze { font-weight: bold; color: blue; }
.nightMode .cloze { color: lightblue; }
.source { margin-top: 1.5em; font-size: 12px; color: grey; }
"""
SOURCE = '<div class="source">{{Source}}</div>'

BASIC_MODEL = genanki.Model(
    BASIC_MODEL_ID,
    "deckstream basic",
    fields=[{"name": "Front"}, {"name": "Back"}, {"name": "Source"}],
    templates=[
        {"name": "Card 1", "qfmt": "{{Front}}", "afmt": "{{FrontSide}}<hr id=answer>{{Back}}" + SOURCE}
    ],
    css=CSS,
)
CLOZE_MODEL = genanki.Model(
    CLOZE_MODEL_ID,
    "deckstream cloze",
    fields=[{"name": "Text"}, {"name": "Back Extra"}, {"name": "Source"}],
    templates=[
        {"name": "Cloze", "qfmt": "{{cloze:Text}}", "afmt": "{{cloze:Text}}<br>{{Back Extra}}" + SOURCE}
    ],
    css=CSS,
    model_type=genanki.Model.CLOZE,
)


def deck_id(tenant_id: str, document_id: str) -> int:
    """The document's Anki deck id: the same on every export, within the range Anki's own ids use."""
    digest = hashlib.sha256(f"deckstream-deck/{tenant_id}/{document_id}".encode()).digest()
    return (1 << 30) + int.from_bytes(digest[:8], "big") % (1 << 30)


def note_guid(tenant_id: str, document_id: str, card_id: str) -> str:
    return str(genanki.guid_for(tenant_id, document_id, card_id))


def as_html(text: str) -> str:
    return html.escape(text, quote=False).replace("\r\n", "\n").replace("\n", "<br>")


def tag_part(text: str) -> str:
    """One level of a tag: words joined by ``_`` (no spaces, no ``::``), at most MAX_TAG_PART long."""
    return "_".join(w for w in _TAG_SPLIT.split(text) if w)[:MAX_TAG_PART].strip("_")


def tags_of(card: Card) -> list[str]:
    source = [("source", [card.file]), ("page", [card.page_label or str(card.page)])]
    source.append(("section", list(card.section)))
    tags = []
    for head, parts in source:
        kept = [p for p in map(tag_part, parts) if p]
        if kept:
            tags.append("::".join([head, *kept]))
    tags += [t for t in map(tag_part, card.tags) if t]
    tags += [TO_CHECK] if card.needs_review else []
    return list(dict.fromkeys(tags))


def source_line(card: Card) -> str:
    where = f"{card.file}, p. {card.page_label or card.page}"
    return as_html(where + (f" — {' › '.join(card.section)}" if card.section else ""))


def note_of(card: Card, tenant_id: str, document_id: str) -> genanki.Note:
    guid = note_guid(tenant_id, document_id, card.card_id)
    tags = tags_of(card)
    hidden = _CLOZE.findall(card.front)
    if card.type == "cloze" and hidden:
        # The back of a cloze card is its hidden terms: repeated under the reveal only if it says more.
        terms = "; ".join(term.strip() for _, term in hidden)
        extra = "" if card.back.strip() in ("", terms) else as_html(card.back)
        fields = [as_html(card.front), extra, source_line(card)]
        return genanki.Note(model=CLOZE_MODEL, fields=fields, tags=tags, guid=guid)
    front = _CLOZE.sub(lambda m: m.group(2), card.front)  # a stray cloze marker reads as its term
    fields = [as_html(front), as_html(card.back), source_line(card)]
    return genanki.Note(model=BASIC_MODEL, fields=fields, tags=tags, guid=guid)


def deck_name(filename: str) -> str:
    stem = Path(filename).stem if "." in filename else filename
    return "deckstream::" + (" ".join(stem.replace("::", ":").split()) or "deck")


def deck_apkg(
    tenant_id: str, document_id: str, filename: str, cards: Sequence[Card], *, timestamp: float | None = None
) -> bytes:
    """The cards as an .apkg (a zip holding ``collection.anki2``, a SQLite database)."""
    deck = genanki.Deck(deck_id(tenant_id, document_id), deck_name(filename))
    for card in cards:
        deck.add_note(note_of(card, tenant_id, document_id))
    return package_bytes(genanki.Package(deck), time.time() if timestamp is None else timestamp)


def package_bytes(package: genanki.Package, timestamp: float) -> bytes:
    """``Package.write_to_file`` without its leak: it writes the collection to a ``mkstemp`` file it
    never removes (one per export, in a long-lived server). Here the collection lives in a temp
    folder that goes away, and the zip is built in memory."""
    with tempfile.TemporaryDirectory(prefix="deckstream-apkg-") as folder:
        db = Path(folder) / "collection.anki2"
        conn = sqlite3.connect(db)
        try:
            package.write_to_db(conn.cursor(), timestamp, itertools.count(int(timestamp * 1000)))
            conn.commit()
        finally:
            conn.close()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(db, "collection.anki2")
            z.writestr("media", "{}")  # no media files
        return out.getvalue()
