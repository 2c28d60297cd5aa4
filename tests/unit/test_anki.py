"""The Anki export: what Anki reads out of the package (notes, note types, fields, tags, GUIDs),
opened the way Anki opens it (a zip holding collection.anki2, a SQLite database); and the
download through the API."""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.cards.anki import BASIC_MODEL_ID, CLOZE_MODEL_ID, TO_CHECK, deck_apkg
from services.documents.decks import store_chunk_cards
from services.domain import Card
from services.settings import Settings
from services.storage.blobs import LocalBlobStore
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import AUTH, FakeHub, progress

BASIC = Card(
    card_id="c" * 32,
    type="basic",
    front="Which tag makes text <b>bold</b> & why?",
    back="The <b> element.\nIt is presentational.",
    file="web notes.pdf",
    page=12,
    page_label="xii",
    section=("Chapter 2: HTML", "Inline  elements"),
    chunk_index=3,
    prompt_version="v2",
    tags=("html basics", "markup"),
)
CLOZE = Card(
    card_id="d" * 32,
    type="cloze",
    front="Light is turned into chemical energy in the {{c1::chloroplast}}.",
    back="chloroplast",
    file="web notes.pdf",
    page=13,
    page_label="13",
    section=(),
    chunk_index=3,
    prompt_version="v2",
    needs_review=True,
    review="only 50% of the answer's key terms occur in the source text",
)


@dataclass(frozen=True)
class Note:
    guid: str
    model_id: int
    fields: list[str]
    tags: list[str]
    cards: int  # how many cards Anki shows for it


@dataclass(frozen=True)
class Package:
    deck_names: list[str]
    deck_ids: list[int]
    models: dict[int, dict[str, Any]]
    notes: list[Note]


