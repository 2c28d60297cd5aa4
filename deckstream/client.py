"""A small synchronous client of the deckstream API (used by `deckstream demo`, tests, benches)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.llm.pools import KEEPALIVE_EXPIRY_S


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: Any
    id: str | None


class DeckstreamClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, read=None),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),  # see services/llm/pools.py
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DeckstreamClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def upload(
        self, path: Path, options: dict[str, Any] | None = None, filename: str | None = None
    ) -> httpx.Response:
        data = {"options": json.dumps(options)} if options else None
        with path.open("rb") as f:
            return self.http.post("/v1/documents", files={"file": (filename or path.name, f)}, data=data)

    def status(self, document_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/documents/{document_id}")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def deck(self, document_id: str, fmt: str = "json") -> httpx.Response:
        return self.http.get(f"/v1/decks/{document_id}", params={"format": fmt})

    def events(
        self, document_id: str, last_event_id: str | None = None, timeout_s: float | None = None
    ) -> Iterator[SSEEvent]:
        """Follow a document's SSE stream until the server ends it (after `done`).

        With timeout_s, raises TimeoutError once that long has passed (checked on every line,
        keep-alive pings included, so a silent stream cannot hang the caller).
        """
        return self._follow(f"/v1/documents/{document_id}/events", {}, last_event_id, timeout_s)

    def events_of(
        self,
        documents: list[str] | None = None,
        last_event_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[SSEEvent]:
        """Follow many documents on one stream (None: all yours, new ones too; that stream does
        not end by itself: stop reading to close it). As `events` otherwise."""
        params = {"documents": ",".join(documents)} if documents is not None else {}
        return self._follow("/v1/events", params, last_event_id, timeout_s)

    def _follow(
        self, path: str, params: dict[str, str], last_event_id: str | None, timeout_s: float | None
    ) -> Iterator[SSEEvent]:
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with self.http.stream("GET", path, params=params, headers=headers) as r:
            r.raise_for_status()
            event, data, eid = "message", [], None
            for line in r.iter_lines():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the event stream {path} did not end within {timeout_s} s")
                if line == "":
                    if data:
                        yield SSEEvent(event, json.loads("\n".join(data)), eid)
                    event, data, eid = "message", [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id":
                        eid = value
