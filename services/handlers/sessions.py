"""Signing in to the web page, signing out, and self-registration.

A sign-in (a password, or an API key exchanged once) starts a session: a `SessionStarted` on the
accounts topic, applied to this process's store at once (the feed applies it again when it reads
it back, idempotently) so the very next request knows it. Failed sign-ins are `SignInFailed`
events, and more than `sign_in_failures` of them in 15 minutes for one user name or from one
address make further tries wait (429), so guessing a password stays slow even across user names.
Password hashing is bounded to two at a time: each takes 64 MiB and ~50 ms of a core.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass

from services.accounts import admin
from services.accounts.keys import issue_secret
from services.accounts.passwords import verify_password
from services.accounts.people import SESSION_PREFIX, USER_SUBJECT, SessionOf
from services.accounts.store import KeyStore
from services.errors import RateLimited, Refused
from services.events import topics
from services.events.models import AccountEvent, SessionEnded, SessionStarted, SignInFailed, now_ms
from services.events.publisher import EventPublisher
from services.settings import AccountSettings

THROTTLE_WINDOW_S = 15 * 60.0
MAX_AGENT = 200
HASHING_AT_ONCE = 2
ADDRESS_FACTOR = 10
PRUNE_ABOVE = 10_000  # user names and addresses with recent failures kept before old ones go


class SignInRefused(Refused):
    code = "sign-in-failed"
    http_status = 401


class SignInThrottled(RateLimited):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            "sign_in_failures",
            retry_after_s,
            "too many failed sign-ins for this user name or from this address: wait before trying again",
            "too-many-sign-ins",
        )


class RegistrationClosed(Refused):
    code = "registration-closed"
    http_status = 403


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, for the audit trail."""

    remote: str | None
    user_agent: str | None

    def agent(self) -> str | None:
        return self.user_agent[:MAX_AGENT] if self.user_agent else None


@dataclass(frozen=True, slots=True)
class Started:
    """A new session: `cookie` is set in the browser once and kept nowhere else."""

    cookie: str
    session: SessionOf

    def __repr__(self) -> str:  # never the cookie in a log line
        return f"Started(session_id={self.session.session_id!r})"


class Throttle:
    """Failed sign-ins per user name and per address in a sliding window, in this process. An
    address gets ADDRESS_FACTOR times a user name's limit: a school's NAT or a proxy puts many
    people behind one, and one person's typos must not lock out the class."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failures: dict[str, deque[float]] = {}

    def limit_of(self, key: str) -> int:
        return self.limit if key.startswith("name:") else self.limit * ADDRESS_FACTOR

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - THROTTLE_WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def wait_s(self, keys: list[str], now: float) -> float | None:
        """How long until a try is allowed again, or None if it is now."""
        waits = [
            times[0] + THROTTLE_WINDOW_S - now
            for key in keys
            if len(times := self._recent(key, now)) >= self.limit_of(key)
        ]
        return max(waits) if waits else None

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > PRUNE_ABOVE:  # made-up user names must not grow this forever
            for key in list(self._failures):
                self._recent(key, now)

    def forget(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


def csrf_token(cookie: str) -> str:
    """The token a state-changing request made with this session cookie must carry in a header:
    derived from the cookie (which a script cannot read), so nothing more is kept."""
    return hmac.new(cookie.encode(), b"deckstream-csrf", hashlib.sha256).hexdigest()


class Sessions:
    def __init__(
        self, store: KeyStore, publisher: EventPublisher, settings: AccountSettings, default_tenant: str
    ) -> None:
        self.store, self.publisher, self.settings = store, publisher, settings
        self.default_tenant = default_tenant
        self.throttle = Throttle(settings.sign_in_failures)
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)

    async def _publish(self, events: list[AccountEvent]) -> None:
        for event in events:
            await self.publisher.publish(topics.ACCOUNTS.name, event)
            self.store.apply(event)  # known to this process now; the feed's copy is a no-op

    def _throttle_keys(self, username: str | None, client: Client) -> list[str]:
        keys = [f"addr:{client.remote}"] if client.remote else []
        return keys + ([f"name:{username.strip().casefold()}"] if username else [])

    async def _fail(
        self,
        tenant_id: str,
        reason: str,
        client: Client,
        *,
        username: str | None = None,
        key_id: str | None = None,
    ) -> None:
        event = SignInFailed(
            tenant_id=tenant_id,
            username=username[:MAX_AGENT] if username else None,
            key_id=key_id,
            reason=reason,
            remote=client.remote,
        )
        await self._publish([event])

    def _check_throttle(self, keys: list[str]) -> None:
        wait = self.throttle.wait_s(keys, time.monotonic())
        if wait is not None:
            raise SignInThrottled(wait)

    async def with_password(self, username: str, password: str, client: Client) -> Started:
        keys = self._throttle_keys(username, client)
        try:
            self._check_throttle(keys)
        except SignInThrottled:
            await self._fail(self.default_tenant, "throttled", client, username=username)
            raise
        user = self.store.people.user_named(username)
        async with self._hashing:
            ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
        if user is None or not ok or user.disabled_at is not None:
            reason = "unknown-user" if user is None else "wrong-password" if not ok else "user-disabled"
            self.throttle.failed(keys, time.monotonic())
            await self._fail(
                user.tenant_id if user else self.default_tenant, reason, client, username=username
            )
            # One answer for all three: which user names exist is not told.
            raise SignInRefused("wrong user name or password")
        self.throttle.forget([k for k in keys if k.startswith("name:")])
        return await self.start(user.tenant_id, USER_SUBJECT + user.user_id, client)

    async def key_refused(self, reason: str, key_id: str | None, client: Client) -> None:
        """An API key offered for a session was refused (by the API's one credential check)."""
        keys = self._throttle_keys(None, client)
        self._check_throttle(keys)
        self.throttle.failed(keys, time.monotonic())
        known = self.store.key(key_id) if key_id else None
        tenant = known.tenant_id if known is not None else self.default_tenant
        await self._fail(tenant, reason, client, key_id=key_id)

    async def start(self, tenant_id: str, subject: str, client: Client) -> Started:
        issued = issue_secret(SESSION_PREFIX)
        at = now_ms()
        expires = at + int(self.settings.session_hours * 3600 * 1000)
        started = SessionStarted(
            tenant_id=tenant_id,
            session_id=issued.key_id,
            sha256=issued.sha256,
            subject=subject,
            expires_at=expires,
            user_agent=client.agent(),
            remote=client.remote,
            occurred_at=at,
        )
        await self._publish([started])
        return Started(issued.token, SessionOf(issued.key_id, tenant_id, subject, expires))

    async def end(self, session: SessionOf) -> None:
        await self._publish(
            [SessionEnded(tenant_id=session.tenant_id, session_id=session.session_id, reason="signed-out")]
        )

    async def register(self, username: str, password: str, client: Client) -> Started:
        """A new account in a new tenant of its own (when registration is open), signed in."""
        if self.settings.registration != "open":
            raise RegistrationClosed("accounts are created by an operator here (`deckstream users add`)")
        # Registrations count against the address like failed sign-ins: no tenant flood.
        keys = [f"register:{client.remote}"] if client.remote else []
        self._check_throttle(keys)
        self.throttle.failed(keys, time.monotonic())
        async with self._hashing:
            made = await asyncio.to_thread(
                admin.register, self.store, username, password, by="self-registration"
            )
        await self._publish(made.events)
        return await self.start(made.tenant_id, USER_SUBJECT + made.user_id, client)