def open_apkg(data: bytes) -> Package:
    """What Anki reads: collection.anki2 from the zip, opened with sqlite3."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert {"collection.anki2", "media"} <= set(z.namelist())
        assert json.loads(z.read("media")) == {}
        db = z.read("collection.anki2")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "collection.anki2"
        path.write_bytes(db)
        con = sqlite3.connect(path)
        try:
            models_json, decks_json = con.execute("SELECT models, decks FROM col").fetchone()
            cards = dict(con.execute("SELECT nid, count(*) FROM cards GROUP BY nid").fetchall())
            notes = [
                Note(guid, mid, flds.split("\x1f"), tags.split(), cards.get(nid, 0))
                for nid, guid, mid, flds, tags in con.execute(
                    "SELECT id, guid, mid, flds, tags FROM notes ORDER BY id"
                )
            ]
        finally:
            con.close()
    decks = [d for d in json.loads(decks_json).values() if d["name"] != "Default"]
    models = {int(k): v for k, v in json.loads(models_json).items()}
    return Package([d["name"] for d in decks], [int(d["id"]) for d in decks], models, notes)


def test_basic_and_cloze_cards_become_notes_of_two_fixed_note_types() -> None:
    package = open_apkg(deck_apkg("school-a", "doc-1", "web notes.pdf", [BASIC, CLOZE]))

    assert package.deck_names == ["deckstream::web notes"]
    assert set(package.models) == {BASIC_MODEL_ID, CLOZE_MODEL_ID}
    basic, cloze = package.models[BASIC_MODEL_ID], package.models[CLOZE_MODEL_ID]
    assert (basic["type"], [f["name"] for f in basic["flds"]]) == (0, ["Front", "Back", "Source"])
    assert (cloze["type"], [f["name"] for f in cloze["flds"]]) == (1, ["Text", "Back Extra", "Source"])
    assert "{{cloze:Text}}" in cloze["tmpls"][0]["qfmt"]

    first, second = package.notes
    assert first.model_id == BASIC_MODEL_ID and first.cards == 1
    # Card text is shown as written, never as markup; line breaks survive.
    assert first.fields == [
        "Which tag makes text &lt;b&gt;bold&lt;/b&gt; &amp; why?",
        "The &lt;b&gt; element.<br>It is presentational.",
        "web notes.pdf, p. xii — Chapter 2: HTML › Inline  elements",
    ]
    # The cloze card keeps Anki's own syntax: one card, the term hidden.
    assert second.model_id == CLOZE_MODEL_ID and second.cards == 1
    assert second.fields == [
        "Light is turned into chemical energy in the {{c1::chloroplast}}.",
        "",  # the back is the hidden term: not shown twice
        "web notes.pdf, p. 13",
    ]


def test_tags_carry_the_source_the_cards_own_tags_and_to_check_without_spaces() -> None:
    first, second = open_apkg(deck_apkg("school-a", "doc-1", "web notes.pdf", [BASIC, CLOZE])).notes
    assert first.tags == [
        "source::web_notes.pdf",
        "page::xii",
        "section::Chapter_2_HTML::Inline_elements",
        "html_basics",
        "markup",
    ]
    assert TO_CHECK not in first.tags
    assert second.tags == ["source::web_notes.pdf", "page::13", TO_CHECK]
    assert all(" " not in tag for note in (first, second) for tag in note.tags)


def test_a_cloze_with_two_deletions_is_two_cards_and_one_without_any_is_a_basic_note() -> None:
    two = replace(CLOZE, card_id="e" * 32, front="{{c1::Mitochondria}} make {{c2::ATP}}.", back="")
    none = replace(CLOZE, card_id="f" * 32, front="Where is light turned into energy?")
    notes = open_apkg(deck_apkg("school-a", "doc-1", "web notes.pdf", [two, none])).notes
    assert (notes[0].model_id, notes[0].cards) == (CLOZE_MODEL_ID, 2)
    assert (notes[1].model_id, notes[1].cards) == (BASIC_MODEL_ID, 1)
    assert notes[1].fields[:2] == ["Where is light turned into energy?", "chloroplast"]


def test_a_re_export_has_the_same_guids_deck_and_note_types_so_anki_updates_notes() -> None:
    first = open_apkg(deck_apkg("school-a", "doc-1", "web notes.pdf", [BASIC, CLOZE], timestamp=1e9))
    edited = replace(BASIC, back="The <strong> element.")
    later = open_apkg(deck_apkg("school-a", "doc-1", "web notes.pdf", [edited, CLOZE], timestamp=2e9))
    assert [n.guid for n in later.notes] == [n.guid for n in first.notes]
    assert later.deck_ids == first.deck_ids and set(later.models) == set(first.models)
    assert later.notes[0].fields[1] != first.notes[0].fields[1]  # the edit is in, under the same GUID

    other_document = open_apkg(deck_apkg("school-a", "doc-2", "web notes.pdf", [BASIC, CLOZE]))
    other_tenant = open_apkg(deck_apkg("school-b", "doc-1", "web notes.pdf", [BASIC, CLOZE]))
    for other in (other_document, other_tenant):
        assert not {n.guid for n in other.notes} & {n.guid for n in first.notes}
        assert other.deck_ids != first.deck_ids
    assert len({n.guid for n in first.notes}) == 2


def test_an_export_leaves_no_temporary_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # genanki's own write_to_file leaves its SQLite file in the temp folder, once per export.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(3):
        deck_apkg("school-a", "doc-1", "web notes.pdf", [BASIC, CLOZE])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[tuple[TestClient, FakeHub, Settings]]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    hub = FakeHub()
    with TestClient(create_app(settings, publisher=FakePublisher(), feed=hub)) as client:
        yield client, hub, settings


def test_the_deck_downloads_as_an_apkg_named_after_the_file(
    api: tuple[TestClient, FakeHub, Settings],
) -> None:
    client, hub, settings = api
    name = 'Bio "final" ünit\\1.pdf'
    hub.feed(progress("d1", "done", "completed", filename=name, progress=1.0))
    store_chunk_cards(LocalBlobStore(settings.blob_dir), "d1", 1, 0, [BASIC, CLOZE])

    r = client.get("/v1/decks/d1?format=apkg", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/apkg"
    disposition = r.headers["content-disposition"]
    plain, exact = disposition.split("; filename*=UTF-8''")
    assert plain == 'attachment; filename="Bio _final_ _nit_1.apkg"'  # nothing that ends the quotes
    assert unquote(exact) == 'Bio "final" ünit\\1.apkg'
    notes = open_apkg(r.content).notes
    assert [n.fields[0][:10] for n in notes] == ["Which tag ", "Light is t"]
    again = open_apkg(client.get("/v1/decks/d1?format=apkg", headers=AUTH).content)
    assert [n.guid for n in again.notes] == [n.guid for n in notes]


def test_an_unknown_format_is_a_problem(api: tuple[TestClient, FakeHub, Settings]) -> None:
    client, hub, _ = api
    hub.feed(progress("d1", "done", "completed", progress=1.0))
    r = client.get("/v1/decks/d1?format=anki", headers=AUTH)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
