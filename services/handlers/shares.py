"""Read-only share links to a deck: create (the link is shown once), list, revoke, open.

A link names a document and a generation (0: the current one when it is opened) and works
until it expires or is revoked (services/accounts/shares.py). Opening it needs no account; it
shows the deck and nothing else of the tenant's. Each opening is a `ShareLinkUsed` for the audit
trail, at most one per link per minute per API process, so a page reloaded in a loop does not
flood the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from services.accounts.keys import issue_secret
from services.accounts.shares import SHARE_PREFIX, NoShare, ShareLink
from services.accounts.store import KeyStore
from services.documents.views import DocumentView, DocumentViews
from services.errors import DocumentNotFound, InputRejected, Refused
from services.events import topics
from services.events.models import ShareLinkCreated, ShareLinkRevoked, ShareLinkUsed, now_ms
from services.events.publisher import EventPublisher
from services.settings import AccountSettings

DAY_MS = 24 * 3600 * 1000
USED_EVERY_S = 60.0
MAX_LABEL = 200


class ShareGone(Refused):
    """The link was real, and has expired or been revoked."""

    code = "share-link-gone"
    http_status = 410


@dataclass(frozen=True, slots=True)
class NewShare:
    link: ShareLink
    token: str  # shown once: the link's path is /shared/<token>

    def __repr__(self) -> str:
        return f"NewShare(share_id={self.link.share_id!r})"


def share_row(link: ShareLink, at_ms: int) -> dict[str, Any]:
    """A link as listed: never its token, which nobody kept."""
    return {
        "share_id": link.share_id,
        "document_id": link.document_id,
        "generation": link.generation or None,
        "label": link.label,
        "created_at": link.created_at,
        "created_by": link.created_by,
        "expires_at": link.expires_at,
        "status": link.state(at_ms),
        "revoked_at": link.revoked_at,
    }


class Shares:
    def __init__(
        self, store: KeyStore, views: DocumentViews, publisher: EventPublisher, settings: AccountSettings
    ):
        self.store, self.views, self.publisher, self.settings = store, views, publisher, settings
        self._used: dict[str, float] = {}  # share id -> when its last ShareLinkUsed was sent

    async def create(
        self,
        view: DocumentView,
        *,
        by: str,
        days: int | None,
        label: str | None,
        generation: int | None,
    ) -> NewShare:
        s = view.snapshot
        days = days if days is not None else self.settings.share_days
        if not 1 <= days <= self.settings.share_days_max:
            raise InputRejected(f"a share link lives 1 to {self.settings.share_days_max} days", "invalid")
        if label is not None and (len(label) > MAX_LABEL or not label.isprintable()):
            raise InputRejected(f"a label is printable text, at most {MAX_LABEL} characters", "invalid")
        if generation is not None and generation not in self.views.generations(view):
            raise DocumentNotFound(
                f"document {s.document_id} has no generation {generation}", "no-such-generation"
            )
        issued = issue_secret(SHARE_PREFIX)
        at = now_ms()
        event = ShareLinkCreated(
            tenant_id=s.tenant_id,
            document_id=s.document_id,
            generation=generation or 0,
            share_id=issued.key_id,
            sha256=issued.sha256,
            expires_at=at + days * DAY_MS,
            label=(label or "").strip() or None,
            created_by=by,
            occurred_at=at,
        )
        await self.publisher.publish(topics.ACCOUNTS.name, event)
        self.store.apply(event)  # listed at once; the feed's copy is a no-op
        link = self.store.shares.get(issued.key_id)
        assert link is not None
        return NewShare(link, issued.token)

    def list(self, view: DocumentView) -> list[dict[str, Any]]:
        at = now_ms()
        s = view.snapshot
        return [share_row(link, at) for link in self.store.shares.of_document(s.tenant_id, s.document_id)]

    async def revoke(self, view: DocumentView, share_id: str, *, by: str) -> None:
        s = view.snapshot
        link = self.store.shares.get(share_id)
        if link is None or link.tenant_id != s.tenant_id or link.document_id != s.document_id:
            raise DocumentNotFound(f"no share link {share_id} of this deck", "no-such-share-link")
        if link.revoked_at is not None:
            return  # revoking twice is what was asked: done
        event = ShareLinkRevoked(
            tenant_id=s.tenant_id,
            document_id=s.document_id,
            generation=link.generation,
            share_id=share_id,
            revoked_by=by,
        )
        await self.publisher.publish(topics.ACCOUNTS.name, event)
        self.store.apply(event)

    async def open(self, token: str, remote: str | None) -> tuple[DocumentView, int]:
        """The deck a link shows and its generation; 404 for no such link, 410 for one that
        expired or was revoked."""
        found = self.store.shares.open(token, now_ms())
        if isinstance(found, NoShare):
            if found.reason == "unknown":
                raise DocumentNotFound("no such share link", "no-such-share-link")
            raise ShareGone(
                f"this share link has {'expired' if found.reason == 'expired' else 'been revoked'}"
            )
        view = self.views.docs.get(found.document_id)
        if view is None or view.snapshot.tenant_id != found.tenant_id:
            raise DocumentNotFound("the shared deck is gone", "no-such-share-link")
        now = time.monotonic()
        if now - self._used.get(found.share_id, -USED_EVERY_S) >= USED_EVERY_S:
            self._used[found.share_id] = now
            used = ShareLinkUsed(
                tenant_id=found.tenant_id,
                document_id=found.document_id,
                generation=found.generation,
                share_id=found.share_id,
                remote=remote,
            )
            await self.publisher.publish(topics.ACCOUNTS.name, used)
        return view, found.generation or self.views.current(view)
