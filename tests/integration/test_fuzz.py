"""The live API under a third-party fuzzer, and the upload limits answered before the body.

Schemathesis (its CLI: the examples, coverage, fuzzing and stateful phases, links followed from
the `Location` of an upload) sends each operation of /openapi.json a bounded number of generated
requests, valid and not, with a fresh tenant's key, and checks every answer: no 5xx, a status code
the schema documents, with a documented content type, a body and headers that match its schema.
The tenant has one finished document, which the fuzzer is given as every `document_id` and
`card_id`: so its requests reach the deck, page, card and share routes, not only their 404. A
failure lists each finding with a curl command that reproduces it.

Then a tenant over its uploads per minute is answered 429 from the headers of its upload: before
it sent a byte of the file. Real broker, worker and API; the LLM simulator.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deckstream.client import DeckstreamClient
from deckstream.stack import Stack, start_stack
from tests.conftest import TOKEN, stack_settings
from tests.integration.test_accounts import NOTES, new_key, until

pytestmark = pytest.mark.kafka
UPLOADS_PER_MINUTE = 3  # small, so the limit test reaches it in a few uploads
MAX_EXAMPLES = 25  # requests per operation in the fuzzing phase: the module takes about a minute here
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
# Not fuzzed: an event stream stays open until its documents are done (all of a tenant's: never),
# so each request would wait for its timeout (their refusals are tests/unit/test_quotas.py and
# test_api.py); an analytics rebuild empties and refills every table from the topics' start.
EXCLUDED = r"/events$|^/v1/analytics/rebuild$"
# The analytics routes answer a tenant's key 403 only: these are fuzzed again with the operator's.
OPERATOR_ONLY = r"^/v1/analytics/(panels|query)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, sim_url: str) -> Iterator[Stack]:
    """The shared fixture's stack (tests/conftest.py), with a small uploads-per-minute limit."""
    llm = {"url": sim_url, "model": "deckstream-sim", "profile": "chat", "max_in_flight": 8}
    home = tmp_path_factory.mktemp("fuzz") / "home"
    settings = stack_settings(
        home, kafka_bootstrap, sim_url, llm=llm, quotas={"uploads_per_minute": UPLOADS_PER_MINUTE}
    )
    running = start_stack(settings, api=True)
    yield running
    running.stop()


def fuzz(stack: Stack, key: str, workdir: Path, *selection: str, **parameters: str) -> list[str]:
    """Run the fuzzer on the stack's API with `key`, `parameters` given these values; what it
    found, one line per finding and then its full account (empty: nothing). `workdir` takes its
    configuration, report and cache."""
    assert stack.api_url is not None
    workdir.mkdir()
    config, report = workdir / "schemathesis.toml", workdir / "report.json"
    config.write_text("[parameters]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in parameters.items()))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config)),
            *("run", f"{stack.api_url}/openapi.json"),
            *("--header", f"Authorization: Bearer {key}", "--checks", ",".join(CHECKS)),
            *("--max-examples", str(MAX_EXAMPLES), "--request-timeout", "30"),
            # A loaded CI machine must not turn slow data generation into a failure.
            *("--suppress-health-check", "all", "--generation-database", "none", "--no-color"),
            *("--report", "json", "--report-json-path", str(report), *selection),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    tested = summary.get("operations", {}).get("tested", 0)
    if done.returncode == 0 and tested:
        return []
    found = [f"{f['code']} {f['title']}: {op}" for f in summary.get("failures", []) for op in f["operations"]]
    found += [f"error: {error}" for error in summary.get("errors", [])]
    found += [] if tested else ["no operation was tested"]
    details = done.stdout[done.stdout.rfind("\n", 0, max(0, done.stdout.find("= FAILURES ="))) + 1 :]
    return [*found, "", details, done.stderr[-2000:]]


def finished_document(stack: Stack, key: str, tmp_path: Path) -> tuple[str, str]:
    """A document of the key's tenant through the pipeline: its id and one of its cards'."""
    assert stack.api_url is not None
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES * 10)
    with DeckstreamClient(stack.api_url, key) as client:
        r = client.upload(notes)
        assert r.status_code == 202, r.text
        doc = str(r.json()["document_id"])
        events = list(client.events(doc, timeout_s=120))
        assert events[-1].event == "done" and events[-1].data["status"] == "completed", events[-3:]
        return doc, str(client.deck(doc).json()["cards"][0]["card_id"])


def test_the_api_answers_a_fuzzer_as_its_schema_says(stack: Stack, tmp_path: Path) -> None:
    # A tenant of its own: its uploads, shares and edits reach no other test's documents.
    key = new_key(stack, "tenants", "add", f"fuzzer-{uuid.uuid4().hex[:6]}")
    until(stack, key, 200, "the fuzzer's key to count")
    document_id, card_id = finished_document(stack, key, tmp_path)
    found = fuzz(
        stack,
        key,
        tmp_path / "tenant",
        "--exclude-path-regex",
        EXCLUDED,
        document_id=document_id,
        card_id=card_id,
    )
    panels = httpx.get(f"{stack.api_url}/v1/analytics/panels", headers={"Authorization": f"Bearer {TOKEN}"})
    panel_id = panels.json()["panels"][0]["id"]  # so the time ranges reach the analytics store
    found += fuzz(
        stack, TOKEN, tmp_path / "operator", "--include-path-regex", OPERATOR_ONLY, panel_id=panel_id
    )
    assert not found, "\n".join(found)


def headers_only(url: str, key: str, declared: int) -> tuple[int, dict[str, str], bytes]:
    """POST an upload's headers, declaring a `declared`-byte body, and not one byte of it; the
    answer: status, headers, body. The API closes the connection after a refusal; a socket
    timeout means it waited for the body instead."""
    api = httpx.URL(url)
    request = (
        f"POST /v1/documents HTTP/1.1\r\nHost: {api.host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection((api.host, api.port or 80), timeout=15) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pytest.fail(f"no answer to the headers alone: the API waits for the body (got {answer!r})")
        except ConnectionResetError:  # closed with bytes of ours unread: a reset, not a FIN
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def test_a_tenant_over_its_uploads_per_minute_is_refused_before_it_sends_the_file(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.api_url is not None
    key = new_key(stack, "tenants", "add", f"busy-{uuid.uuid4().hex[:6]}")
    until(stack, key, 200, "the tenant's key to count")
    notes, junk = tmp_path / "notes.txt", tmp_path / "slides.pptx"
    notes.write_text(NOTES * 10)
    junk.write_bytes(b"\x00\x01 not a zip at all")
    with DeckstreamClient(stack.api_url, key) as client:
        # A file refused once it is read does not use up the minute's uploads.
        assert client.upload(junk).status_code == 415
        answers = [client.upload(notes) for _ in range(UPLOADS_PER_MINUTE)]
        assert [r.status_code for r in answers] == [202] * UPLOADS_PER_MINUTE, answers[-1].text
    status, headers, body = headers_only(stack.api_url, key, 2 * 1024 * 1024)
    assert status == 429, body
    assert headers["content-type"] == "application/problem+json" and headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["limit"] == "uploads_per_minute" and problem["status"] == 429
    assert 1 <= int(headers["retry-after"]) == problem["retry_after_s"] <= 60
    with DeckstreamClient(stack.api_url, TOKEN) as operator:  # not held to the tenant limits
        assert operator.upload(notes).status_code == 202
