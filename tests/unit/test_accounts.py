"""Tenants and API keys: the key format, the key store rebuilt from the accounts events, what an
operator may do, and what the API answers to a key (no Kafka here: the events go through Avro
bytes as on the topic; tests/integration/test_accounts.py runs the CLI on the real broker)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.accounts import admin
from services.accounts.keys import PREFIX, hash_key, issue_key, key_id_of
from services.accounts.store import Denied, KeyStore, Verified
from services.errors import Refused
from services.events import topics
from services.events.models import AccountEvent, ApiKeyCreated, ApiKeyRevoked, Event, decode, encode
from services.settings import Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub

NOW = 1_750_000_000_000
BY = "cli:test"


def through_the_log(store: KeyStore, events: list[AccountEvent]) -> None:
    """Apply events as a reader of the topic would: from their Avro bytes."""
    for event in events:
        assert store.apply(decode(encode(event)))


def forge(key_id: str) -> str:
    """A well-formed key with a real key id and another secret."""
    return f"{PREFIX}{key_id}_{issue_key().token.split('_', 2)[2]}"


def a_tenant(store: KeyStore, name: str = "acme", **kw: object) -> admin.Issued:
    issued = admin.create_tenant(store, name, by=BY, at_ms=NOW, **kw)  # type: ignore[arg-type]
    through_the_log(store, issued.events)
    return issued


def test_a_key_is_dsk_a_public_id_and_a_32_byte_secret_and_only_its_sha256_is_kept() -> None:
    key = issue_key()
    assert re.fullmatch(r"dsk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", key.token), key.token
    assert key_id_of(key.token) == key.key_id == key.token.split("_")[1]
    assert key.sha256 == hashlib.sha256(key.token.encode()).hexdigest() == hash_key(key.token)
    assert key.token not in repr(key) and key.token.split("_", 2)[2] not in repr(key)
    assert issue_key().token != key.token and issue_key().key_id != key.key_id
    for not_a_key in ("", "dsk_", f"dsk_{key.key_id}", f"dsk_{key.key_id}_", "dsk_short_secret", TOKEN):
        assert key_id_of(not_a_key) is None, not_a_key


def test_a_new_tenants_key_authenticates_as_that_tenant() -> None:
    store = KeyStore("default")
    issued = a_tenant(store, "Acme School", label="teacher")
    assert issued.key.token.startswith(PREFIX)
    assert store.authenticate(issued.key.token, NOW) == (issued.tenant_id, issued.key.key_id)
    assert store.check(issued.key.token, NOW) == Verified(issued.tenant_id, issued.key.key_id)
    tenant = store.tenant("acme school")  # by name, whatever the case; and by id
    assert tenant is not None and tenant is store.tenant(issued.tenant_id) and tenant.name == "Acme School"
    assert [t.tenant_id for t in store.tenants()] == ["default", issued.tenant_id]  # default: implicit
    (key,) = store.keys(issued.tenant_id)
    assert (key.label, key.created_by, key.expires_at) == ("teacher", BY, None)


def test_a_wrong_secret_an_unknown_id_and_the_bootstrap_token_are_not_keys() -> None:
    store = KeyStore("default")
    issued = a_tenant(store)
    forged = forge(issued.key.key_id)
    unknown = issue_key().token
    for token in (forged, unknown, TOKEN, "", issued.key.token + "x", issued.key.token.upper()):
        assert store.authenticate(token, NOW) is None, token
        assert store.check(token, NOW) == Denied("unknown")  # nothing said about the key it names


def test_a_revoked_key_is_refused_and_says_so_only_to_its_holder() -> None:
    store = KeyStore("default")
    issued = a_tenant(store)
    second = admin.add_key(store, "acme", by=BY, label="script", at_ms=NOW)
    through_the_log(store, second.events)
    revoked = admin.revoke_key(store, issued.key.key_id, by=BY, reason="left the school", at_ms=NOW + 1)
    through_the_log(store, [revoked])
    assert store.authenticate(issued.key.token, NOW + 2) is None
    assert store.check(issued.key.token, NOW + 2) == Denied("revoked", issued.key.key_id)
    forged = forge(issued.key.key_id)
    assert store.check(forged, NOW + 2) == Denied("unknown")
    assert store.authenticate(second.key.token, NOW + 2) == (issued.tenant_id, second.key.key_id)
    key = store.key(issued.key.key_id)
    assert key is not None and (key.revoked_at, key.revoke_reason, key.revoked_by) == (
        NOW + 1,
        "left the school",
        BY,
    )
    with pytest.raises(Refused, match="revoked already"):
        admin.revoke_key(store, issued.key.key_id, by=BY)


def test_a_key_expires_at_its_time() -> None:
    store = KeyStore("default")
    issued = a_tenant(store, expires_days=2)
    expiry = NOW + 2 * admin.DAY_MS
    assert store.key(issued.key.key_id).expires_at == expiry  # type: ignore[union-attr]
    assert store.authenticate(issued.key.token, expiry - 1) is not None
    assert store.authenticate(issued.key.token, expiry) is None
    assert store.check(issued.key.token, expiry) == Denied("expired", issued.key.key_id)
    with pytest.raises(Refused, match="one day"):
        admin.add_key(store, "acme", by=BY, expires_days=0)


def test_a_tenant_name_is_taken_once_whatever_its_case_and_the_default_tenant_has_one() -> None:
    store = KeyStore("default")
    a_tenant(store, "acme")
    for taken in ("acme", "ACME", "  Acme ", "default"):
        with pytest.raises(Refused, match="exists already") as refused:
            admin.create_tenant(store, taken, by=BY)
        assert refused.value.code == "tenant-exists"
    for bad in ("", "   ", "tab\there", "new\nline", "x" * 65):
        with pytest.raises(Refused):
            admin.create_tenant(store, bad, by=BY)


def test_keys_go_to_existing_tenants_only_the_default_one_included() -> None:
    store = KeyStore("default")
    with pytest.raises(Refused, match="no tenant 'nobody'") as refused:
        admin.add_key(store, "nobody", by=BY)
    assert refused.value.code == "unknown-tenant"
    issued = admin.add_key(store, "default", by=BY, at_ms=NOW)
    through_the_log(store, issued.events)
    assert store.authenticate(issued.key.token, NOW) == ("default", issued.key.key_id)


def test_revoking_an_unknown_key_says_so() -> None:
    store = KeyStore("default")
    with pytest.raises(Refused, match="no API key 'abcdefabcdef'") as refused:
        admin.revoke_key(store, "abcdefabcdef", by=BY)
    assert refused.value.code == "unknown-key"


def test_no_event_and_no_listing_holds_a_secret() -> None:
    store = KeyStore("default")
    issued = a_tenant(store, label="teacher")
    more = admin.add_key(store, "acme", by=BY, expires_days=30, at_ms=NOW)
    through_the_log(store, more.events)
    revoked = admin.revoke_key(store, issued.key.key_id, by=BY, reason="rotated")
    events: list[Event] = [*issued.events, *more.events, revoked]
    for key in (issued.key, more.key):
        secret = key.token.split("_", 2)[2]
        for event in events:
            assert secret.encode() not in encode(event), event.name
            assert secret not in repr(event.model_dump())
        listed = repr((admin.tenant_rows(store, NOW), admin.key_rows(store, None, NOW)))
        assert secret not in listed and key.key_id in listed
    created = [e for e in events if isinstance(e, ApiKeyCreated)]
    assert [e.sha256 for e in created] == [issued.key.sha256, more.key.sha256]


def test_applying_is_idempotent_and_survives_a_revocation_read_first() -> None:
    store = KeyStore("default")
    issued = admin.create_tenant(store, "acme", by=BY, at_ms=NOW)
    revoked = ApiKeyRevoked(tenant_id=issued.tenant_id, key_id=issued.key.key_id, revoked_by=BY)
    through_the_log(store, [revoked, *issued.events, *issued.events])
    assert store.check(issued.key.token, NOW) == Denied("revoked", issued.key.key_id)
    assert len(store.tenants()) == 2 and len(store.keys()) == 1
    assert store.apply(revoked) is True
    assert store.apply(Event(tenant_id="x", document_id="d", generation=1)) is False


def test_listings_count_keys_by_state() -> None:
    store = KeyStore("default")
    issued = a_tenant(store, "acme")
    for days in (1, None):
        through_the_log(store, admin.add_key(store, "acme", by=BY, expires_days=days, at_ms=NOW).events)
    through_the_log(store, [admin.revoke_key(store, issued.key.key_id, by=BY, reason="gone")])
    later = NOW + 2 * admin.DAY_MS
    rows = {r["name"]: r for r in admin.tenant_rows(store, later)}
    assert (rows["acme"]["active"], rows["acme"]["revoked"], rows["acme"]["expired"]) == (1, 1, 1)
    assert (rows["default"]["active"], rows["default"]["created"]) == (0, None)
    keys = admin.key_rows(store, "acme", later)
    assert [k["status"] for k in keys] == ["revoked", "expired", "active"]
    assert keys[0]["reason"] == "gone" and keys[0]["key_id"] == issued.key.key_id
    assert admin.key_rows(store, "default", later) == []
    with pytest.raises(Refused, match="no tenant"):
        admin.key_rows(store, "nobody", later)


# The API: the bootstrap token is the default tenant's operator key; tenants' keys come from the
# accounts topic through the feed, and count at once.


@pytest.fixture()
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture()
def client(tmp_path: Path, hub: FakeHub) -> Iterator[TestClient]:
    settings = Settings.model_validate({"home": tmp_path, "api": {"token": TOKEN}})
    with TestClient(create_app(settings, publisher=FakePublisher(), feed=hub)) as c:
        yield c


def feed_events(hub: FakeHub, events: list[AccountEvent]) -> None:
    for event in events:
        hub.feed(event, topic=topics.ACCOUNTS.name)


def as_key(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_takes_a_key_from_the_feed_at_once_and_refuses_it_once_revoked(
    client: TestClient, hub: FakeHub
) -> None:
    store = KeyStore("default")
    issued = admin.create_tenant(store, "acme", by=BY)
    assert client.get("/v1/documents", headers=as_key(issued.key.token)).status_code == 401
    feed_events(hub, issued.events)
    assert client.get("/v1/documents", headers=as_key(issued.key.token)).json() == []
    through_the_log(store, issued.events)
    feed_events(hub, [admin.revoke_key(store, issued.key.key_id, by=BY)])
    r = client.get("/v1/documents", headers=as_key(issued.key.token))
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == f"API key {issued.key.key_id} is revoked"
    assert r.json()["type"].endswith("/key-revoked")
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert client.get("/v1/documents", headers=as_key(TOKEN)).status_code == 200  # the operator's


def test_the_api_refuses_an_expired_key_and_says_so(client: TestClient, hub: FakeHub) -> None:
    store = KeyStore("default")
    issued = admin.create_tenant(store, "acme", by=BY, expires_days=1, at_ms=NOW - 2 * admin.DAY_MS)
    feed_events(hub, issued.events)
    r = client.get("/v1/documents", headers=as_key(issued.key.token))
    assert r.status_code == 401 and r.json()["detail"] == f"API key {issued.key.key_id} has expired"
    forged = forge(issued.key.key_id)
    wrong = client.get("/v1/documents", headers=as_key(forged))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "missing or wrong bearer token"
