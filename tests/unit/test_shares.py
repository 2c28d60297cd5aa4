"""Read-only share links: created by the deck's owner (the link shown once), listed with their
status, revoked; opened by anyone holding the link until it expires or is revoked, and every
opening recorded (at most once a minute per link)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.accounts.keys import issue_secret
from services.accounts.shares import SHARE_PREFIX
from services.events import topics
from services.events.models import ShareLinkCreated, ShareLinkRevoked, ShareLinkUsed, now_ms
from tests.unit.test_api import progress
from tests.unit.test_sessions import World, make


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    yield from make(tmp_path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def share(w: World, **body: object) -> dict[str, object]:
    """A link to A's deck, made by A signed in on the web page."""
    r = w.client.post(
        "/v1/auth/session", json={"username": "ada@example.org", "password": "correct horse battery"}
    )
    csrf = r.json()["csrf_token"]
    made = w.client.post(f"/v1/decks/{w.document}/shares", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    out: dict[str, object] = made.json()
    return out


def test_a_link_opens_the_deck_for_anyone_until_it_is_revoked(world: World) -> None:
    made = share(world, label="for the study group")
    url = str(made["url"])
    assert "/shared/dsl_" in url and made["status"] == "active" and made["label"] == "for the study group"
    token = url.rsplit("/", 1)[-1]
    world.client.cookies.clear()  # a stranger: no session, no key
    opened = world.client.get(f"/v1/shared/{token}")
    assert opened.status_code == 200, opened.text
    assert opened.json()["document_id"] == world.document and "cards" in opened.json()
    assert world.client.get(f"/v1/shared/{token}", params={"format": "csv"}).text.startswith("front,back")
    page = world.client.get(f"/shared/{token}")
    assert page.status_code == 200 and page.headers["referrer-policy"] == "no-referrer"
    used = [e for t, e in world.publisher.sent if isinstance(e, ShareLinkUsed)]
    assert len(used) == 1 and used[0].share_id == made["share_id"]  # two openings in a minute: one event
    # The owner lists it (never the link again) and revokes it.
    listed = world.client.get(f"/v1/decks/{world.document}/shares", headers=bearer(world.key_b))
    assert listed.status_code == 404  # tenant B: like a missing deck
    share(world)  # signs A in again, and makes a second link
    csrf = world.client.get("/v1/auth/session").json()["csrf_token"]
    rows = world.client.get(f"/v1/decks/{world.document}/shares").json()
    assert [r["url"] for r in rows] == [None, None] and len(rows) == 2
    path = f"/v1/decks/{world.document}/shares/{made['share_id']}"
    assert world.client.delete(path, headers={"X-CSRF-Token": csrf}).status_code == 204
    assert world.client.delete(path, headers={"X-CSRF-Token": csrf}).status_code == 204  # twice: done
    revoked = [e for t, e in world.publisher.sent if isinstance(e, ShareLinkRevoked)]
    assert len(revoked) == 1 and all(t == topics.ACCOUNTS.name for t, _ in world.publisher.sent)
    statuses = {
        r["share_id"]: r["status"] for r in world.client.get(f"/v1/decks/{world.document}/shares").json()
    }
    assert statuses[str(made["share_id"])] == "revoked"
    gone = world.client.get(f"/v1/shared/{token}")
    assert gone.status_code == 410 and "revoked" in gone.json()["detail"]


def test_an_expired_or_unknown_link_is_refused(world: World) -> None:
    issued = issue_secret(SHARE_PREFIX)
    old = ShareLinkCreated(
        tenant_id=world.tenant_a,
        document_id=world.document,
        generation=0,
        share_id=issued.key_id,
        sha256=issued.sha256,
        expires_at=now_ms() - 1,
        created_by="test",
    )
    world.hub.feed(old, topic=topics.ACCOUNTS.name)
    expired = world.client.get(f"/v1/shared/{issued.token}")
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    forged = issued.token[:-4] + "AAAA"  # the right id, the wrong secret
    assert world.client.get(f"/v1/shared/{forged}").status_code == 404
    assert world.client.get("/v1/shared/nonsense").status_code == 404


@pytest.mark.parametrize(
    "body", [{"expires_days": 91}, {"expires_days": 0}, {"generation": 7}, {"label": "a\nb"}]
)
def test_a_bad_share_request_is_refused_with_why(world: World, body: dict[str, object]) -> None:
    r = world.client.post(
        "/v1/auth/session", json={"username": "ada@example.org", "password": "correct horse battery"}
    )
    csrf = r.json()["csrf_token"]
    made = world.client.post(f"/v1/decks/{world.document}/shares", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code in (404, 422), made.text
    assert made.headers["content-type"] == "application/problem+json"
    assert not [e for _, e in world.publisher.sent if isinstance(e, ShareLinkCreated)]


def test_another_tenant_cannot_revoke_a_link_through_its_own_deck(world: World) -> None:
    made = share(world)
    world.client.cookies.clear()
    theirs = "e" * 32
    world.hub.feed(progress(theirs, "progress", "generating", tenant_id=world.tenant_b, filename="b.pdf"))
    r = world.client.delete(f"/v1/decks/{theirs}/shares/{made['share_id']}", headers=bearer(world.key_b))
    assert r.status_code == 404
    assert not [e for _, e in world.publisher.sent if isinstance(e, ShareLinkRevoked)]
