"""Edits and study on the real stack: a finished deck is edited (a card changed, one deleted, one
added, one mark accepted and one dismissed) and studied (three cards reviewed); the deck as
JSON and CSV and the due counts show it, and still do after an API restart (the edits and
reviews are rebuilt from cards.edits and cards.reviews). Another tenant gets 404 on every one of
these routes. Real broker, worker and API; the LLM simulator."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack
from infra.process import wait_until
from tests.conftest import TOKEN, restart_api
from tests.integration.test_accounts import new_key, until

pytestmark = pytest.mark.kafka
# About 340 words: five cards or so (15 a thousand words). The simulator makes every other card
# a cloze card quoting its sentence, and every other sentence leans on "the text" or "this
# chapter": those cloze cards are marked to check ("the question points at its source").
NOTES = """Mitochondria produce adenosine triphosphate during cellular respiration in most animal cells.
According to the text, photosynthesis converts sunlight into chemical energy inside the chloroplasts of green leaves.
Ribosomes assemble proteins from amino acids by reading messenger templates in the cytoplasm.
As described in this chapter, chlorophyll absorbs mostly red and blue wavelengths of sunlight and reflects green light.
Stomata regulate gas exchange between leaves and the surrounding atmosphere during daytime.
According to the text, enzymes accelerate biochemical reactions by lowering their activation energy barriers.
The nucleus stores chromosomes that carry the hereditary instructions of every organism.
As described in this chapter, lysosomes digest worn organelles with hydrolytic enzymes kept at an acidic internal pH.
The endoplasmic reticulum folds membrane proteins and synthesizes lipids for transport vesicles.
According to the text, the Golgi apparatus modifies proteins and packages them into secretory vesicles for export.
Cell membranes consist of a phospholipid bilayer with embedded transporter proteins.
As described in this chapter, osmosis moves water across semipermeable membranes toward regions of higher solute concentration.
Glycolysis splits glucose into two pyruvate molecules in the cytoplasm without oxygen.
According to the text, fermentation regenerates NAD when oxygen is scarce and yields lactate or ethanol as waste.
The Krebs cycle oxidizes acetyl groups and releases carbon dioxide inside mitochondria.
As described in this chapter, the electron transport chain pumps protons and drives ATP synthase by chemiosmosis.
Chloroplasts contain thylakoid stacks where the light dependent reactions take place.
According to the text, the Calvin cycle fixes atmospheric carbon dioxide into three carbon sugars using rubisco.
Cytoskeleton filaments maintain cellular shape and guide vesicles along microtubule tracks.
As described in this chapter, centrioles organize the spindle apparatus that separates chromosomes during mitosis.
Meiosis halves the chromosome number and shuffles alleles through crossing over.
According to the text, vacuoles store water and pigments and keep plant cells firm through turgor pressure.
Peroxisomes break down fatty acids and neutralize hydrogen peroxide with catalase.
As described in this chapter, prokaryotes lack a nucleus and keep their circular chromosome in a nucleoid region.
"""
OPTIONS = {"card_types": ["basic", "cloze"], "cards_per_chunk": 6}


def finished(client: DeckstreamClient, doc: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = client.status(doc)
        return status if status["status"] in ("completed", "partial", "failed", "cancelled") else None

    return wait_until(done, 120, interval=0.2, what=f"{doc} to finish")


def seen(
    client: DeckstreamClient, doc: str
) -> tuple[list[tuple[str, str, str, bool, list[str]]], list[list[str]]]:
    """What a user sees of the deck: its cards in JSON, and the CSV's rows."""
    cards = client.deck(doc).json()["cards"]
    rows = list(csv.reader(io.StringIO(client.deck(doc, "csv").text)))
    return [(c["card_id"], c["front"], c["back"], c["needs_review"], c["tags"]) for c in cards], rows


def counts(client: DeckstreamClient, doc: str) -> dict[str, Any]:
    decks = client.http.get("/v1/study").json()["decks"]
    found: dict[str, Any] = next(d for d in decks if d["document_id"] == doc)
    return found


