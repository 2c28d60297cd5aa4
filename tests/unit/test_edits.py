"""People's edits of a deck: the overlay (edit, delete, add, accept, dismiss; a redelivered or
reordered edit changes nothing), the carry-over to a new generation (placed and unplaced), the
rules a card must pass (422) and the routes, with a fake publisher and a feed fed by hand."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.accounts import admin
from services.accounts.store import KeyStore
from services.cards.edits import (
    MAX_BACK_CHARS,
    MAX_FRONT_CHARS,
    DocumentEdits,
    Overlaid,
    check_card,
    clean_tags,
    match_cards,
    overlay,
)
from services.documents.decks import store_chunk_cards, store_deck
from services.domain import Card
from services.errors import InputRejected
from services.events import topics
from services.events.models import (
    CardAdded,
    CardChecked,
    CardDeleted,
    CardEdit,
    CardEdited,
    DeckAssembled,
    DocumentUploaded,
    Event,
)
from services.settings import Settings
from services.storage.blobs import LocalBlobStore
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub, progress

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARK = "the question points at its source, not at what it asks about"


def card(card_id: str, chunk: int, page: int, front: str, back: str = "", **kw: Any) -> Card:
    kind = "cloze" if "{{c" in front else "basic"
    return Card(card_id, kind, front, back, "bio.pdf", page, str(page), ("Cells",), chunk, "v1", **kw)


G1 = [
    card("a1", 0, 1, "What is photosynthesis?", "Light turned into chemical energy."),
    card(
        "b1",
        0,
        1,
        "What does the text say about chlorophyll?",
        "It absorbs light.",
        needs_review=True,
        review=MARK,
    ),
    card("c1", 1, 2, "{{c1::Mitochondria}} make ATP.", "Mitochondria"),
]


def ids(g: int = 1) -> dict[str, Any]:
    return {"tenant_id": "default", "document_id": "d1", "generation": g}


def edit(card_id: str, at: int, g: int = 1, **fields: Any) -> CardEdited:
    return CardEdited(**ids(g), card_id=card_id, edited_by="key:k1", occurred_at=at, **fields)


def delete(card_id: str, at: int, g: int = 1) -> CardDeleted:
    return CardDeleted(**ids(g), card_id=card_id, edited_by="key:k1", occurred_at=at)


def check(card_id: str, verdict: str, at: int, g: int = 1) -> CardChecked:
    return CardChecked(**ids(g), card_id=card_id, verdict=verdict, edited_by="key:k1", occurred_at=at)


def add(card_id: str, at: int, g: int = 1, after: str | None = None, page: int = 1, **kw: Any) -> CardAdded:
    fields: dict[str, Any] = {"type": "basic", "front": "What is a stoma?", "back": "A leaf pore."} | kw
    return CardAdded(
        **ids(g),
        card_id=card_id,
        page=page,
        page_label=str(page),
        section=["Leaves"],
        chunk_index=0,
        after_card_id=after,
        edited_by="user:u1",
        occurred_at=at,
        **fields,
    )


def served(events: list[CardEdit], base: list[Card] = G1, g: int = 1) -> Overlaid:
    """Generation g's deck (base) with the events applied; generation 1's cards are G1."""
    store = DocumentEdits()
    for e in events:
        store.apply(e)
    return overlay(base, g, store.up_to(g), {1: G1}.__getitem__, "bio.pdf")


def fronts(cards: list[Card]) -> list[str]:
    return [c.front for c in cards]


# The overlay


def test_an_edit_changes_the_fields_given_and_keeps_the_rest() -> None:
    deck = served([edit("a1", 10, back="Light made into sugar.", tags=["botany"])])
    a = deck.cards[0]
    assert (a.front, a.back, a.tags, a.type, a.page) == (
        "What is photosynthesis?",
        "Light made into sugar.",
        ("botany",),
        "basic",
        1,
    )
    later = served([edit("a1", 10, back="Light made into sugar."), edit("a1", 20, back="Sugar from light.")])
    assert later.cards[0].back == "Sugar from light."  # the latest edit of a field wins


def test_a_deleted_card_is_gone_and_an_added_card_follows_the_card_it_was_added_next_to() -> None:
    deck = served(
        [delete("c1", 10), add("u1", 20, after="a1"), add("u2", 30, after="a1", front="What is xylem?")]
    )
    assert [c.card_id for c in deck.cards] == ["a1", "u1", "u2", "b1"]
    mine = deck.cards[1]
    assert (mine.page, mine.section, mine.file, mine.prompt_version) == (1, ("Leaves",), "bio.pdf", "person")
    # Added by page (no card next to it): after the last card on or before that page.
    by_page = served([add("u3", 10, page=2, front="What is ATP?", back="The cell's energy currency.")])
    assert [c.card_id for c in by_page.cards] == ["a1", "b1", "c1", "u3"]
    # An added card outlives the deletion of the card it was added next to.
    assert [c.card_id for c in served([add("u1", 10, after="a1"), delete("a1", 20)]).cards] == [
        "u1",
        "b1",
        "c1",
    ]


def test_accept_keeps_a_marked_card_without_its_mark_and_dismiss_takes_it_out() -> None:
    accepted = served([check("b1", "accept", 10)]).cards
    assert [(c.card_id, c.needs_review, c.review) for c in accepted][1] == ("b1", False, None)
    dismissed = served([check("b1", "dismiss", 10)]).cards
    assert [c.card_id for c in dismissed] == ["a1", "c1"]


def test_a_redelivered_or_reordered_edit_changes_nothing() -> None:
    events = [
        edit("a1", 10, front="What is photosynthesis, in short?"),
        delete("c1", 20),
        add("u1", 30, after="a1"),
    ]
    store = DocumentEdits()
    assert [store.apply(e) for e in events] == [True, True, True]
    assert [store.apply(e) for e in events] == [False, False, False]  # redelivered: seen
    assert len(store) == 3
    once = served(events).cards
    assert served(list(reversed(events)) + events).cards == once  # arrival order does not matter
    assert fronts(once) == ["What is photosynthesis, in short?", "What is a stoma?", G1[1].front]


def test_edits_on_a_card_that_is_gone_are_listed_not_applied() -> None:
    deck = served([delete("a1", 10), edit("a1", 20, back="too late")])
    assert [c.card_id for c in deck.cards] == ["b1", "c1"]
    assert [(u.event.card_id, u.reason) for u in deck.unplaced] == [("a1", "the card was deleted before")]


# The carry-over to a new generation

G2 = [  # the same spans, new ids; chunk 0 page 1 has its cards the other way round
    card(
        "b2",
        0,
        1,
        "What does the text say about chlorophyll?",
        "It absorbs red and blue light.",
        needs_review=True,
        review=MARK,
    ),
    card("a2", 0, 1, "What is photosynthesis?", "Light turned into chemical energy."),
    card("c2", 1, 2, "{{c1::Mitochondria}} make ATP.", "Mitochondria"),
]


def test_the_matching_pairs_cards_of_a_span_by_their_text() -> None:
    matching = match_cards(G1, G2, 2)
    assert matching.to == {"a1": "a2", "b1": "b2", "c1": "c2"}
    fewer = match_cards(G1, [G2[0], G2[2]], 2)  # chunk 0 page 1 kept one card: the more alike takes it
    assert fewer.to == {"b1": "b2", "c1": "c2"}
    assert fewer.why_not == {
        "a1": "generation 2 has fewer cards on chunk 0, page 1, and more alike ones took them"
    }
    moved = match_cards(G1, [replace(G2[2], page=3)], 2)  # chunk 1's card cites another page now
    assert moved.why_not["c1"] == "generation 2 has no card on chunk 1, page 2"


def test_edits_carry_over_to_the_card_with_the_same_source_and_what_cannot_is_unplaced() -> None:
    events = [
        edit("a1", 10, back="Sugar from light."),
        delete("c1", 20),
        add("u1", 30, after="a1"),
        edit("u1", 40, tags=["mine"]),
    ]
    deck = served(events, base=G2, g=2)
    assert [c.card_id for c in deck.cards] == ["b2", "a2", "u1"]
    assert deck.cards[1].back == "Sugar from light."
    assert deck.cards[2].tags == ("mine",)  # the added card keeps its id: its edits need no match
    assert [(p.event.card_id, p.card_id) for p in deck.placed] == [
        ("a1", "a2"),
        ("c1", "c2"),
        ("u1", "u1"),
        ("u1", "u1"),
    ]
    # Generation 3 lost chunk 1's card and has one card fewer on chunk 0, page 1.
    g3 = [card("a3", 0, 1, "What is photosynthesis?", "Light turned into chemical energy.")]
    lost = served([edit("b1", 10, back="It absorbs light."), delete("c1", 20)], base=g3, g=3)
    assert [c.card_id for c in lost.cards] == ["a3"]
    assert [(u.event.card_id, u.reason) for u in lost.unplaced] == [
        ("b1", "generation 3 has fewer cards on chunk 0, page 1, and more alike ones took them"),
        ("c1", "generation 3 has no card on chunk 1, page 2"),
    ]


def test_edits_carry_forward_only() -> None:
    deck = served([edit("a2", 10, g=2, back="made on generation 2")], base=G1, g=1)
    assert deck.cards == G1 and deck.placed == [] and deck.unplaced == []


def test_a_carried_accept_needs_the_card_to_read_as_it_was_accepted() -> None:
    # b2's back differs from b1's: generation 2's wording is not checked yet, so the mark stays.
    reworded = served([check("b1", "accept", 10)], base=G2, g=2)
    assert reworded.cards[0].needs_review and [u.reason for u in reworded.unplaced] == [
        "the card reads otherwise now: check it again"
    ]
    # Once the person's own back is carried over too, the card reads as they accepted it.
    own = served([edit("b1", 5, back="It absorbs light."), check("b1", "accept", 10)], base=G2, g=2)
    assert not own.cards[0].needs_review and own.unplaced == []
    same = [replace(G2[0], back=G1[1].back), *G2[1:]]
    assert not served([check("b1", "accept", 10)], base=same, g=2).cards[0].needs_review


# The rules a card must pass


@pytest.mark.parametrize(
    ("kind", "front", "back", "reason"),
    [
        ("basic", "   ", "an answer", "the front is empty"),
        ("basic", "x" * (MAX_FRONT_CHARS + 1), "an answer", f"more than {MAX_FRONT_CHARS}"),
        ("basic", "What is ATP?", "x" * (MAX_BACK_CHARS + 1), f"more than {MAX_BACK_CHARS}"),
        ("basic", "What is ATP?", " ", "a basic card needs an answer"),
        ("cloze", "Mitochondria make ATP.", "", "a cloze card needs a cloze deletion"),
        ("cloze", "{{c1:: }} make ATP.", "", "a cloze card needs a cloze deletion"),
        ("cloze", "{{c1::Mitochondria}} make {{c2::ATP.", "", "not closed"),
        ("basic", "{{c1::Mitochondria}} make ATP.", "x", "make it a cloze card"),
    ],
)
def test_a_card_nobody_could_study_is_refused_with_the_reason(
    kind: str, front: str, back: str, reason: str
) -> None:
    with pytest.raises(InputRejected, match=reason) as refused:
        check_card(kind, front, back)
    assert (refused.value.http_status, refused.value.code) == (422, "invalid-card")


def test_tags_are_words_without_repeats() -> None:
    assert clean_tags([" bio ", "cells", "bio"]) == ["bio", "cells"]
    many = [str(i) for i in range(21)]
    for bad, reason in ((["two words"], "without spaces"), ([""], "without spaces"), (many, "at most 20")):
        with pytest.raises(InputRejected, match=reason):
            clean_tags(bad)


# The routes


@dataclass
class Api:
    client: TestClient
    publisher: FakePublisher
    hub: FakeHub
    settings: Settings
    other: str  # another tenant's key


def feed_deck(
    hub: FakeHub, blobs: LocalBlobStore, doc: str = "d1", cards: list[Card] = G1, g: int = 1
) -> None:
    """A finished generation of `doc` (tenant "default"): its upload, its cards and deck, done."""
    hub.feed(
        DocumentUploaded(
            **(ids(g) | {"document_id": doc}),
            filename="bio.pdf",
            kind="pdf",
            size=1,
            sha256="0",
            blob_uri="blob://x",
            card_types=["basic", "cloze"],
            cards_per_chunk=3,
        ),
        topic=topics.UPLOADED.name,
    )
    for chunk in sorted({c.chunk_index for c in cards}):
        store_chunk_cards(blobs, doc, g, chunk, [c for c in cards if c.chunk_index == chunk])
    uri = store_deck(blobs, doc, g, "completed", cards)
    assembled = DeckAssembled(
        **(ids(g) | {"document_id": doc}),
        status="completed",
        deck_uri=uri,
        cards=len(cards),
        chunks_total=2,
        chunks_failed=0,
        failures=[],
    )
    hub.feed(assembled, topic=topics.DECKS.name)
    hub.feed(progress(doc, generation=g, kind="done", status="completed", filename="bio.pdf", pages_total=2))


def other_tenant(hub: FakeHub, settings: Settings) -> str:
    issued = admin.create_tenant(KeyStore(settings.tenant), "school B", by="test")
    for event in issued.events:
        hub.feed(event, topic=topics.ACCOUNTS.name)
    return issued.key.token


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    publisher, hub = FakePublisher(), FakeHub()
    feed_deck(hub, LocalBlobStore(settings.blob_dir))
    other = other_tenant(hub, settings)
    with TestClient(create_app(settings, publisher=publisher, feed=hub)) as client:
        yield Api(client, publisher, hub, settings, other)


@contextmanager
def restarted(api: Api) -> Iterator[TestClient]:
    """A new API process on the same log: the deck's records and every event the first one published."""
    hub = FakeHub()
    feed_deck(hub, LocalBlobStore(api.settings.blob_dir))
    for topic, event in api.publisher.sent:
        hub.feed(event, topic=topic)
    with TestClient(create_app(api.settings, publisher=FakePublisher(), feed=hub)) as client:
        yield client


