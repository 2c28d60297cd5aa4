"""Tenants and API keys on the real stack: `deckstream tenants add` two tenants, each uploads with
its key and sees only its own documents, through the pipeline to a deck; a new key counts at
once and a revoked one is refused within a deadline; keys and revocations outlive an API
restart (they are on the accounts topic). Real broker, worker and API; the LLM simulator."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack
from infra.process import wait_until
from tests.conftest import TOKEN, restart_api, run_cli

pytestmark = pytest.mark.kafka
# The API's feed reads the accounts topic live (50 ms fetches): a new or revoked key counts
# within a second of the CLI's return (about 30 ms here).
KEY_DEADLINE_S = 1.0
NOTES = "Photosynthesis turns light into chemical energy. Chlorophyll absorbs red and blue light.\n"


def new_key(stack: Stack, *args: str) -> str:
    """Run a command that prints a new key; the key (alone on stdout)."""
    done = run_cli(stack, *args, timeout_s=120)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("dsk_") and "\n" not in key, done.stdout
    return key


def answer(stack: Stack, key: str, path: str = "/v1/documents") -> httpx.Response:
    assert stack.api_url is not None
    return httpx.get(f"{stack.api_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def until(stack: Stack, key: str, status: int, what: str) -> None:
    """Wait (at most KEY_DEADLINE_S) until the API answers `key` with `status`."""
    wait_until(lambda: answer(stack, key).status_code == status, KEY_DEADLINE_S, interval=0.02, what=what)


def upload(stack: Stack, key: str, path: Path) -> str:
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, key) as client:
        r = client.upload(path)
    assert r.status_code == 202, r.text
    return str(r.json()["document_id"])


def test_two_tenants_keys_isolation_revocation_and_a_restart(stack: Stack, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    names = (f"school-a-{suffix}", f"school-b-{suffix}")
    a_key = new_key(stack, "tenants", "add", names[0], "--label", "teacher")
    b_key = new_key(stack, "tenants", "add", names[1])
    until(stack, a_key, 200, "tenant A's new key to count")
    until(stack, b_key, 200, "tenant B's new key to count")
    duplicate = run_cli(stack, "tenants", "add", names[0].upper(), timeout_s=120)
    assert duplicate.returncode == 1 and "exists already" in duplicate.stderr, duplicate.stderr

    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES * 10)
    a_doc, b_doc = upload(stack, a_key, notes), upload(stack, b_key, notes)
    assert [d["document_id"] for d in answer(stack, a_key).json()] == [a_doc]
    assert [d["document_id"] for d in answer(stack, b_key).json()] == [b_doc]
    operator = {d["document_id"] for d in answer(stack, TOKEN).json()}
    assert not operator & {a_doc, b_doc}  # the operator's key is the default tenant's, no superuser
    for key, theirs in ((a_key, b_doc), (b_key, a_doc), (TOKEN, a_doc)):
        for path in (f"/v1/documents/{theirs}", f"/v1/decks/{theirs}", f"/v1/documents/{theirs}/events"):
            r = answer(stack, key, path)
            assert r.status_code == 404 and r.json()["detail"] == f"no document {theirs}", (path, r.text)

    # Through the pipeline: the worker's events keep the tenant, so A follows its document to
    # its deck, and B still gets nothing of it.
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, a_key) as client:
        events = list(client.events(a_doc, timeout_s=120))
        assert events[-1].event == "done" and events[-1].data["status"] == "completed", events[-3:]
        assert client.deck(a_doc).json()["cards"]
    assert answer(stack, b_key, f"/v1/decks/{a_doc}").status_code == 404
    analytics = answer(stack, a_key, "/v1/analytics/panels")
    assert analytics.status_code == 403 and "operators only" in analytics.json()["detail"]

    listed = run_cli(stack, "tenants", "list", timeout_s=120)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("\t")[1]: line.split("\t") for line in listed.stdout.splitlines()[1:]}
    assert {names[0], names[1], stack.settings.tenant} <= set(rows)
    assert rows[names[0]][2:5] == ["1", "0", "0"]  # active, revoked, expired
    keys = run_cli(stack, "keys", "list", names[1], timeout_s=120)
    assert keys.returncode == 0, keys.stderr
    ((b_key_id, b_tenant, *_),) = [line.split("\t") for line in keys.stdout.splitlines()[1:]]
    assert b_key_id == b_key.split("_")[1] and b_tenant == rows[names[1]][0]
    assert b_key.split("_", 2)[2] not in keys.stdout + listed.stdout

    # A second key for A counts at once; B's key, revoked, is refused and says so.
    a_second = new_key(stack, "keys", "add", names[0], "--label", "script", "--expires-days", "30")
    until(stack, a_second, 200, "tenant A's second key to count")
    revoked = run_cli(stack, "keys", "revoke", b_key_id, "--reason", "left", timeout_s=120)
    assert revoked.returncode == 0 and revoked.stdout.split("\t")[0] == b_key_id, revoked.stderr
    until(stack, b_key, 401, "tenant B's revoked key to be refused")
    assert answer(stack, b_key).json()["detail"] == f"API key {b_key_id} is revoked"
    again = run_cli(stack, "keys", "revoke", b_key_id, timeout_s=120)
    assert again.returncode == 1 and "revoked already" in again.stderr
    unknown = run_cli(stack, "keys", "revoke", "nosuchkey000", timeout_s=120)
    assert unknown.returncode == 1 and "no API key 'nosuchkey000'" in unknown.stderr

    # A restarted API rebuilds its keys from the topic: A's keys work, B's stays revoked.
    restart_api(stack)
    for key in (a_key, a_second):
        assert [d["document_id"] for d in answer(stack, key).json()] == [a_doc]
    refused = answer(stack, b_key)
    assert refused.status_code == 401 and refused.json()["detail"] == f"API key {b_key_id} is revoked"
    assert answer(stack, TOKEN).status_code == 200  # and the bootstrap token is still the operator's


def sign_in(stack: Stack, client: httpx.Client, username: str, password: str) -> httpx.Response:
    assert stack.api_url is not None
    return client.post(f"{stack.api_url}/v1/auth/session", json={"username": username, "password": password})


def test_an_account_signs_in_shares_a_deck_and_is_disabled_across_a_restart(stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]
    key = new_key(stack, "tenants", "add", f"school-c-{suffix}")
    until(stack, key, 200, "the tenant's key to count")
    user, password = f"ada-{suffix}@example.org", "a long enough passphrase"
    made = run_cli(
        stack, "users", "add", f"school-c-{suffix}", user, "--password-stdin", stdin=password + "\n"
    )
    assert made.returncode == 0, made.stderr
    listed = run_cli(stack, "users", "list", f"school-c-{suffix}")
    assert user in listed.stdout and "$argon2" not in listed.stdout
    weak = run_cli(
        stack, "users", "add", f"school-c-{suffix}", f"bo-{suffix}", "--password-stdin", stdin="short\n"
    )
    assert weak.returncode == 1 and "at least 10 characters" in weak.stderr

    with httpx.Client(timeout=10) as browser:
        wait_until(
            lambda: sign_in(stack, browser, user, password).status_code == 200, KEY_DEADLINE_S, interval=0.02
        )
        csrf = browser.get(f"{stack.api_url}/v1/auth/session").json()["csrf_token"]
        assert browser.get(f"{stack.api_url}/v1/documents").status_code == 200
        document = upload(stack, key, Path(__file__))  # any text file: the tenant's document
        made_link = browser.post(
            f"{stack.api_url}/v1/decks/{document}/shares",
            json={"label": "group"},
            headers={"X-CSRF-Token": csrf},
        )
        assert made_link.status_code == 201, made_link.text
        token = made_link.json()["url"].rsplit("/", 1)[-1]

        # Sessions and links are on the log: a new API process knows them.
        restart_api(stack)
        assert browser.get(f"{stack.api_url}/v1/documents").status_code == 200  # the same cookie
        assert httpx.get(f"{stack.api_url}/v1/shared/{token}", timeout=10).status_code == 200
        links = browser.get(f"{stack.api_url}/v1/decks/{document}/shares").json()
        assert [link["status"] for link in links] == ["active"]

        disabled = run_cli(stack, "users", "disable", user)
        assert disabled.returncode == 0, disabled.stderr
        wait_until(
            lambda: browser.get(f"{stack.api_url}/v1/documents").status_code == 401,
            KEY_DEADLINE_S,
            interval=0.02,
            what="the disabled account's session to end",
        )
        assert sign_in(stack, browser, user, password).status_code == 401
