"""The tenants and their API keys, accounts, sessions and share links, in memory, rebuilt from
the accounts topic.

Kafka is the system of record: the API's progress feed and the CLI read the accounts topic from
its start and `apply` each event here. Applying is idempotent (delivery is at-least-once): a
tenant or key seen before is left as it was. The default tenant (`settings.tenant`) exists
without an event: its operator key is the bootstrap token, checked by the API, not here; keys
added to it are ordinary keys.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from services.accounts.keys import hash_key, key_id_of
from services.accounts.people import People
from services.accounts.shares import ShareLinks
from services.events.models import ApiKeyCreated, ApiKeyRevoked, Event, TenantCreated

KeyState = Literal["active", "expired", "revoked"]


@dataclass(slots=True)
class Tenant:
    tenant_id: str
    name: str
    created_at: int | None  # None: the implicit default tenant
    created_by: str = ""

    @property
    def implicit(self) -> bool:
        return self.created_at is None


@dataclass(slots=True)
class ApiKey:
    key_id: str
    tenant_id: str
    label: str | None
    sha256: str
    created_at: int
    created_by: str
    expires_at: int | None = None
    revoked_at: int | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def state(self, now_ms: int) -> KeyState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now_ms:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class Verified:
    tenant_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a key is refused: `unknown` (no such key, or the wrong secret: told apart from
    nothing), `revoked` or `expired` (only said to someone who holds the whole key)."""

    reason: Literal["unknown", "revoked", "expired"]
    key_id: str | None = None


class KeyStore:
    def __init__(self, default_tenant: str | None = None) -> None:
        self.default_tenant = default_tenant
        self._tenants: dict[str, Tenant] = {}
        self._by_name: dict[str, str] = {}  # casefolded name -> tenant id (the first to take it)
        self._keys: dict[str, ApiKey] = {}
        self._early_revocations: dict[str, ApiKeyRevoked] = {}  # revoked before created (reordered)
        self.people = People()  # accounts with passwords, and browser sessions
        self.shares = ShareLinks()
        if default_tenant is not None:
            self._add_tenant(Tenant(default_tenant, default_tenant, None))

    def _add_tenant(self, tenant: Tenant) -> None:
        self._tenants[tenant.tenant_id] = tenant
        self._by_name.setdefault(tenant.name.casefold(), tenant.tenant_id)

    def apply(self, event: Event) -> bool:
        """Apply one event; False for one that is not an account event (left alone)."""
        if isinstance(event, TenantCreated):
            if event.tenant_id not in self._tenants:
                self._add_tenant(
                    Tenant(event.tenant_id, event.tenant_name, event.occurred_at, event.created_by)
                )
        elif isinstance(event, ApiKeyCreated):
            if event.key_id not in self._keys:
                key = ApiKey(
                    key_id=event.key_id,
                    tenant_id=event.tenant_id,
                    label=event.label,
                    sha256=event.sha256,
                    created_at=event.occurred_at,
                    created_by=event.created_by,
                    expires_at=event.expires_at,
                )
                self._keys[key.key_id] = key
                if (early := self._early_revocations.pop(key.key_id, None)) is not None:
                    self._revoke(key, early)
        elif isinstance(event, ApiKeyRevoked):
            known = self._keys.get(event.key_id)
            if known is None:
                self._early_revocations[event.key_id] = event
            elif known.revoked_at is None:
                self._revoke(known, event)
        else:
            return self.people.apply(event) or self.shares.apply(event)
        return True

    @staticmethod
    def _revoke(key: ApiKey, event: ApiKeyRevoked) -> None:
        key.revoked_at, key.revoked_by, key.revoke_reason = event.occurred_at, event.revoked_by, event.reason

    def check(self, token: str, now_ms: int) -> Verified | Denied:
        """Whose key this is, or why it is refused. Looked up by its id, then its hash compared
        in constant time."""
        key_id = key_id_of(token)
        key = self._keys.get(key_id) if key_id is not None else None
        if key is None or not secrets.compare_digest(hash_key(token), key.sha256):
            return Denied("unknown")
        state = key.state(now_ms)
        if state != "active":
            return Denied(state, key.key_id)
        return Verified(key.tenant_id, key.key_id)

    def authenticate(self, token: str, now_ms: int) -> tuple[str, str] | None:
        """(tenant id, key id) of a valid key, else None."""
        found = self.check(token, now_ms)
        return (found.tenant_id, found.key_id) if isinstance(found, Verified) else None

    def tenant(self, ref: str) -> Tenant | None:
        """A tenant by id, else by name (case-insensitively)."""
        found = self._tenants.get(ref)
        if found is None and (tenant_id := self._by_name.get(ref.casefold())) is not None:
            found = self._tenants[tenant_id]
        return found

    def tenants(self) -> list[Tenant]:
        """The default tenant first, then by creation."""
        return sorted(self._tenants.values(), key=lambda t: (t.created_at is not None, t.created_at or 0))

    def key(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    def keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (of one tenant), oldest first."""
        found = [k for k in self._keys.values() if tenant_id is None or k.tenant_id == tenant_id]
        return sorted(found, key=lambda k: k.created_at)