def deck(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/decks/d1", headers=AUTH, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def sent(api: Api) -> list[Event]:
    return [e for topic, e in api.publisher.sent if topic == topics.EDITS.name]


def test_edits_show_in_the_deck_as_json_and_csv_and_survive_a_restart(api: Api) -> None:
    c = api.client
    r = c.patch("/v1/decks/d1/cards/a1", headers=AUTH, json={"back": "Sugar from light.", "tags": ["botany"]})
    assert r.status_code == 200, r.text
    assert (r.json()["back"], r.json()["tags"], r.json()["front"]) == (
        "Sugar from light.",
        ["botany"],
        G1[0].front,
    )
    assert c.delete("/v1/decks/d1/cards/c1", headers=AUTH).status_code == 204
    r = c.post(
        "/v1/decks/d1/cards",
        headers=AUTH,
        json={"front": "What is a stoma?", "back": "A leaf pore.", "after": "a1"},
    )
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["card_id"].startswith("u") and added["source"] == {
        "file": "bio.pdf",
        "page": 1,
        "page_label": "1",
        "section": ["Cells"],
    }
    r = c.post("/v1/decks/d1/cards/b1/check", headers=AUTH, json={"verdict": "accept"})
    assert (
        r.status_code == 200 and r.json()["in_deck"] is True and r.json()["card"]["needs_review"] is False
    ), r.text

    def what_a_user_sees(client: TestClient) -> tuple[list[tuple[str, str, bool]], list[list[str]]]:
        body = deck(client)
        rows = list(
            csv.reader(io.StringIO(client.get("/v1/decks/d1", headers=AUTH, params={"format": "csv"}).text))
        )
        return [(x["card_id"], x["back"], x["needs_review"]) for x in body["cards"]], rows

    cards, rows = what_a_user_sees(c)
    assert cards == [
        ("a1", "Sugar from light.", False),
        (added["card_id"], "A leaf pore.", False),
        ("b1", "It absorbs light.", False),
    ]
    assert [r[0] for r in rows[1:]] == ["What is photosynthesis?", "What is a stoma?", G1[1].front]
    assert deck(c)["quality"]["needs_review"] == 0
    # Each edit is an event on cards.edits, by the key that made it.
    assert [(type(e).__name__, getattr(e, "edited_by", "")) for e in sent(api)] == [
        ("CardEdited", "key:bootstrap"),
        ("CardDeleted", "key:bootstrap"),
        ("CardAdded", "key:bootstrap"),
        ("CardChecked", "key:bootstrap"),
    ]
    with restarted(api) as client:
        assert what_a_user_sees(client) == (cards, rows)


def test_a_dismissed_card_leaves_the_deck(api: Api) -> None:
    r = api.client.post("/v1/decks/d1/cards/b1/check", headers=AUTH, json={"verdict": "dismiss"})
    assert r.status_code == 200 and r.json() == {
        "card_id": "b1",
        "verdict": "dismiss",
        "in_deck": False,
        "card": None,
    }
    assert [x["card_id"] for x in deck(api.client)["cards"]] == ["a1", "c1"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "says"),
    [
        ("PATCH", "cards/a1", {"front": " "}, 422, "invalid-card", "the front is empty"),
        (
            "PATCH",
            "cards/a1",
            {"back": "x" * (MAX_BACK_CHARS + 1)},
            422,
            "invalid-card",
            "characters, more than",
        ),
        ("PATCH", "cards/a1", {"type": "cloze"}, 422, "invalid-card", "needs a cloze deletion"),
        ("PATCH", "cards/a1", {}, 422, "invalid-card", "nothing to change"),
        ("PATCH", "cards/a1", {"type": "essay"}, 422, "invalid-request", "body.type"),
        ("PATCH", "cards/a1", {"tags": ["two words"]}, 422, "invalid-card", "without spaces"),
        ("PATCH", "cards/nope", {"back": "x"}, 404, "no-such-card", "no card nope"),
        ("PATCH", "cards/a1?generation=7", {"back": "x"}, 404, "not-found", "no generation 7"),
        ("DELETE", "cards/nope", None, 404, "no-such-card", "no card nope"),
        ("POST", "cards/a1/check", {"verdict": "accept"}, 409, "not-marked", "not marked to check"),
        ("POST", "cards/b1/check", {"verdict": "maybe"}, 422, "invalid-request", "body.verdict"),
        ("POST", "cards/nope/check", {"verdict": "accept"}, 404, "no-such-card", "no card nope"),
        ("POST", "cards", {"front": "What is a stoma?", "back": "A pore."}, 422, "invalid-card", "say where"),
        (
            "POST",
            "cards",
            {"front": "What is a stoma?", "back": "A pore.", "page": 9},
            422,
            "invalid-card",
            "has 2 pages",
        ),
        (
            "POST",
            "cards",
            {"front": "What is a stoma?", "back": "A pore.", "after": "nope"},
            404,
            "no-such-card",
            "nope",
        ),
        (
            "POST",
            "cards",
            {"type": "cloze", "front": "Stomata are pores.", "page": 1},
            422,
            "invalid-card",
            "cloze deletion",
        ),
    ],
)
def test_what_cannot_be_done_is_refused_with_the_reason_and_publishes_nothing(
    api: Api, method: str, path: str, body: dict[str, Any] | None, status: int, code: str, says: str
) -> None:
    r = api.client.request(method, f"/v1/decks/d1/{path}", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(f"/{code}") and says in r.json()["detail"], r.json()
    assert sent(api) == []


def test_a_deleted_card_cannot_be_edited_or_deleted_again(api: Api) -> None:
    assert api.client.delete("/v1/decks/d1/cards/a1", headers=AUTH).status_code == 204
    assert api.client.delete("/v1/decks/d1/cards/a1", headers=AUTH).status_code == 404
    assert api.client.patch("/v1/decks/d1/cards/a1", headers=AUTH, json={"back": "x"}).status_code == 404


def test_a_card_added_by_page_cites_it_and_edits_are_listed_by_generation(api: Api) -> None:
    body = {
        "type": "cloze",
        "front": "{{c1::Stomata}} are leaf pores.",
        "page": 2,
        "section": ["Leaves"],
        "tags": ["mine"],
    }
    r = api.client.post("/v1/decks/d1/cards", headers=AUTH, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == {"file": "bio.pdf", "page": 2, "page_label": "2", "section": ["Leaves"]}
    assert r.json()["back"] == "" and r.json()["type"] == "cloze"
    listed = api.client.get("/v1/decks/d1/edits", headers=AUTH).json()
    ((placed,),) = [listed["placed"]]
    assert (placed["kind"], placed["applied_to"], placed["by"], placed["changes"]["page"]) == (
        "add",
        r.json()["card_id"],
        "key:bootstrap",
        2,
    )
    assert listed["unplaced"] == [] and listed["generation"] == 1


def test_edits_carry_over_when_a_new_generation_is_served(api: Api) -> None:
    c = api.client
    assert (
        c.patch("/v1/decks/d1/cards/a1", headers=AUTH, json={"back": "Sugar from light."}).status_code == 200
    )
    assert c.delete("/v1/decks/d1/cards/c1", headers=AUTH).status_code == 204
    g2 = [replace(x, card_id=x.card_id[0] + "2") for x in G1[:2]]  # chunk 1 gave no card this time
    feed_deck(api.hub, LocalBlobStore(api.settings.blob_dir), cards=g2, g=2)
    # Generation 1 still serves; generation 2 shows the carried edits once asked for (or promoted).
    assert [x["card_id"] for x in deck(c)["cards"]] == ["a1", "b1"]
    assert [(x["card_id"], x["back"]) for x in deck(c, generation=2)["cards"]] == [
        ("a2", "Sugar from light."),
        ("b2", "It absorbs light."),
    ]
    listed = c.get("/v1/decks/d1/edits", headers=AUTH, params={"generation": 2}).json()
    assert [(p["card_id"], p["applied_to"]) for p in listed["placed"]] == [("a1", "a2")]
    assert [(u["kind"], u["card_id"], u["reason"]) for u in listed["unplaced"]] == [
        ("delete", "c1", "generation 2 has no card on chunk 1, page 2")
    ]


def test_another_tenant_gets_404_on_every_edit_route(api: Api) -> None:
    theirs = {"Authorization": f"Bearer {api.other}"}
    for method, path, body in (
        ("PATCH", "cards/a1", {"back": "x"}),
        ("DELETE", "cards/a1", None),
        ("POST", "cards", {"front": "What is a stoma?", "back": "A pore.", "page": 1}),
        ("POST", "cards/b1/check", {"verdict": "dismiss"}),
        ("GET", "edits", None),
    ):
        r = api.client.request(method, f"/v1/decks/d1/{path}", headers=theirs, json=body)
        missing = api.client.request(method, f"/v1/decks/nope/{path}", headers=theirs, json=body)
        assert r.status_code == 404 and r.json()["detail"] == "no document d1", (method, path, r.text)
        assert missing.json()["detail"] == "no document nope"
    assert sent(api) == [] and len(deck(api.client)["cards"]) == 3