def test_edits_and_reviews_show_in_the_deck_and_the_counts_and_survive_a_restart(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.api_url is not None
    notes = tmp_path / "cells.txt"
    notes.write_text(NOTES)
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        r = client.upload(notes, options=OPTIONS)
        assert r.status_code == 202, r.text
        doc = r.json()["document_id"]
        assert finished(client, doc)["status"] == "completed"
        cards = client.deck(doc).json()["cards"]
        marked = [c for c in cards if c["needs_review"]]
        plain = [c for c in cards if not c["needs_review"]]
        assert len(marked) >= 2 and len(plain) >= 3, [(c["front"], c["needs_review"]) for c in cards]

        changed, deleted, kept = plain[0], plain[1], plain[2]
        accepted, dismissed = marked[0], marked[1]
        r = client.http.patch(
            f"/v1/decks/{doc}/cards/{changed['card_id']}", json={"back": "They make ATP.", "tags": ["energy"]}
        )
        assert r.status_code == 200 and r.json()["back"] == "They make ATP.", r.text
        assert client.http.delete(f"/v1/decks/{doc}/cards/{deleted['card_id']}").status_code == 204
        r = client.http.post(
            f"/v1/decks/{doc}/cards",
            json={"front": "What do stomata regulate?", "back": "Gas exchange.", "after": changed["card_id"]},
        )
        assert r.status_code == 201, r.text
        added = r.json()
        assert added["source"] == changed["source"]
        for card, verdict in ((accepted, "accept"), (dismissed, "dismiss")):
            r = client.http.post(f"/v1/decks/{doc}/cards/{card['card_id']}/check", json={"verdict": verdict})
            assert r.status_code == 200 and r.json()["in_deck"] == (verdict == "accept"), r.text

        view, rows = seen(client, doc)
        by_id = {card_id: (front, back, review, tags) for card_id, front, back, review, tags in view}
        assert by_id[changed["card_id"]] == (changed["front"], "They make ATP.", False, ["energy"])
        assert by_id[added["card_id"]] == ("What do stomata regulate?", "Gas exchange.", False, [])
        assert by_id[accepted["card_id"]][2] is False
        assert deleted["card_id"] not in by_id and dismissed["card_id"] not in by_id
        order = [card_id for card_id, *_ in view]
        assert order[order.index(changed["card_id"]) + 1] == added["card_id"]  # next to the card chosen
        assert len(view) == len(cards) - 2 + 1
        csv_by_id = {row[6]: row for row in rows[1:]}
        assert csv_by_id.keys() == by_id.keys()
        assert (
            csv_by_id[changed["card_id"]][1] == "They make ATP." and csv_by_id[accepted["card_id"]][7] == ""
        )

        # Study three cards: they leave `new`; Good puts a card in learning, Easy past it.
        before = counts(client, doc)
        assert (before["cards"], before["new"], before["learning"]) == (len(view), len(view), 0)
        due: dict[str, int] = {}
        for card_id, rating in ((changed["card_id"], 3), (added["card_id"], 3), (kept["card_id"], 4)):
            r = client.http.post(f"/v1/decks/{doc}/cards/{card_id}/reviews", json={"rating": rating})
            assert r.status_code == 201, r.text
            due[card_id] = r.json()["due_at"]
            assert due[card_id] > r.json()["reviewed_at"]
        after = counts(client, doc)
        assert (after["new"], after["learning"], after["review_due"]) == (len(view) - 3, 2, 0)
        assert after["next_due_at"] == min(due.values())
        queue = client.http.get(f"/v1/decks/{doc}/study", params={"limit": 50}).json()["next"]
        assert {c["card_id"] for c in queue} == set(by_id) - set(due)  # the studied ones wait

        # Another tenant: 404 on every route, exactly as for a document that does not exist.
        other = new_key(stack, "tenants", "add", f"school {uuid.uuid4().hex[:8]}")
        until(stack, other, 200, "the other tenant's key to count")
        routes = [
            ("PATCH", f"cards/{changed['card_id']}", {"back": "theirs"}),
            ("DELETE", f"cards/{kept['card_id']}", None),
            ("POST", "cards", {"front": "What is theirs?", "back": "Nothing.", "after": kept["card_id"]}),
            ("POST", f"cards/{marked[-1]['card_id']}/check", {"verdict": "dismiss"}),
            ("GET", "edits", None),
            ("GET", "study", None),
            ("POST", f"cards/{kept['card_id']}/reviews", {"rating": 1}),
        ]
        for method, path, body in routes:
            r = httpx.request(
                method,
                f"{stack.api_url}/v1/decks/{doc}/{path}",
                json=body,
                headers={"Authorization": f"Bearer {other}"},
                timeout=10,
            )
            assert r.status_code == 404 and r.json()["detail"] == f"no document {doc}", (method, path, r.text)
        theirs = httpx.get(
            f"{stack.api_url}/v1/study", headers={"Authorization": f"Bearer {other}"}, timeout=10
        )
        assert doc not in {d["document_id"] for d in theirs.json()["decks"]}
        assert seen(client, doc) == (view, rows) and counts(client, doc) == after

    restart_api(stack)
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        assert seen(client, doc) == (view, rows)
        assert counts(client, doc) == after
        # The schedule was rebuilt from the reviews: this is the card's second review.
        r = client.http.post(f"/v1/decks/{doc}/cards/{kept['card_id']}/reviews", json={"rating": 3})
        assert r.status_code == 201 and r.json()["reviews"] == 2, r.text
