"""Each tenant's limits on what it asks of the API, by setting (``DECKSTREAM_QUOTAS_…``, 0:
unlimited): uploads per minute, documents in flight, pages per day, event streams held open.
Over a limit the request is refused with `RateLimited` (the API's 429), which names the limit and
says when to ask again.

    quotas = Quotas(settings.quotas, settings.api.max_subscribers)
    ticket = quotas.admit_upload(views, tenant_id)   # from an upload's headers, before its body
    quotas.end_upload(ticket, accepted=False)        # its file was refused: the count is given back
    queue = quotas.open_stream(views, document_id)   # an event stream, counted as it opens

Limits are counted per API process (several API processes behind one address each allow the
full amount). The operator's key (the bootstrap token) is exempt from the tenant limits, not
from the server's own cap on event streams (``api.max_subscribers``).

Uploads per minute is a sliding window kept here, in memory: it starts empty when the API
starts. Documents in flight and pages per day are read from the API's read model of documents,
which is rebuilt from jobs.progress (compacted: every document's latest snapshot is kept) at
start, so they hold across a restart. An upload is admitted from its headers (the API's upload
gate) and becomes a document only once its body is read and checked: until then it counts as in
flight here, so uploads sent together cannot slip past that limit either.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.documents.state import TERMINAL
from services.documents.views import DocumentViews, Subscription
from services.errors import RateLimited
from services.settings import QuotaSettings

MINUTE_S = 60.0
DAY_S = 24 * 3600.0
IN_FLIGHT_RETRY_S = 30.0  # when one of the tenant's documents finishes cannot be known: ask again soon


@dataclass(frozen=True, slots=True)
class UploadTicket:
    """An upload admitted against its tenant's limits, counted until `Quotas.end_upload`."""

    tenant_id: str
    at: float  # when it entered the uploads-per-minute window


class Quotas:
    """The limits of one API process; ``clock`` gives wall-clock seconds (snapshots' ``created_at``
    is wall-clock milliseconds)."""

    def __init__(
        self, settings: QuotaSettings, max_subscribers: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings, self.max_subscribers, self.clock = settings, max_subscribers, clock
        self._uploads: dict[str, deque[float]] = {}  # tenant -> times of its uploads in the last minute
        self._pending: dict[str, int] = {}  # tenant -> uploads admitted and not yet answered

    def admit_upload(
        self, views: DocumentViews, tenant_id: str, *, exempt: bool = False
    ) -> UploadTicket | None:
        """Count an upload, or refuse it (`RateLimited`) if the tenant is at any of its limits.
        A refused upload is not counted. The ticket is given to `end_upload` once the upload is
        answered; None: the operator's upload, not counted."""
        if exempt:
            return None
        now = self.clock()
        self._check_in_flight(views, tenant_id)
        self._check_pages(views, tenant_id, now)
        self._take_upload(tenant_id, now)
        self._pending[tenant_id] = self._pending.get(tenant_id, 0) + 1
        return UploadTicket(tenant_id, now)

    def end_upload(self, ticket: UploadTicket, *, accepted: bool) -> None:
        """An admitted upload was answered. Accepted, it is one of the tenant's documents from now
        on (in the views). Refused (its file empty, too large, unreadable, its options invalid)
        or abandoned mid-body, its count is given back: a rejected file does not use up the
        tenant's uploads per minute."""
        left = self._pending.get(ticket.tenant_id, 0) - 1
        if left > 0:
            self._pending[ticket.tenant_id] = left
        else:
            self._pending.pop(ticket.tenant_id, None)
        window = self._uploads.get(ticket.tenant_id)
        if not accepted and window is not None and ticket.at in window:
            window.remove(ticket.at)  # any upload counted at that same instant: they are alike

    def open_stream(self, views: DocumentViews, document_id: str, *, exempt: bool = False) -> Subscription:
        """Subscribe to a document's events within the tenant's and the server's caps: checked
        and counted in one step (`DocumentViews.subscribe`), so concurrent requests cannot slip
        past them."""
        tenant_cap = 0 if exempt else self.settings.sse_streams
        return views.subscribe(document_id, tenant_cap=tenant_cap, total_cap=self.max_subscribers)

    def open_multiplexed_stream(
        self,
        views: DocumentViews,
        tenant_id: str,
        document_ids: Sequence[str] | None,
        *,
        exempt: bool = False,
    ) -> Subscription:
        """One stream of several documents (None: all of the tenant's, new ones too), counted as
        one stream against the same caps, in the same one step (`DocumentViews.subscribe_many`)."""
        tenant_cap = 0 if exempt else self.settings.sse_streams
        return views.subscribe_many(
            tenant_id, document_ids, tenant_cap=tenant_cap, total_cap=self.max_subscribers
        )

    def _take_upload(self, tenant_id: str, now: float) -> None:
        limit = self.settings.uploads_per_minute
        if not limit:
            return
        window = self._uploads.setdefault(tenant_id, deque())
        while window and window[0] <= now - MINUTE_S:
            window.popleft()
        if len(window) >= limit:
            raise RateLimited(
                "uploads_per_minute",
                window[0] + MINUTE_S - now,
                f"your tenant may upload {limit} documents a minute",
            )
        window.append(now)

    def _check_in_flight(self, views: DocumentViews, tenant_id: str) -> None:
        limit = self.settings.documents_in_flight
        if not limit:
            return
        running = self._pending.get(tenant_id, 0) + sum(
            1
            for v in views.docs.values()
            if v.snapshot.tenant_id == tenant_id and v.snapshot.status not in TERMINAL
        )
        if running >= limit:
            raise RateLimited(
                "documents_in_flight",
                IN_FLIGHT_RETRY_S,
                f"your tenant has {running} documents in progress, its limit: wait for one to finish",
            )

    def _check_pages(self, views: DocumentViews, tenant_id: str, now: float) -> None:
        """Refused once the pages of the tenant's documents uploaded in the last 24 h reach the
        limit. A document's pages are known only once it is extracted, so the last upload let in
        may take the day's total over the limit by its own pages (at most ``limits.max_pages``).
        A reprocessing counts its document's pages once, not again."""
        limit = self.settings.pages_per_day
        if not limit:
            return
        since_ms = (now - DAY_S) * 1000
        recent = sorted(
            (v.snapshot.created_at, v.snapshot.pages_total)
            for v in views.docs.values()
            if v.snapshot.tenant_id == tenant_id and v.snapshot.created_at > since_ms
        )
        used = sum(pages for _, pages in recent)
        if used < limit:
            return
        retry_s = DAY_S
        for created_ms, pages in recent:  # the oldest leave the window first
            used -= pages
            if used < limit:
                retry_s = created_ms / 1000 + DAY_S - now
                break
        raise RateLimited(
            "pages_per_day", retry_s, f"your tenant's documents of the last 24 h have reached {limit} pages"
        )
