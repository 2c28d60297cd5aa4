"""The Anki export and the page beside a card on the real stack: Kafka broker, worker (writing
cards with the LLM simulator) and API. A PDF's deck goes to Anki twice with the same notes; its
pages come back as text, as a cached PNG and as the passage behind each card; a DOCX has text
but no image; another tenant sees none of it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pymupdf
import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack
from infra.process import wait_until
from services.cards.anki import BASIC_MODEL_ID, CLOZE_MODEL_ID, TO_CHECK
from tests.conftest import TOKEN, corpus_file, upload_until_a_card
from tests.integration.test_accounts import new_key, until
from tests.unit.test_anki import open_apkg

pytestmark = pytest.mark.kafka
HOMEWORK = "bee4750_hw01_julia-intro.pdf"  # 9 pages


@pytest.fixture(scope="module")
def homework(stack: Stack) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The homework PDF uploaded with basic and cloze cards, followed to its end: its id and deck."""
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        r = client.upload(corpus_file(HOMEWORK), options={"card_types": ["basic", "cloze"]})
        assert r.status_code == 202, r.text
        doc = str(r.json()["document_id"])
        events = list(client.events(doc, timeout_s=180))
        assert events[-1].event == "done" and events[-1].data["status"] == "completed", events[-1]
        cards = client.deck(doc).json()["cards"]
    assert cards and {c["type"] for c in cards} == {"basic", "cloze"}
    yield doc, cards


def answered(client: DeckstreamClient, path: str, **headers: str) -> httpx.Response:
    """The answer to `path` once the API has read the document's upload off the log (a 409
    `not-in-log` until then, for a moment after the upload)."""

    def ask() -> httpx.Response | None:
        r = client.http.get(path, headers=headers)
        return None if r.status_code == 409 and r.json()["type"].endswith("/not-in-log") else r

    return wait_until(ask, 30, interval=0.1, what=f"the API to know the upload behind {path}")


def test_the_deck_goes_to_anki_twice_as_the_same_notes(
    client: DeckstreamClient, homework: tuple[str, list[dict[str, Any]]]
) -> None:
    doc, cards = homework
    first, second = client.deck(doc, "apkg"), client.deck(doc, "apkg")
    assert first.status_code == 200 and first.headers["content-type"] == "application/apkg"
    assert 'filename="bee4750_hw01_julia-intro.apkg"' in first.headers["content-disposition"]
    one, two = open_apkg(first.content), open_apkg(second.content)

    assert [n.guid for n in one.notes] == [n.guid for n in two.notes]  # a re-import updates, never adds
    assert one.deck_ids == two.deck_ids and one.deck_names == ["deckstream::bee4750_hw01_julia-intro"]
    assert len(one.notes) == len(cards) == len({n.guid for n in one.notes})
    by_type = {"basic": BASIC_MODEL_ID, "cloze": CLOZE_MODEL_ID}
    assert [n.model_id for n in one.notes] == [by_type[c["type"]] for c in cards]
    for note, card in zip(one.notes, cards, strict=True):
        assert "source::bee4750_hw01_julia-intro.pdf" in note.tags
        assert f"page::{card['source']['page_label']}" in note.tags
        assert (TO_CHECK in note.tags) == card["needs_review"]
        assert note.cards >= 1  # Anki shows every note: a cloze keeps its {{c1::…}}
        if card["type"] == "cloze":
            assert "{{c1::" in note.fields[0]


def test_a_pdf_page_as_text_as_a_cached_image_and_behind_each_card(
    client: DeckstreamClient, stack: Stack, homework: tuple[str, list[dict[str, Any]]]
) -> None:
    doc, cards = homework
    page = answered(client, f"/v1/documents/{doc}/pages/2")
    assert page.status_code == 200, page.text
    body = page.json()
    assert (body["number"], body["pages_total"], body["method"]) == (2, 9, "text")
    assert "You should always set a seed" in body["text"]
    assert body["image_url"].endswith(f"/v1/documents/{doc}/pages/2/image")

    image = client.http.get(body["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"].startswith("private")
    assert pymupdf.Pixmap(image.content).width == 1200
    cached = stack.settings.blob_dir / "pages" / doc / "images" / "p000002-w1200-r1.png"
    assert cached.read_bytes() == image.content
    rendered_at = cached.stat().st_mtime_ns

    etag = image.headers["etag"]
    not_modified = client.http.get(body["image_url"], headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    again = client.http.get(body["image_url"])
    assert again.content == image.content and again.headers["etag"] == etag
    assert cached.stat().st_mtime_ns == rendered_at, "the page was rendered again"

    highlighted = 0
    for card in cards:
        source = client.http.get(f"/v1/decks/{doc}/cards/{card['card_id']}/source")
        assert source.status_code == 200, source.text
        got = source.json()
        assert got["page"] == card["source"]["page"] and got["image_url"].endswith("/image")
        for rect in got["rects"]:
            assert 0 <= rect["x"] <= rect["x"] + rect["width"] <= 1
            assert 0 <= rect["y"] <= rect["y"] + rect["height"] <= 1
        highlighted += bool(got["rects"]) and bool(got["passage"])
    # The simulator writes its cards from the pages' sentences: nearly every one is found.
    assert highlighted >= 0.8 * len(cards), f"{highlighted} of {len(cards)} cards highlighted"

    past_the_end = client.http.get(f"/v1/documents/{doc}/pages/10/image")
    assert past_the_end.status_code == 404 and past_the_end.json()["type"].endswith("/no-such-page")


def test_a_docx_page_has_text_but_no_image_and_another_tenant_sees_nothing(
    client: DeckstreamClient, stack: Stack
) -> None:
    doc, _ = upload_until_a_card(client, "bee4750_syllabus.docx")
    card = wait_until(lambda: client.deck(doc).json()["cards"], 30, what="a card in the deck")[0]
    page = answered(client, f"/v1/documents/{doc}/pages/1")
    assert page.status_code == 200, page.text
    assert page.json()["image_url"] is None and page.json()["text"].strip()

    image = client.http.get(f"/v1/documents/{doc}/pages/1/image")
    assert image.status_code == 404 and image.headers["content-type"] == "application/problem+json"
    assert image.json()["type"].endswith("/no-page-image"), image.text

    source = answered(client, f"/v1/decks/{doc}/cards/{card['card_id']}/source")
    assert source.status_code == 200 and source.json()["rects"] == [], source.text

    other = new_key(stack, "tenants", "add", f"school-{uuid.uuid4().hex[:6]}")
    until(stack, other, 200, "the other tenant's key to count")
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, other, timeout_s=30) as intruder:
        for path in (
            f"/v1/documents/{doc}/pages/1",
            f"/v1/documents/{doc}/pages/1/image",
            f"/v1/decks/{doc}/cards/{card['card_id']}/source",
        ):
            r = intruder.http.get(path)
            assert r.status_code == 404 and r.json()["type"].endswith("/not-found"), (path, r.text)
