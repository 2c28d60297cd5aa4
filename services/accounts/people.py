"""Accounts (people who sign in to the web page) and their browser sessions, rebuilt from the
accounts topic like the API keys (services/accounts/store.py), and applied idempotently.

A session cookie is `dss_<session_id>_<secret>`, made like an API key and kept only as its
SHA-256. A session ends when it expires, when its person signs out (`SessionEnded`), when its
account is disabled, or, for a session an API key was exchanged for, when that key is revoked or
expires (checked by the caller at each request).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from services.accounts.keys import hash_key, id_of
from services.events.models import Event, SessionEnded, SessionStarted, UserCreated, UserDisabled

SESSION_PREFIX = "dss_"
USER_SUBJECT, KEY_SUBJECT = "user:", "key:"


@dataclass(slots=True)
class User:
    user_id: str
    tenant_id: str
    username: str
    password_hash: str
    created_at: int
    created_by: str
    disabled_at: int | None = None


@dataclass(slots=True)
class Session:
    session_id: str
    tenant_id: str
    sha256: str
    subject: str  # user:<user_id> or key:<key_id>
    started_at: int
    expires_at: int
    ended: str | None = None  # why it ended early: signed-out, user-disabled


@dataclass(frozen=True, slots=True)
class SessionOf:
    """A live session: whose, and who signed in (a user or a key)."""

    session_id: str
    tenant_id: str
    subject: str
    expires_at: int

    @property
    def user_id(self) -> str | None:
        return self.subject.removeprefix(USER_SUBJECT) if self.subject.startswith(USER_SUBJECT) else None

    @property
    def key_id(self) -> str | None:
        return self.subject.removeprefix(KEY_SUBJECT) if self.subject.startswith(KEY_SUBJECT) else None


@dataclass(frozen=True, slots=True)
class NoSession:
    """Why a cookie names no session: `unknown` (never was, or the wrong secret), `expired`,
    `ended` (signed out, or the account disabled)."""

    reason: Literal["unknown", "expired", "ended"]


class People:
    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._by_name: dict[str, str] = {}  # casefolded user name -> user id (the first to take it)
        self._sessions: dict[str, Session] = {}
        self._early_ends: dict[str, SessionEnded] = {}  # ended before started (redelivery order)
        self._early_disables: dict[str, UserDisabled] = {}

    def apply(self, event: Event) -> bool:
        """Apply one event; False for one that is not about accounts or sessions."""
        if isinstance(event, UserCreated):
            if event.user_id not in self._users:
                user = User(
                    event.user_id,
                    event.tenant_id,
                    event.username,
                    event.password_hash,
                    event.occurred_at,
                    event.created_by,
                )
                self._users[user.user_id] = user
                self._by_name.setdefault(user.username.casefold(), user.user_id)
                if (early := self._early_disables.pop(user.user_id, None)) is not None:
                    user.disabled_at = early.occurred_at
        elif isinstance(event, UserDisabled):
            if (found := self._users.get(event.user_id)) is None:
                self._early_disables[event.user_id] = event
            elif found.disabled_at is None:
                found.disabled_at = event.occurred_at
        elif isinstance(event, SessionStarted):
            if event.session_id not in self._sessions:
                session = Session(
                    event.session_id,
                    event.tenant_id,
                    event.sha256,
                    event.subject,
                    event.occurred_at,
                    event.expires_at,
                )
                if (ended := self._early_ends.pop(session.session_id, None)) is not None:
                    session.ended = ended.reason
                self._sessions[session.session_id] = session
        elif isinstance(event, SessionEnded):
            if (known := self._sessions.get(event.session_id)) is None:
                self._early_ends[event.session_id] = event
            elif known.ended is None:
                known.ended = event.reason
        else:
            return False
        return True

    def user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def user_named(self, username: str) -> User | None:
        user_id = self._by_name.get(username.strip().casefold())
        return self._users.get(user_id) if user_id is not None else None

    def users(self, tenant_id: str | None = None) -> list[User]:
        """Every account (of one tenant), oldest first."""
        found = [u for u in self._users.values() if tenant_id is None or u.tenant_id == tenant_id]
        return sorted(found, key=lambda u: u.created_at)

    def sessions_of(self, user_id: str, now_ms: int) -> list[Session]:
        """The user's live sessions (to end them when the account is disabled)."""
        subject = USER_SUBJECT + user_id
        return [
            s
            for s in self._sessions.values()
            if s.subject == subject and s.ended is None and s.expires_at > now_ms
        ]

    def live(self, session_id: str, now_ms: int) -> SessionOf | None:
        """A session by id, if it is live (the cookie was checked already)."""
        found = self._sessions.get(session_id)
        if found is None or found.ended is not None or found.expires_at <= now_ms:
            return None
        return SessionOf(found.session_id, found.tenant_id, found.subject, found.expires_at)

    def session(self, cookie: str, now_ms: int) -> SessionOf | NoSession:
        """The live session a cookie names, or why it names none. Expired sessions are dropped
        from memory as they are met (the topic keeps them, as the audit trail)."""
        session_id = id_of(cookie, SESSION_PREFIX)
        found = self._sessions.get(session_id) if session_id is not None else None
        if found is None or not secrets.compare_digest(hash_key(cookie), found.sha256):
            return NoSession("unknown")
        if found.expires_at <= now_ms:
            del self._sessions[found.session_id]
            return NoSession("expired")
        if found.ended is not None:
            return NoSession("ended")
        if (user_id := found.subject.removeprefix(USER_SUBJECT)) != found.subject:
            user = self._users.get(user_id)
            if user is None or user.disabled_at is not None:
                return NoSession("ended")
        return SessionOf(found.session_id, found.tenant_id, found.subject, found.expires_at)
