"""Read-only share links to a deck, rebuilt from the accounts topic.

A link is `/shared/dsl_<share_id>_<secret>`: 256 random bits made like an API key and kept only
as its SHA-256 on the log. It works until it expires or is revoked. Why not an HMAC-signed URL:
a signature still needs server state to be revoked, and a signing key that every API process
shares and that must be rotated; an unguessable token checked against the log needs neither,
and a leaked database of hashes opens no deck.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from services.accounts.keys import hash_key, id_of
from services.events.models import Event, ShareLinkCreated, ShareLinkRevoked

SHARE_PREFIX = "dsl_"
ShareState = Literal["active", "expired", "revoked"]


@dataclass(slots=True)
class ShareLink:
    share_id: str
    tenant_id: str
    document_id: str
    generation: int  # 0: whichever generation is current when the link is opened
    sha256: str
    created_at: int
    created_by: str
    expires_at: int
    label: str | None = None
    revoked_at: int | None = None
    revoked_by: str | None = None

    def state(self, now_ms: int) -> ShareState:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now_ms else "active"


@dataclass(frozen=True, slots=True)
class NoShare:
    reason: Literal["unknown", "expired", "revoked"]


class ShareLinks:
    def __init__(self) -> None:
        self._links: dict[str, ShareLink] = {}
        self._early: dict[str, ShareLinkRevoked] = {}

    def apply(self, event: Event) -> bool:
        if isinstance(event, ShareLinkCreated):
            if event.share_id not in self._links:
                link = ShareLink(
                    share_id=event.share_id,
                    tenant_id=event.tenant_id,
                    document_id=event.document_id,
                    generation=event.generation,
                    sha256=event.sha256,
                    created_at=event.occurred_at,
                    created_by=event.created_by,
                    expires_at=event.expires_at,
                    label=event.label,
                )
                self._links[link.share_id] = link
                if (early := self._early.pop(link.share_id, None)) is not None:
                    link.revoked_at, link.revoked_by = early.occurred_at, early.revoked_by
        elif isinstance(event, ShareLinkRevoked):
            if (known := self._links.get(event.share_id)) is None:
                self._early[event.share_id] = event
            elif known.revoked_at is None:
                known.revoked_at, known.revoked_by = event.occurred_at, event.revoked_by
        else:
            return False  # ShareLinkUsed is audit only
        return True

    def get(self, share_id: str) -> ShareLink | None:
        return self._links.get(share_id)

    def of_document(self, tenant_id: str, document_id: str) -> list[ShareLink]:
        """A deck's links, newest first (expired and revoked ones too: the list says which)."""
        found = [
            link
            for link in self._links.values()
            if link.tenant_id == tenant_id and link.document_id == document_id
        ]
        return sorted(found, key=lambda link: link.created_at, reverse=True)

    def open(self, token: str, now_ms: int) -> ShareLink | NoShare:
        """The link a token names, if it works now. Expired and revoked links are told apart
        (the token holder was given the link: saying it expired helps them and tells nothing)."""
        share_id = id_of(token, SHARE_PREFIX)
        link = self._links.get(share_id) if share_id is not None else None
        if link is None or not secrets.compare_digest(hash_key(token), link.sha256):
            return NoShare("unknown")
        state = link.state(now_ms)
        return link if state == "active" else NoShare(state)
