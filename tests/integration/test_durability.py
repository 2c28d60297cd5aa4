"""Kafka is the system of record: stop deckstream and start it again on the same home, and every
document is there as it was (status, deck, page ledger, its SSE history), on a broker that kept
its data under the home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_stack
from infra.process import wait_until
from tests.conftest import TOKEN, corpus_file, stack_settings

pytestmark = [pytest.mark.kafka, pytest.mark.llm]


def started(home: Path, llm_url: str) -> Stack:
    """The stack on its own broker under `home` (no bootstrap given: the launcher starts one)."""
    return start_stack(stack_settings(home, "", llm_url), api=True)


def seen_by_a_user(client: DeckstreamClient, document_id: str) -> dict[str, object]:
    status = client.status(document_id)
    deck = client.deck(document_id).json()
    pages = client.http.get(f"/v1/documents/{document_id}/pages").json()
    history = [(e.id, e.event) for e in client.events(document_id, timeout_s=60)]
    listed = [d["document_id"] for d in client.http.get("/v1/documents").json()]
    return {"status": status, "deck": deck, "pages": pages, "history": history, "listed": listed}


def gc(home: Path, bootstrap: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECKSTREAM_")}
    env |= {"DECKSTREAM_HOME": str(home), "DECKSTREAM_KAFKA_BOOTSTRAP": bootstrap}
    done = subprocess.run(
        [sys.executable, "-m", "deckstream", "gc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_restart_on_the_same_home_keeps_every_document_as_it_was(tmp_path: Path, llm_url: str) -> None:
    home = tmp_path / "home"
    stack = started(home, llm_url)
    try:
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
            r = client.upload(corpus_file("bee4750_syllabus.docx"))
            assert r.status_code == 202, r.text
            document_id = r.json()["document_id"]
            events = list(client.events(document_id, timeout_s=300))
            assert events[-1].event == "done"
            # The deck is assembled just after `done`: what a user sees once it is there.
            wait_until(lambda: client.deck(document_id).json()["complete"], 30, interval=0.2, what="the deck")
            before = seen_by_a_user(client, document_id)
    finally:
        stack.stop()
    assert before["status"]["status"] in ("completed", "partial")  # type: ignore[index]

    again = started(home, llm_url)
    try:
        assert again.api_url is not None and again.settings.kafka.bootstrap
        with DeckstreamClient(again.api_url, TOKEN, timeout_s=30) as client:
            after = seen_by_a_user(client, document_id)
            # gc: what no document of the log uses goes; this document's files stay.
            orphan = home / "blobs" / "decks" / "a-document-the-log-forgot" / "g1.json"
            orphan.parent.mkdir(parents=True)
            orphan.write_text("{}")
            listed = gc(home, again.settings.kafka.bootstrap)
            assert "decks/a-document-the-log-forgot" in listed and document_id not in listed
            assert "cache/cards" not in listed  # the answers its cards came from stay
            gc(home, again.settings.kafka.bootstrap, "--delete")
            assert not orphan.exists()
            assert client.deck(document_id).json() == before["deck"]
    finally:
        again.stop()
    assert after == before
    assert before["deck"]["complete"] is True and before["deck"]["cards"]  # type: ignore[index]
    assert before["history"][-1][1] == "done"  # type: ignore[index]
