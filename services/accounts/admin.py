"""What an operator does with tenants and keys: create a tenant (with its first key), add a key,
revoke one, list them. Each returns the events to publish on the accounts topic; nothing here
publishes or changes the store (the store learns them back from the topic, like every reader).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from services.accounts.keys import KEY_ID_ALPHABET, IssuedKey, issue_key
from services.accounts.passwords import hash_password
from services.accounts.people import User
from services.accounts.store import KeyStore, Tenant
from services.errors import Conflict, InputRejected, Refused
from services.events.models import (
    AccountEvent,
    ApiKeyCreated,
    ApiKeyRevoked,
    SessionEnded,
    TenantCreated,
    UserCreated,
    UserDisabled,
    now_ms,
)

DAY_MS = 24 * 3600 * 1000
MAX_NAME = 64
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Issued:
    """The events to publish, and the new key to show once."""

    tenant_id: str
    events: list[AccountEvent]
    key: IssuedKey


def new_tenant_id() -> str:
    return "tn_" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(10))


def new_user_id() -> str:
    return "usr_" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(10))


@dataclass(frozen=True, slots=True)
class NewUser:
    tenant_id: str
    user_id: str
    events: list[AccountEvent]


def _text(value: str | None, what: str, limit: int = MAX_TEXT) -> str | None:
    """Printed in tab-separated listings: one line, no tabs, no control characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or not value.isprintable():
        raise Refused(f"the {what} must be printable text on one line, at most {limit} characters", "invalid")
    return value


def create_tenant(
    store: KeyStore,
    name: str,
    *,
    by: str,
    label: str | None = None,
    expires_days: int | None = None,
    at_ms: int | None = None,
) -> Issued:
    """A new tenant named `name` and its first key. Refused when a tenant has that name or id."""
    clean = _text(name, "tenant name", MAX_NAME)
    if clean is None:
        raise Refused("a tenant needs a name", "invalid")
    if (taken := store.tenant(clean)) is not None:
        raise Refused(f"a tenant named {clean!r} exists already ({taken.tenant_id})", "tenant-exists")
    at = at_ms if at_ms is not None else now_ms()
    tenant_id = new_tenant_id()
    created = TenantCreated(tenant_id=tenant_id, tenant_name=clean, created_by=by, occurred_at=at)
    first = _new_key(tenant_id, label=label, expires_days=expires_days, by=by, at_ms=at)
    return Issued(tenant_id, [created, first.events[0]], first.key)


def add_key(
    store: KeyStore,
    tenant: str,
    *,
    by: str,
    label: str | None = None,
    expires_days: int | None = None,
    at_ms: int | None = None,
) -> Issued:
    """A new key of an existing tenant (by id or name; the default tenant too)."""
    found = store.tenant(tenant)
    if found is None:
        raise Refused(f"no tenant {tenant!r} (`deckstream tenants list` shows them)", "unknown-tenant")
    at = at_ms if at_ms is not None else now_ms()
    return _new_key(found.tenant_id, label=label, expires_days=expires_days, by=by, at_ms=at)


def _new_key(tenant_id: str, *, label: str | None, expires_days: int | None, by: str, at_ms: int) -> Issued:
    if expires_days is not None and expires_days < 1:
        raise Refused("a key expires after one day at the soonest", "invalid")
    key = issue_key()
    event = ApiKeyCreated(
        tenant_id=tenant_id,
        key_id=key.key_id,
        label=_text(label, "label"),
        sha256=key.sha256,
        expires_at=at_ms + expires_days * DAY_MS if expires_days is not None else None,
        created_by=by,
        occurred_at=at_ms,
    )
    return Issued(tenant_id, [event], key)


def revoke_key(
    store: KeyStore, key_id: str, *, by: str, reason: str | None = None, at_ms: int | None = None
) -> ApiKeyRevoked:
    """Refuse `key_id` from now on. An unknown or already revoked key is refused with why."""
    key = store.key(key_id)
    if key is None:
        raise Refused(f"no API key {key_id!r} (`deckstream keys list` shows them)", "unknown-key")
    if key.revoked_at is not None:
        raise Refused(f"API key {key_id} was revoked already", "already-revoked")
    at = at_ms if at_ms is not None else now_ms()
    return ApiKeyRevoked(
        tenant_id=key.tenant_id, key_id=key_id, reason=_text(reason, "reason"), revoked_by=by, occurred_at=at
    )


def tenant_rows(store: KeyStore, at_ms: int) -> list[dict[str, Any]]:
    """Each tenant with its keys counted by state (the default tenant's operator key, the
    bootstrap token, is not among them)."""
    rows = []
    for tenant in store.tenants():
        states = [k.state(at_ms) for k in store.keys(tenant.tenant_id)]
        rows.append(
            {
                "tenant": tenant.tenant_id,
                "name": tenant.name,
                "active": states.count("active"),
                "revoked": states.count("revoked"),
                "expired": states.count("expired"),
                "created": tenant.created_at,
            }
        )
    return rows


