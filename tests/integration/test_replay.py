"""Reprocessing into generations: a replay with the same prompt is served from the result cache
(no LLM call), one with a new prompt version or model calls the LLM again and gives a second
deck while the first still serves; promote from the API and the CLI; the choice survives an API
restart. Real broker, worker and API; the LLM simulator counts the calls."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack
from infra.process import wait_until
from tests.conftest import TOKEN, corpus_file, restart_api, run_cli

pytestmark = pytest.mark.kafka
TERMINAL = ("completed", "partial", "failed", "cancelled")
DOCUMENT = "bee4750_syllabus.docx"


def served(sim_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{sim_url}/stats", timeout=5).json()
    return stats


def generation_done(client: DeckstreamClient, doc: str, generation: int) -> dict[str, Any]:
    """The comparison's row of `generation`, once its deck is assembled."""

    def check() -> dict[str, Any] | None:
        rows = client.http.get(f"/v1/documents/{doc}/generations").json()["generations"]
        row = next((r for r in rows if r["generation"] == generation), None)
        return row if row is not None and row["status"] in TERMINAL and row["progress"] == 1.0 else None

    return wait_until(check, 120, interval=0.2, what=f"generation {generation} of {doc} to be assembled")


def test_replay_compare_and_promote(stack: Stack, sim_url: str) -> None:
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        r = client.upload(corpus_file(DOCUMENT))
        assert r.status_code == 202, r.text
        doc = r.json()["document_id"]
        first = generation_done(client, doc, 1)
        assert first["status"] == "completed" and first["cards"] > 0
        calls = served(sim_url)["served"]

        # The same prompt and model: every chunk's answer comes from the cache, no LLM call.
        r = client.http.post(f"/v1/documents/{doc}/reprocess")
        assert r.status_code == 202, r.text
        assert r.json()["generation"] == 2
        again = client.http.post(f"/v1/documents/{doc}/reprocess")  # generation 2 is running
        assert again.status_code == 409 and again.json()["type"].endswith("/still-running"), again.text
        # Followed at once, the document's events are the new generation's, to its end.
        events = list(client.events(doc, timeout_s=120))
        assert events[-1].event == "done" and events[-1].data["generation"] == 2
        assert {e.data["generation"] for e in events if e.event == "progress"} == {2}
        second = generation_done(client, doc, 2)
        assert served(sim_url)["served"] == calls, "a replay with an unchanged prompt called the LLM"
        assert second["status"] == "completed" and second["cards"] == first["cards"]
        assert second["pages_covered"] == first["pages_covered"]

        # A new prompt version: the LLM is asked again, and the first generation still serves.
        r = client.http.post(f"/v1/documents/{doc}/reprocess", json={"prompt_version": "v2"})
        assert r.status_code == 202, r.text
        third = generation_done(client, doc, 3)
        assert served(sim_url)["served"] > calls
        assert third["prompt_version"] == "cards-chat-v2" and first["prompt_version"] == "cards-chat-v3"
        assert third["requested"] == {"model": None, "prompt_version": "v2"}
        status = client.status(doc)
        assert status["generation"] == 3 and status["current_generation"] == 1
        default = client.deck(doc).json()
        assert default["generation"] == 1 and {c["prompt_version"] for c in default["cards"]} == {
            "cards-chat-v3"
        }
        chosen = client.http.get(f"/v1/decks/{doc}", params={"generation": 3}).json()
        assert chosen["generation"] == 3 and {c["prompt_version"] for c in chosen["cards"]} == {
            "cards-chat-v2"
        }
        assert not {c["card_id"] for c in chosen["cards"]} & {c["card_id"] for c in default["cards"]}

        # Promote from the API: the default deck is now generation 3.
        r = client.http.post(f"/v1/documents/{doc}/promote", json={"generation": 3})
        assert r.status_code == 200 and r.json()["current"] == 3, r.text
        assert client.deck(doc).json()["generation"] == 3
        rows = client.http.get(f"/v1/documents/{doc}/generations").json()
        assert rows["current"] == 3 and [g["generation"] for g in rows["generations"]] == [1, 2, 3]
        assert [g["current"] for g in rows["generations"]] == [False, False, True]

        # The CLI: a replay with another model follows it to the end, then compare and promote.
        done = run_cli(stack, "replay", "--documents", doc, "--model", "another-model", "--timeout", "120")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\t")[:3] == [doc, "4", "completed"], done.stdout
        assert served(sim_url)["served_by_model"].get("another-model", 0) > 0
        table = run_cli(stack, "generations", doc)
        assert table.returncode == 0, table.stderr
        lines = [line.split("\t") for line in table.stdout.splitlines()]
        assert [line[1] for line in lines[1:]] == ["1", "2", "3", "4"] and lines[3][0] == "*"
        assert "another-model" in lines[4]
        promoted = run_cli(stack, "promote", doc, "--generation", "4")
        assert promoted.returncode == 0, promoted.stderr
        wait_until(
            lambda: client.deck(doc).json()["generation"] == 4, 30, interval=0.2, what="the CLI's promotion"
        )


def test_what_cannot_be_reprocessed_or_promoted_is_refused_with_the_reason(stack: Stack) -> None:
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        r = client.upload(corpus_file(DOCUMENT))
        doc = r.json()["document_id"]
        bad = client.http.post(f"/v1/documents/{doc}/reprocess", json={"prompt_version": "v99"})
        assert bad.status_code == 422 and "v99" in bad.json()["detail"], bad.text
        bad = client.http.post(f"/v1/documents/{doc}/reprocess", json={"model": "no spaces allowed"})
        assert bad.status_code == 422, bad.text
        missing = client.http.post(f"/v1/documents/{doc}/promote", json={"generation": 7})
        assert missing.status_code == 404, missing.text
        generation_done(client, doc, 1)
        assert client.http.post("/v1/documents/not-a-document/reprocess").status_code == 404
        # The CLI says the same.
        unknown = run_cli(stack, "promote", "not-a-document")
        assert unknown.returncode == 1 and "no document not-a-document" in unknown.stderr
        nothing = run_cli(stack, "replay", "--documents", "not-a-document")
        assert nothing.returncode == 1 and "not in the log" in nothing.stderr
        wrong = run_cli(stack, "replay", "--documents", doc, "--prompt-version", "v99")
        assert wrong.returncode == 1 and "no prompt version" in wrong.stderr


def test_the_current_generation_survives_an_api_restart(stack: Stack) -> None:
    assert stack.api_url is not None
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        doc = client.upload(corpus_file(DOCUMENT)).json()["document_id"]
        generation_done(client, doc, 1)
        assert client.http.post(f"/v1/documents/{doc}/reprocess").status_code == 202
        generation_done(client, doc, 2)
        assert client.http.post(f"/v1/documents/{doc}/promote", json={"generation": 2}).status_code == 200
        before = client.http.get(f"/v1/documents/{doc}/generations").json()
    restart_api(stack)
    with DeckstreamClient(stack.api_url, TOKEN, timeout_s=30) as client:
        after = client.http.get(f"/v1/documents/{doc}/generations").json()
        assert after == before and after["current"] == 2
        assert client.deck(doc).json()["generation"] == 2
        assert client.status(doc)["current_generation"] == 2
