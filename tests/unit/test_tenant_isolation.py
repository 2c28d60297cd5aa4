"""Tenant isolation, route by route: the walk reads the app's OpenAPI schema, so a route added
later is covered without anyone listing it here.

Tenant A uploads a document. Then, for every route and method: one naming a `{document_id}` is
called with tenant B's key (and with the operator's, the default tenant's: it is no superuser)
on A's document, and must answer exactly as for a missing document (404, same body) and change
nothing; A gets its answer. The list routes show B nothing of A's; the analytics routes, which
span every tenant, answer 403 to any tenant's key. A route of another shape (a path parameter
the walk cannot fill, a route it cannot classify) fails the walk with the reason.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import DocumentDep, PartsDep
from services.accounts import admin
from services.accounts.store import KeyStore
from services.errors import DocumentNotFound
from services.events import topics
from services.settings import Settings
from tests.conftest import TOKEN
from tests.fakes import FakePublisher
from tests.unit.test_api import FakeHub, progress

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}  # no token, nothing of anyone's
# The link is the credential: it opens one deck, read-only, for anyone who holds it (test_shares.py).
CAPABILITY = {("GET", "/v1/shared/{token}")}
# The caller's own session: made from credentials, naming nothing of anyone else's
# (test_sessions.py: a session is its tenant's, like its key).
SELF = {
    ("POST", "/v1/auth/session"),
    ("GET", "/v1/auth/session"),
    ("DELETE", "/v1/auth/session"),
    ("POST", "/v1/auth/register"),
}
OPERATOR_TAGS = {"analytics"}  # span every tenant
PARAM = re.compile(r"{([^}]+)}")


@dataclass(frozen=True)
class Tenants:
    a: str  # tenant A's key
    b: str  # tenant B's key
    a_id: str
    b_id: str


@dataclass
class World:
    app: FastAPI
    client: TestClient
    publisher: FakePublisher
    hub: FakeHub
    keys: Tenants
    document: str  # tenant A's
    # Tenant A's resources under its document, for the path parameters after `{document_id}`.
    fills: dict[str, str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def make_world(tmp_path: Path, extra: APIRouter | None = None) -> Iterator[World]:
    settings = Settings.model_validate(
        {"home": tmp_path, "api": {"token": TOKEN}, "limits": {"max_upload_bytes": 200_000}}
    )
    publisher, hub = FakePublisher(), FakeHub()
    app = create_app(settings, publisher=publisher, feed=hub)
    if extra is not None:
        app.include_router(extra)
    store = KeyStore(settings.tenant)
    issued = [admin.create_tenant(store, name, by="test") for name in ("school A", "school B")]
    for event in (e for i in issued for e in i.events):
        hub.feed(event, topic=topics.ACCOUNTS.name)
    keys = Tenants(issued[0].key.token, issued[1].key.token, issued[0].tenant_id, issued[1].tenant_id)
    with TestClient(app) as client:
        body = b"Photosynthesis turns light into chemical energy in the chloroplast.\n" * 20
        r = client.post("/v1/documents", headers=auth(keys.a), files={"file": ("notes.txt", body)})
        assert r.status_code == 202, r.text
        document = r.json()["document_id"]
        # Finished, so that its event stream ends for its owner.
        hub.feed(
            progress(
                document,
                "done",
                "completed",
                tenant_id=keys.a_id,
                chunks_done=2,
                progress=1.0,
                filename="notes.txt",
            )
        )
        share = client.post(f"/v1/decks/{document}/shares", headers=auth(keys.a), json={})
        assert share.status_code == 201, share.text
        # number: a page of the document; card_id: a card of it (its deck answers for any id, 404
        # no-such-card: not what a missing document answers)
        fills = {"share_id": share.json()["share_id"], "number": "1", "card_id": "c1"}
        yield World(app, client, publisher, hub, keys, document, fills)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


def operations(app: FastAPI) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in app.openapi()["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:  # Optional[X]: X
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return _resolve(schema, components)
    return schema


def sample(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A small valid value of a schema: enough for the owner's request to pass validation."""
    schema = _resolve(schema, components)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(props[name], components) for name in schema.get("required", [])}
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "string":
        return "x" * int(schema.get("minLength", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    raise ValueError(f"no sample for schema {schema}")


def request_of(op: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The query and JSON body a request needs, from the operation's schema."""
    query = {
        p["name"]: sample(p.get("schema", {}), components)
        for p in op.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }
    extra: dict[str, Any] = {"params": query}
    content = op.get("requestBody", {}).get("content", {})
    if content:
        if "application/json" not in content:
            raise ValueError(f"a {', '.join(content)} body: teach the walk to build one")
        extra["json"] = sample(content["application/json"]["schema"], components)
    return extra


def call(client: TestClient, method: str, path: str, token: str, extra: dict[str, Any]) -> httpx.Response:
    """One request, its body read whole: an event stream is read to its end (A's document is
    finished, so its stream ends)."""
    with client.stream(method, path, headers=auth(token), **extra) as r:
        r.read()
        answer: httpx.Response = r
        return answer


def shape(r: httpx.Response, document: str) -> tuple[int, str, Any]:
    """What a caller learns from an answer, with the document id taken out."""
    text = r.text.replace(document, "{document_id}")
    body = json.loads(text) if r.headers.get("content-type", "").endswith("json") else text
    return r.status_code, r.headers.get("content-type", ""), body


def walk(w: World) -> list[str]:
    """Every route, checked for tenant isolation; what is wrong, one line each."""
    problems: list[str] = []
    components = w.app.openapi().get("components", {}).get("schemas", {})
    intruders = {"tenant B": w.keys.b, "the operator (default tenant)": TOKEN}
    for method, path, op in operations(w.app):
        where = f"{method} {path}"
        params = PARAM.findall(path)
        if (method, path) in PUBLIC | SELF | CAPABILITY:
            continue
        if OPERATOR_TAGS & set(op.get("tags", [])):
            filled = path.replace("{panel_id}", "throughput")
            if PARAM.search(filled):
                problems.append(f"{where}: a path parameter the walk cannot fill ({params})")
                continue
            for who, token in {"tenant A": w.keys.a, "tenant B": w.keys.b}.items():
                r = call(w.client, method, filled, token, {})
                if r.status_code != 403 or not r.json()["type"].endswith("/operators-only"):
                    problems.append(f"{where}: {who}'s key got {r.status_code}, not 403 operators only")
            r = call(w.client, method, filled, TOKEN, {})
            if r.status_code in (401, 403):
                problems.append(f"{where}: the operator got {r.status_code}")
            continue
        if params[:1] == ["document_id"] and set(params[1:]) <= set(w.fills):
            try:
                extra = request_of(op, components)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            theirs = path.format(document_id=w.document, **w.fills)
            missing = path.format(document_id=uuid.uuid4().hex, **w.fills)
            for who, token in intruders.items():
                sent = len(w.publisher.sent)
                intruded = shape(call(w.client, method, theirs, token, extra), w.document)
                absent = call(w.client, method, missing, token, extra)
                expected = shape(absent, missing.split("/")[3])
                if intruded[0] != 404 or intruded != expected:
                    problems.append(
                        f"{where}: {who} on tenant A's document got {intruded}, not what a missing "
                        f"document gets: {expected}"
                    )
                if len(w.publisher.sent) != sent:
                    problems.append(f"{where}: {who}'s request published {w.publisher.sent[sent:]}")
            owner = shape(call(w.client, method, theirs, w.keys.a, extra), w.document)
            if owner[0] in (401, 403) or owner == expected:
                problems.append(f"{where}: tenant A cannot reach its own document: {owner}")
            continue
        if params:
            problems.append(
                f"{where}: path parameter(s) {params} the isolation walk cannot fill: say whose "
                "resource each names (a document_id is filled with tenant A's, the others from "
                "World.fills), or add it to the walk"
            )
        elif (method, path) == ("GET", "/v1/study"):
            for who, token in intruders.items():
                listed = [d["document_id"] for d in call(w.client, method, path, token, {}).json()["decks"]]
                if w.document in listed:
                    problems.append(f"{where}: {who}'s due counts show tenant A's deck")
            mine = [d["document_id"] for d in call(w.client, method, path, w.keys.a, {}).json()["decks"]]
            if mine != [w.document]:
                problems.append(f"{where}: tenant A's due counts are of {mine}, not its deck")
        elif (method, path) == ("GET", "/v1/documents"):
            for who, token in intruders.items():
                listed = [d["document_id"] for d in call(w.client, method, path, token, {}).json()]
                if w.document in listed:
                    problems.append(f"{where}: {who}'s list shows tenant A's document")
            mine = [d["document_id"] for d in call(w.client, method, path, w.keys.a, {}).json()]
            if mine != [w.document]:
                problems.append(f"{where}: tenant A's list is {mine}, not its document")
        elif (method, path) == ("GET", "/v1/events"):
            # Documents named by id; without any it follows the caller's own (test_watch_many.py).
            named, missing = {"params": {"documents": w.document}}, uuid.uuid4().hex
            for who, token in intruders.items():
                intruded = shape(call(w.client, method, path, token, named), w.document)
                absent = call(w.client, method, path, token, {"params": {"documents": missing}})
                if intruded[0] != 404 or intruded != shape(absent, missing):
                    problems.append(f"{where}: {who} naming tenant A's document got {intruded}")
            owner = call(w.client, method, path, w.keys.a, named)
            if owner.status_code != 200 or w.document not in owner.text:
                problems.append(f"{where}: tenant A cannot follow its document: {owner.status_code}")
        elif (method, path) == ("POST", "/v1/documents"):
            continue  # an upload is the caller's own: test_an_upload_belongs_to_its_uploader
        else:
            problems.append(f"{where}: a route the isolation walk does not know: classify it here")
    return problems


def test_no_route_lets_a_tenant_reach_another_tenants_document(world: World) -> None:
    walked = {(m, p) for m, p, _ in operations(world.app)}
    scoped = {p for _, p in walked if "{document_id}" in p}
    # The routes as of this writing, so that a walk that silently skipped them would show.
    assert {
        "/v1/documents/{document_id}",
        "/v1/documents/{document_id}/events",
        "/v1/documents/{document_id}/cancel",
        "/v1/documents/{document_id}/retry",
        "/v1/documents/{document_id}/pages",
        "/v1/documents/{document_id}/reprocess",
        "/v1/documents/{document_id}/generations",
        "/v1/documents/{document_id}/promote",
        "/v1/decks/{document_id}",
    } <= scoped
    assert walk(world) == []


def test_an_upload_belongs_to_its_uploader(world: World) -> None:
    r = world.client.post(
        "/v1/documents", headers=auth(world.keys.b), files={"file": ("b.txt", b"B's notes")}
    )
    assert r.status_code == 202, r.text
    theirs = r.json()["document_id"]
    assert world.publisher.sent[-1][1].tenant_id == world.keys.b_id
    assert world.client.get(f"/v1/documents/{theirs}", headers=auth(world.keys.b)).status_code == 200
    assert world.client.get(f"/v1/documents/{theirs}", headers=auth(world.keys.a)).status_code == 404


def test_the_walk_covers_a_route_added_later_and_catches_one_that_leaks(tmp_path: Path) -> None:
    later = APIRouter(prefix="/v1/documents")

    @later.get("/{document_id}/summary")
    async def summary(view: DocumentDep) -> dict[str, str]:
        return {"filename": view.snapshot.filename}

    @later.get("/{document_id}/leak")
    async def leak(document_id: str, parts: PartsDep) -> dict[str, str]:  # no tenant check
        if (view := parts.views.docs.get(document_id)) is None:
            raise DocumentNotFound(f"no document {document_id}")
        return {"filename": view.snapshot.filename}

    @later.get("/{document_id}/notes/{note_id}")
    async def note(document_id: str, note_id: str) -> dict[str, str]:
        return {}

    with make_world(tmp_path, later) as world:
        problems = walk(world)
    assert not [p for p in problems if "/summary" in p]  # covered, and isolated
    assert [p.split(":")[0] for p in problems if "/leak" in p] == ["GET /v1/documents/{document_id}/leak"] * 2
    assert any("/notes/{note_id}" in p and "cannot fill" in p for p in problems), problems