def key_rows(store: KeyStore, tenant: str | None, at_ms: int) -> list[dict[str, Any]]:
    """Each key (of one tenant): never a secret, which nobody has kept."""
    found: Tenant | None = None
    if tenant is not None and (found := store.tenant(tenant)) is None:
        raise Refused(f"no tenant {tenant!r} (`deckstream tenants list` shows them)", "unknown-tenant")
    return [
        {
            "key_id": k.key_id,
            "tenant": k.tenant_id,
            "label": k.label,
            "created": k.created_at,
            "expires": k.expires_at,
            "status": k.state(at_ms),
            "revoked": k.revoked_at,
            "reason": k.revoke_reason,
        }
        for k in store.keys(found.tenant_id if found is not None else None)
    ]


MIN_USERNAME = 3


def _username(store: KeyStore, username: str) -> str:
    """A user name or an email address: printable, no spaces, 3 to 64 characters, not taken."""
    clean = username.strip()
    if (
        not MIN_USERNAME <= len(clean) <= MAX_NAME
        or not clean.isprintable()
        or any(c.isspace() for c in clean)
    ):
        raise InputRejected(
            f"a user name is {MIN_USERNAME} to {MAX_NAME} printable characters without spaces",
            "invalid-username",
        )
    if store.people.user_named(clean) is not None:
        raise Conflict(f"the user name {clean!r} is taken", "username-taken")
    return clean


def create_user(store: KeyStore, tenant: str, username: str, password: str, *, by: str) -> NewUser:
    """An account in an existing tenant (by id or name), with a password hashed with argon2id.
    Hashing takes ~50 ms and 64 MiB: call it off the event loop."""
    found = store.tenant(tenant)
    if found is None:
        raise Refused(f"no tenant {tenant!r} (`deckstream tenants list` shows them)", "unknown-tenant")
    name = _username(store, username)
    user_id = new_user_id()
    created = UserCreated(
        tenant_id=found.tenant_id,
        user_id=user_id,
        username=name,
        password_hash=hash_password(password),
        created_by=by,
    )
    return NewUser(found.tenant_id, user_id, [created])


def register(store: KeyStore, username: str, password: str, *, by: str) -> NewUser:
    """Self-registration: a new tenant named after the account, and the account in it."""
    name = _username(store, username)
    if store.tenant(name) is not None:
        raise Conflict(f"the user name {name!r} is taken", "username-taken")
    tenant_id = new_tenant_id()
    at = now_ms()
    tenant = TenantCreated(tenant_id=tenant_id, tenant_name=name, created_by=by, occurred_at=at)
    user_id = new_user_id()
    created = UserCreated(
        tenant_id=tenant_id,
        user_id=user_id,
        username=name,
        password_hash=hash_password(password),
        created_by=by,
        occurred_at=at,
    )
    return NewUser(tenant_id, user_id, [tenant, created])


def find_user(store: KeyStore, ref: str) -> User:
    """An account by id or user name."""
    found = store.people.user(ref) or store.people.user_named(ref)
    if found is None:
        raise Refused(f"no user {ref!r} (`deckstream users list` shows them)", "unknown-user")
    return found


def disable_user(store: KeyStore, ref: str, *, by: str, at_ms: int | None = None) -> list[AccountEvent]:
    """The account can no longer sign in, and its live sessions end."""
    user = find_user(store, ref)
    if user.disabled_at is not None:
        raise Refused(f"user {user.username} was disabled already", "already-disabled")
    at = at_ms if at_ms is not None else now_ms()
    events: list[AccountEvent] = [
        UserDisabled(tenant_id=user.tenant_id, user_id=user.user_id, disabled_by=by, occurred_at=at)
    ]
    events += [
        SessionEnded(
            tenant_id=user.tenant_id, session_id=s.session_id, reason="user-disabled", occurred_at=at
        )
        for s in store.people.sessions_of(user.user_id, at)
    ]
    return events


def user_rows(store: KeyStore, tenant: str | None) -> list[dict[str, Any]]:
    """Each account (of one tenant): never a password hash."""
    found: Tenant | None = None
    if tenant is not None and (found := store.tenant(tenant)) is None:
        raise Refused(f"no tenant {tenant!r} (`deckstream tenants list` shows them)", "unknown-tenant")
    return [
        {
            "user_id": u.user_id,
            "tenant": u.tenant_id,
            "username": u.username,
            "created": u.created_at,
            "status": "disabled" if u.disabled_at is not None else "active",
        }
        for u in store.people.users(found.tenant_id if found is not None else None)
    ]
