"""What an operator does with tenants and keys: create a tenant (with its first key), add a key,
revoke one, list them. Each returns the events to publish on the accounts topic; nothing here
publishes or changes the store (the store learns them back from the topic, like every reader).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from services.accounts.keys import KEY_ID_ALPHABET, IssuedKey, issue_key
from services.accounts.store import KeyStore, Tenant
from services.errors import Refused
from services.events.models import AccountEvent, ApiKeyCreated, ApiKeyRevoked, TenantCreated, now_ms

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
