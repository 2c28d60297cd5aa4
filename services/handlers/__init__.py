"""Use cases, one module each. A handler takes its dependencies (ports) and one message and
returns what to emit; it does I/O only through the ports. Agents and routes call them.

    upload.py       accept an upload                        POST /v1/documents
    control.py      cancel; retry failed chunks             POST /v1/documents/{id}/cancel|retry
    documents.py    list, status, page ledger               GET /v1/documents…
    export.py       a deck as JSON or CSV                   GET /v1/decks/{id}
    split.py        split an upload into pages and chunks   agent split_documents
    write_cards.py  write a chunk's cards; retry rounds     agents write-cards-*, retry_later
    track.py        fold document facts; reconcile; notices agent track_documents
    assemble.py     assemble a deck                         (called by track.py)
"""

from __future__ import annotations

from dataclasses import dataclass

from services.events.models import Event
from services.events.topics import TopicSpec


@dataclass(frozen=True, slots=True)
class Send:
    """An event for a topic, keyed by its document."""

    topic: TopicSpec
    event: Event


@dataclass(frozen=True, slots=True)
class HandBack:
    """Put the event back at the end of the topic it came from, and see it stored before the
    record it replaces counts as read: the worker is rebalancing or stopping."""

    event: Event


Emit = Send | HandBack
