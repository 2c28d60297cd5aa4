"""Study with FSRS: a card's schedule is its reviews replayed (the same due dates as live, in any
arrival order, redelivered or not), what to study next and the due counts, and the routes with
a fake publisher and a feed fed by hand (a restart rebuilds every schedule from the events)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from fsrs import Card as FsrsCard
from fsrs import Rating, Scheduler

from services.cards.study import NEW, ReviewStore, StudyState, counts, ms, next_cards, schedule, unstudied
from services.events import topics
from services.events.models import CardReviewed
from services.storage.blobs import LocalBlobStore
from tests.unit.test_edits import AUTH, G1, Api, api, deck, feed_deck, restarted

__all__ = ["api"]  # the fixture, shared with test_edits
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE, DAY = 60_000, 86_400_000


def review(card_id: str, rating: int, at: datetime, by: str = "user:u1", g: int = 1) -> CardReviewed:
    return CardReviewed(
        tenant_id="default",
        document_id="d1",
        generation=g,
        card_id=card_id,
        rating=rating,
        reviewed_by=by,
        occurred_at=ms(at),
    )


def test_a_schedule_replayed_gives_the_due_dates_the_live_reviews_gave() -> None:
    # Live: the scheduler steps through the reviews one by one, as the person made them.
    scheduler, live = Scheduler(enable_fuzzing=False), FsrsCard(card_id=1, due=T0)
    at, made, due_dates = T0, [], []
    for rating in (3, 3, 1, 2, 4, 3):
        live, _ = scheduler.review_card(live, Rating(rating), review_datetime=at)
        made.append(review("a1", rating, at))
        due_dates.append(ms(live.due))
        at = live.due + timedelta(hours=1)  # studied an hour after it fell due
    # Replayed from the log after each review, and from a shuffled log with redeliveries in it.
    assert [schedule(made[: i + 1]).due_at for i in range(len(made))] == due_dates
    shuffled = made * 2
    random.Random(7).shuffle(shuffled)
    store = ReviewStore()
    assert sum(store.apply(r) for r in shuffled) == len(made)  # the redeliveries change nothing
    rebuilt = schedule(store.of("default", "user:u1", "d1"))
    assert (rebuilt.due_at, rebuilt.reviews, rebuilt.state) == (due_dates[-1], 6, "review")
    assert rebuilt.last_review_at == made[-1].occurred_at


def test_each_person_has_a_schedule_of_their_own() -> None:
    store = ReviewStore()
    store.apply(review("a1", 3, T0, by="user:u1"))
    assert len(store.of("default", "user:u1", "d1")) == 1
    assert store.of("default", "key:k2", "d1") == [] and store.of("other", "user:u1", "d1") == []


def test_due_cards_come_first_the_longest_overdue_first_then_new_ones_in_deck_order() -> None:
    now = ms(T0)
    cards = [replace(G1[0], card_id=f"c{i}") for i in range(5)]
    of = {
        "c0": StudyState("review", now - DAY, reviews=3),  # overdue a day
        "c1": StudyState("learning", now + 10 * MINUTE, reviews=1),  # in ten minutes: waits
        "c3": StudyState("relearning", now - MINUTE, reviews=4),  # overdue a minute
    }
    assert [(c.card_id, s.state) for c, s in next_cards(cards, of, now, limit=10)] == [
        ("c0", "review"),
        ("c3", "relearning"),
        ("c2", "new"),
        ("c4", "new"),
    ]
    assert [c.card_id for c, _ in next_cards(cards, of, now, limit=3)] == ["c0", "c3", "c2"]
    assert counts(cards, of, now) == {
        "cards": 5,
        "new": 2,
        "learning": 2,
        "review_due": 1,
        "due_now": 2,
        "next_due_at": now - DAY,
    }
    # A deck never studied is counted without loading it: the same figures.
    assert counts(cards, {}, now) == unstudied(5) and schedule([]) == NEW


def study(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get("/v1/decks/d1/study", headers=AUTH, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def rate(client: TestClient, card_id: str, rating: int) -> dict[str, Any]:
    r = client.post(f"/v1/decks/d1/cards/{card_id}/reviews", headers=AUTH, json={"rating": rating})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_reviews_move_cards_out_of_new_and_survive_a_restart(api: Api) -> None:
    c = api.client
    before = c.get("/v1/study", headers=AUTH).json()
    assert [(d["document_id"], d["new"], d["due_now"]) for d in before["decks"]] == [("d1", 3, 0)]
    assert [x["card_id"] for x in study(c)["next"]] == ["a1", "b1", "c1"]

    again, good = rate(c, "a1", 1), rate(c, "b1", 3)
    assert again["state"] == "learning" and again["reviews"] == 1
    assert again["due_at"] - again["reviewed_at"] == MINUTE  # Again: the first learning step
    assert good["due_at"] - good["reviewed_at"] == 10 * MINUTE  # Good: the second
    after = c.get("/v1/study", headers=AUTH).json()["total"]
    assert (after["new"], after["learning"], after["review_due"], after["next_due_at"]) == (
        1,
        2,
        0,
        again["due_at"],
    )
    # The studied cards wait until due: the next card is the one not studied yet.
    assert [x["card_id"] for x in study(c)["next"]] == ["c1"]
    assert study(c, limit=1)["next"][0]["study"] == {
        "state": "new",
        "due_at": None,
        "last_review_at": None,
        "reviews": 0,
        "stability": None,
        "difficulty": None,
    }
    reviews = [e for topic, e in api.publisher.sent if topic == topics.REVIEWS.name]
    assert [(e.card_id, e.rating, e.reviewed_by) for e in reviews] == [  # type: ignore[attr-defined]
        ("a1", 1, "key:bootstrap"),
        ("b1", 3, "key:bootstrap"),
    ]
    with restarted(api) as client:
        assert client.get("/v1/study", headers=AUTH).json()["total"] == after
        assert rate(client, "a1", 3)["reviews"] == 2  # the history was rebuilt: this is its second


def test_deleted_cards_are_not_studied_and_edited_ones_keep_their_reviews(api: Api) -> None:
    c = api.client
    rate(c, "a1", 3)
    assert (
        c.patch("/v1/decks/d1/cards/a1", headers=AUTH, json={"back": "Sugar from light."}).status_code == 200
    )
    assert c.delete("/v1/decks/d1/cards/c1", headers=AUTH).status_code == 204
    body = study(c)
    assert (body["cards"], body["new"], body["learning"]) == (2, 1, 1)
    assert [x["card_id"] for x in body["next"]] == ["b1"]
    assert rate(c, "a1", 3)["reviews"] == 2  # the edited card's history goes on
    gone = c.post("/v1/decks/d1/cards/c1/reviews", headers=AUTH, json={"rating": 3})
    assert gone.status_code == 404 and gone.json()["type"].endswith("/no-such-card")


def test_reviews_of_an_older_generation_count_for_the_cards_they_carry_over_to(api: Api) -> None:
    c = api.client
    first = rate(c, "a1", 3)
    g2 = [replace(x, card_id=x.card_id[0] + "2") for x in G1]
    feed_deck(api.hub, LocalBlobStore(api.settings.blob_dir), cards=g2, g=2)
    api.hub.views.promoted["d1"] = 2  # as a GenerationPromoted would
    assert [x["card_id"] for x in deck(c)["cards"]] == ["a2", "b2", "c2"]
    body = study(c)
    assert (body["generation"], body["new"], body["learning"]) == (2, 2, 1)
    assert body["next_due_at"] == first["due_at"]


def test_a_rating_out_of_range_or_an_unknown_card_is_refused_and_nothing_is_recorded(api: Api) -> None:
    for body in ({"rating": 0}, {"rating": 5}, {"rating": "good"}, {}):
        r = api.client.post("/v1/decks/d1/cards/a1/reviews", headers=AUTH, json=body)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    r = api.client.post("/v1/decks/d1/cards/nope/reviews", headers=AUTH, json={"rating": 3})
    assert r.status_code == 404 and "no card nope" in r.json()["detail"]
    assert api.client.get("/v1/decks/d1/study", headers=AUTH, params={"limit": 0}).status_code == 422
    assert api.publisher.sent == []


def test_another_tenant_sees_none_of_it(api: Api) -> None:
    rate(api.client, "a1", 3)
    theirs = {"Authorization": f"Bearer {api.other}"}
    assert api.client.get("/v1/study", headers=theirs).json()["decks"] == []
    for method, path, body in (("GET", "study", None), ("POST", "cards/a1/reviews", {"rating": 3})):
        r = api.client.request(method, f"/v1/decks/d1/{path}", headers=theirs, json=body)
        assert r.status_code == 404 and r.json()["detail"] == "no document d1", (path, r.text)
    assert len([e for _, e in api.publisher.sent]) == 1
