"""The API at its edge, with a fake publisher and a progress feed fed by hand (no Kafka here).

The same routes run against the real broker in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from services.documents.decks import store_chunk_cards
from services.documents.views import Position
from services.domain import Card
from services.events import topics
from services.events.models import (
    CancelDocument,
    DeckAssembled,
    DocumentProgress,
    DocumentUploaded,
    Event,
    encode,
)
from services.events.progress_feed import ProgressFeed
from services.settings import Settings
from tests.conftest import TOKEN, corpus_file
from tests.fakes import FakePublisher

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeHub(ProgressFeed):
    def __init__(self) -> None:
        super().__init__("unused:0")
        self.offset = 0

    async def start(self) -> None:
        self._caught_up.set()
        self._task = asyncio.create_task(asyncio.Event().wait())

    def feed(self, event: Event, topic: str = topics.PROGRESS.name) -> None:
        self.apply(topic, Position(0, self.offset), encode(event))
        self.offset += 1


@pytest.fixture()
def parts(tmp_path: Path) -> tuple[Settings, FakePublisher, FakeHub]:
    settings = Settings.model_validate(
        {"home": tmp_path, "api": {"token": TOKEN}, "limits": {"max_upload_bytes": 200_000}}
    )
    return settings, FakePublisher(), FakeHub()


@pytest.fixture()
def client(parts: tuple[Settings, FakePublisher, FakeHub]) -> Iterator[TestClient]:
    settings, publisher, hub = parts
    with TestClient(create_app(settings, publisher=publisher, feed=hub)) as c:
        yield c


def upload(client: TestClient, name: str, data: bytes | None = None, **form: str) -> object:
    body = data if data is not None else corpus_file(name).read_bytes()
    return client.post("/v1/documents", headers=AUTH, files={"file": (name, body)}, data=form)


def progress(doc: str, kind: str = "progress", status: str = "generating", **kw: object) -> DocumentProgress:
    base = dict(
        tenant_id="default",
        document_id=doc,
        generation=1,
        kind=kind,
        status=status,
        filename="f.pdf",
        created_at=1,
        pages_total=2,
        pages_done=2,
        chunks_total=2,
        chunks_done=1,
        chunks_failed=0,
        cards=1,
        progress=0.6,
    )
    base.update(kw)
    return DocumentProgress(**base)  # type: ignore[arg-type]


def test_upload_is_accepted_and_published_with_a_claim_check(client: TestClient, parts: tuple) -> None:
    r = upload(client, "bee4750_syllabus.docx", options=json.dumps({"card_types": ["basic", "cloze"]}))
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert r.headers["location"].endswith(body["document_id"])  # type: ignore[attr-defined]
    ((topic, event),) = parts[1].sent
    assert topic == topics.UPLOADED.name and isinstance(event, DocumentUploaded)
    assert (event.kind, event.filename, event.card_types) == (
        "docx",
        "bee4750_syllabus.docx",
        ["basic", "cloze"],
    )
    assert event.blob_uri.startswith("blob://") and len(event.sha256) == 64
    assert client.get(f"/v1/documents/{body['document_id']}", headers=AUTH).json()["status"] == "queued"


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("empty.pdf", b"", 400),
        ("notes.pptx", b"\x00\x01 not a zip at all", 415),
        ("big.txt", b"word " * 50_000, 413),
    ],
)
def test_bad_uploads_are_problems_and_publish_nothing(
    client: TestClient, parts: tuple, name: str, data: bytes, status: int
) -> None:
    r = upload(client, name, data)
    assert r.status_code == status  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert r.json()["status"] == status and r.json()["detail"]  # type: ignore[attr-defined]
    assert parts[1].sent == []
    assert list((parts[0].blob_dir / "sha256").rglob("*")) == [] or all(
        p.is_dir() for p in (parts[0].blob_dir / "sha256").rglob("*")
    )


def test_invalid_options_are_422(client: TestClient, parts: tuple) -> None:
    r = upload(client, "bee4750_syllabus.docx", options='{"card_types": ["essay"]}')
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert "options" in r.json()["detail"]  # type: ignore[attr-defined]
    assert parts[1].sent == []


def test_missing_file_is_a_422_problem(client: TestClient) -> None:
    r = client.post("/v1/documents", headers=AUTH)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_every_v1_route_needs_the_token(client: TestClient) -> None:
    for method, path in [
        ("get", "/v1/documents"),
        ("get", "/v1/documents/x"),
        ("get", "/v1/decks/x"),
        ("post", "/v1/documents/x/cancel"),
        ("get", "/v1/documents/x/events"),
    ]:
        r = getattr(client, method)(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200 and "deckstream" in client.get("/").text


def test_status_follows_the_hub_and_sse_replays_to_done(
    client: TestClient, parts: tuple, tmp_path: Path
) -> None:
    settings, _, hub = parts
    hub.feed(progress("d1", status="queued", pages_done=0, chunks_done=0, cards=0, progress=0.0))
    card = Card(
        "c1", "basic", "What is a test?", "A check.", "f.pdf", 2, "ii", ("Intro",), 0, "cards-chat-v1"
    )
    hub.feed(progress("d1", kind="card", new_cards=[card]))
    hub.feed(progress("d1", kind="done", status="completed", chunks_done=2, progress=1.0))
    store_chunk_cards(LocalBlobStoreFor(settings), "d1", 1, 0, [card])
    status = client.get("/v1/documents/d1", headers=AUTH).json()
    assert (status["status"], status["chunks_done"], status["progress"]) == ("completed", 2, 1.0)

    with client.stream("GET", "/v1/documents/d1/events", headers=AUTH) as r:
        text = "".join(r.iter_text())
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
    assert names == ["progress", "progress", "card", "progress", "done"]
    assert ids == ["0-0-0", "0-1-0", "0-1-1", "0-2-0", "0-2-1"]

    with client.stream("GET", "/v1/documents/d1/events", headers={**AUTH, "Last-Event-ID": "0-1-1"}) as r:
        resumed = [line[4:] for line in "".join(r.iter_text()).splitlines() if line.startswith("id: ")]
    assert resumed == ["0-2-0", "0-2-1"]

    deck = client.get("/v1/decks/d1", headers=AUTH).json()
    assert deck["complete"] is False  # no DeckAssembled yet: the cards so far
    assert [c["source"] for c in deck["cards"]] == [
        {"file": "f.pdf", "page": 2, "page_label": "ii", "section": ["Intro"]}
    ]
    exported = client.get("/v1/decks/d1?format=csv", headers=AUTH)
    assert exported.headers["content-type"].startswith("text/csv") and "What is a test?" in exported.text


def test_a_done_documents_history_is_told_again_from_its_ledger_and_deck_once_dropped(
    client: TestClient, parts: tuple
) -> None:
    from services.documents.ledger import store_ledger
    from services.events.models import PageInfo

    settings, _, hub = parts
    hub.views.keep_done = 1  # the events of one done document stay in memory, no more
    card = Card("c1", "basic", "What is a test?", "A check.", "f.pdf", 2, "ii", ("Intro",), 0, "v1")
    page = PageInfo(number=2, label="ii", section=["Intro"], method="text", chars=120, tokens=30)
    for doc in ("old", "new"):
        hub.feed(progress(doc, status="generating"))
        hub.feed(progress(doc, kind="card", new_cards=[card]))
        store_chunk_cards(LocalBlobStoreFor(settings), doc, 1, 0, [card])
        store_ledger(LocalBlobStoreFor(settings), doc, 1, [page])
        hub.feed(progress(doc, kind="done", status="completed", chunks_done=2, progress=1.0))
    old, new = hub.views.docs["old"], hub.views.docs["new"]
    assert (len(old.events), old.history_dropped) == (0, True) and len(new.events) == 3

    def stream(doc: str, **headers: str) -> list[tuple[str, str]]:
        with client.stream("GET", f"/v1/documents/{doc}/events", headers={**AUTH, **headers}) as r:
            lines = "".join(r.iter_text()).splitlines()
        return list(
            zip(
                [line[4:] for line in lines if line.startswith("id: ")],
                [line[7:] for line in lines if line.startswith("event: ")],
                strict=True,
            )
        )

    done_at = f"{old.done_at}"
    assert stream("old") == [
        (f"{done_at}-{k}", n) for k, n in enumerate(["progress", "page", "card", "done"])
    ]
    assert stream("old", **{"Last-Event-ID": f"{done_at}-2"}) == [(f"{done_at}-3", "done")]
    assert [name for _, name in stream("new")] == ["progress", "progress", "card", "progress", "done"]
    ledger = client.get("/v1/documents/old/pages", headers=AUTH).json()
    assert [p["label"] for p in ledger["pages"]] == ["ii"]  # from the kept ledger


def test_the_csv_deck_says_which_cards_need_review(client: TestClient, parts: tuple) -> None:
    settings, _, hub = parts
    hub.feed(progress("d2", status="generating", chunks_done=1, cards=2, progress=0.5))
    sure = Card(
        "c1", "basic", "What is a log?", "An ordered record.", "f.pdf", 2, "ii", ("Intro", "Logs"), 0, "v1"
    )
    unsure = dataclasses.replace(sure, card_id="c2", front="What does the text say?", needs_review=True)
    why = dataclasses.replace(unsure, card_id="c3", front="What does the passage say?", review="it points")
    store_chunk_cards(LocalBlobStoreFor(settings), "d2", 1, 0, [sure, unsure, why])
    r = client.get("/v1/decks/d2?format=csv", headers=AUTH)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["front"], row["section"], row["needs_review"]) for row in rows] == [
        ("What is a log?", "Intro > Logs", ""),
        ("What does the text say?", "Intro > Logs", "yes"),  # flagged before reasons were kept
        ("What does the passage say?", "Intro > Logs", "it points"),
    ]
    deck = client.get("/v1/decks/d2", headers=AUTH).json()
    assert [(c["needs_review"], c["review"]) for c in deck["cards"]] == [
        (False, None),
        (True, None),
        (True, "it points"),
    ]
    # Counted by reason while the document runs; what was dropped is known once it is assembled.
    assert deck["quality"]["needs_review_by_reason"] == {"reason not recorded": 1, "it points": 1}
    assert deck["quality"]["dropped_by_reason"] is None


def test_a_document_waiting_for_the_llm_says_so_until_it_moves_again(
    client: TestClient, parts: tuple
) -> None:
    _, _, hub = parts
    why = "the LLM is unavailable (LLM answered HTTP 503); the document goes on when it is back"
    hub.feed(progress("w1", status="generating", chunks_done=1, cards=2, progress=0.5))
    hub.feed(progress("w1", kind="waiting", status="generating", chunks_done=1, cards=2, waiting=why))
    waiting = client.get("/v1/documents/w1", headers=AUTH).json()
    assert waiting["waiting"] == why and waiting["status"] == "generating" and waiting["error"] is None

    hub.feed(progress("w1", kind="progress", status="generating", chunks_done=2, progress=0.75))
    assert client.get("/v1/documents/w1", headers=AUTH).json()["waiting"] is None
    hub.feed(progress("w1", kind="done", status="completed", chunks_done=2, progress=1.0))
    with client.stream("GET", "/v1/documents/w1/events", headers=AUTH) as r:
        lines = "".join(r.iter_text()).splitlines()
    names = [line[7:] for line in lines if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert names == ["progress", "progress", "waiting", "progress", "progress", "done"]
    assert data[2] == {"reason": why} and data[1]["waiting"] == why and data[3]["waiting"] is None


def LocalBlobStoreFor(settings: Settings):
    from services.storage.blobs import LocalBlobStore

    return LocalBlobStore(settings.blob_dir)


def test_deck_uses_the_assembled_deck_once_there(client: TestClient, parts: tuple) -> None:
    settings, _, hub = parts
    from services.documents.decks import store_deck

    card = Card("c9", "cloze", "{{c1::Kafka}} keeps the log.", "Kafka", "f.pdf", 1, "1", (), 0, "v1")
    empty = [{"chunk_index": 2, "pages": ["3"], "reason": "the model returned no cards"}]
    uri = store_deck(
        LocalBlobStoreFor(settings),
        "d2",
        1,
        "partial",
        [card],
        empty_chunks=empty,
        dropped=4,
        dropped_by_reason={"not supported by the text": 3, "invalid cloze syntax": 1},
        duplicates_removed=2,
    )
    hub.feed(progress("d2", kind="done", status="partial", chunks_failed=1))
    hub.feed(
        DeckAssembled(
            tenant_id="default",
            document_id="d2",
            generation=1,
            status="partial",
            deck_uri=uri,
            cards=1,
            chunks_total=2,
            chunks_failed=1,
            failures=[{"chunk_index": 1, "reason": "LLM timed out"}],
        ),  # type: ignore[list-item]
        topic=topics.DECKS.name,
    )
    deck = client.get("/v1/decks/d2", headers=AUTH).json()
    assert deck["complete"] is True and deck["cards"][0]["type"] == "cloze"
    assert deck["failures"] == [{"chunk_index": 1, "reason": "LLM timed out"}]
    assert deck["empty_chunks"] == empty
    assert deck["quality"] == {
        "cards": 1,
        "needs_review": 0,
        "needs_review_by_reason": {},
        "dropped": 4,
        "dropped_by_reason": {"not supported by the text": 3, "invalid cloze syntax": 1},
        "duplicates_removed": 2,
    }
    status = client.get("/v1/documents/d2", headers=AUTH).json()
    assert status["failures"][0]["reason"] == "LLM timed out"
    assert status["finished_at"] is not None and status["finished_at"] >= status["created_at"]  # "Elapsed"


def test_cancel_publishes_a_command_and_refuses_finished_documents(client: TestClient, parts: tuple) -> None:
    _, publisher, hub = parts
    hub.feed(progress("d3"))
    assert client.post("/v1/documents/d3/cancel", headers=AUTH).status_code == 202
    ((topic, event),) = publisher.sent
    assert topic == topics.CONTROL.name and isinstance(event, CancelDocument) and event.document_id == "d3"
    hub.feed(progress("d3", kind="done", status="cancelled"))
    assert client.post("/v1/documents/d3/cancel", headers=AUTH).status_code == 409
    assert client.post("/v1/documents/d3/retry", headers=AUTH).status_code == 409


def test_unknown_documents_are_404_and_bad_event_ids_400(client: TestClient, parts: tuple) -> None:
    assert client.get("/v1/documents/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/decks/nope", headers=AUTH).status_code == 404
    parts[2].feed(progress("d4"))
    r = client.get("/v1/documents/d4/events", headers={**AUTH, "Last-Event-ID": "garbage"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


def test_page_ledger_lists_every_page_once_in_order(client: TestClient, parts: tuple) -> None:
    from services.events.models import PageInfo

    hub = parts[2]
    for n, reason in (
        (2, "image-only page; OCR found no text"),
        (1, None),
        (2, "image-only page; OCR found no text"),
    ):
        info = PageInfo(
            number=n,
            label=str(n),
            section=["Intro"],
            method="skipped" if reason else "text",
            reason=reason,
            chars=0 if reason else 120,
            tokens=0 if reason else 30,
        )
        hub.feed(progress("d5", kind="page", page=info))
    ledger = client.get("/v1/documents/d5/pages", headers=AUTH).json()
    assert [(p["number"], p["method"], p["reason"]) for p in ledger["pages"]] == [
        (1, "text", None),
        (2, "skipped", "image-only page; OCR found no text"),
    ]


def test_cards_resent_after_a_worker_crash_are_streamed_once(client: TestClient, parts: tuple) -> None:
    hub = parts[2]
    card = Card("c7", "basic", "What is replay?", "Reading the log again.", "f.pdf", 1, "1", (), 0, "v1")
    other = Card("c8", "basic", "What is a log?", "An ordered record.", "f.pdf", 2, "2", (), 1, "v1")
    hub.feed(progress("d6", kind="card", new_cards=[card]))
    hub.feed(progress("d6", kind="card", new_cards=[card]))  # the same chunk's result, delivered again
    hub.feed(progress("d6", kind="card", new_cards=[card, other]))  # a batch: re-sent and new cards
    hub.feed(progress("d6", kind="done", status="completed", chunks_done=2, progress=1.0))
    with client.stream("GET", "/v1/documents/d6/events", headers=AUTH) as r:
        lines = "".join(r.iter_text()).splitlines()
    names = [line[7:] for line in lines if line.startswith("event: ")]
    fronts = [
        json.loads(line[6:])["front"] for line in lines if line.startswith("data: ") and '"front"' in line
    ]
    assert names.count("card") == 2 and names[-1] == "done"
    assert fronts == ["What is replay?", "What is a log?"]


def test_options_fall_back_to_configured_defaults_and_must_be_an_object(
    client: TestClient, parts: tuple
) -> None:
    r = upload(client, "bee4750_syllabus.docx", options=json.dumps({"cards_per_chunk": 7}))
    assert r.status_code == 202  # type: ignore[attr-defined]
    ((_, event),) = parts[1].sent
    assert (event.card_types, event.cards_per_chunk) == (["basic"], 7)
    r = upload(client, "bee4750_syllabus.docx", options="[1, 2]")
    assert r.status_code == 422 and "object" in r.json()["detail"]  # type: ignore[attr-defined]


def test_event_streams_beyond_the_cap_get_503(parts: tuple) -> None:
    settings, publisher, hub = parts
    settings.api.max_subscribers = 0
    with TestClient(create_app(settings, publisher=publisher, feed=hub)) as c:
        hub.feed(progress("d8"))
        r = c.get("/v1/documents/d8/events", headers=AUTH)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.headers["content-type"] == "application/problem+json"
