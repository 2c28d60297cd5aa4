"""``deckstream tenants add|list`` and ``deckstream keys add|revoke|list``: tenants and their API
keys, on the accounts topic (services/accounts; docs/tenants.md).

They read the topic whole and publish to it, on DECKSTREAM_KAFKA_BOOTSTRAP or the local broker
`deckstream kafka up` runs; a running API takes a new or revoked key within a second. A new key
is printed once, alone on stdout (`KEY=$(deckstream tenants add NAME)`), and kept nowhere but
as a hash; listings are tab-separated lines on stdout; the rest goes to stderr.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from deckstream.replay_cli import _bootstrap, _fail, console
from services.accounts import admin
from services.accounts.admin import Issued
from services.accounts.log import load_key_store, publish_account_events
from services.accounts.store import KeyStore
from services.errors import Refused
from services.events import topics
from services.events.models import AccountEvent, now_ms
from services.settings import get_settings

tenants_app = typer.Typer(no_args_is_help=True, help="Create and list tenants.")
keys_app = typer.Typer(no_args_is_help=True, help="Add, revoke and list API keys.")
users_app = typer.Typer(no_args_is_help=True, help="Add, disable and list accounts for the web page.")

LabelOption = Annotated[str | None, typer.Option(help="what the key is for: a person, a script")]
ExpiresOption = Annotated[
    int | None, typer.Option("--expires-days", min=1, help="refused after this many days (default: never)")
]


def _by() -> str:
    """Who is acting, for the audit trail: the CLI and the system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name (a container without a passwd entry)
        return "cli"


def _store() -> tuple[str, KeyStore]:
    settings = get_settings()
    bootstrap = _bootstrap(settings)
    try:
        store = asyncio.run(load_key_store(bootstrap, settings.tenant))
    except Exception as exc:
        if "not found" in str(exc):
            raise _fail(
                f"no {topics.ACCOUNTS.name} topic on {bootstrap}: `deckstream kafka up` "
                "(or `deckstream up`) creates it"
            ) from None
        raise _fail(f"cannot read the {topics.ACCOUNTS.name} topic on {bootstrap}: {exc}") from None
    return bootstrap, store


def _publish(bootstrap: str, events: list[AccountEvent]) -> None:
    try:
        asyncio.run(publish_account_events(bootstrap, events))
    except Exception as exc:
        raise _fail(f"cannot publish to {topics.ACCOUNTS.name} on {bootstrap}: {exc}") from None


def _issue(bootstrap: str, issued: Issued, what: str) -> None:
    _publish(bootstrap, issued.events)
    typer.echo(issued.key.token)
    console.print(
        f"{escape(what)}: key {issued.key.key_id} of tenant {issued.tenant_id}. The key above is shown "
        "this once and kept nowhere (only its hash): store it now. Use it as `Authorization: Bearer KEY`."
    )


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(columns: tuple[str, ...], rows: list[dict[str, Any]], times: tuple[str, ...]) -> None:
    typer.echo("\t".join(columns))
    for row in rows:
        cells = (_when(row[c]) if c in times else "" if row[c] is None else str(row[c]) for c in columns)
        typer.echo("\t".join(cells))


@tenants_app.command("add")
def tenants_add(
    name: Annotated[str, typer.Argument(help="the tenant's name: unique, case-insensitively")],
    label: LabelOption = None,
    expires_days: ExpiresOption = None,
) -> None:
    """Create a tenant and its first API key; print the key (once)."""
    bootstrap, store = _store()
    try:
        issued = admin.create_tenant(store, name, by=_by(), label=label, expires_days=expires_days)
    except Refused as exc:
        raise _fail(exc.reason) from None
    _issue(bootstrap, issued, f"created tenant {name.strip()}")


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant: id, name, and its keys by state (never a secret)."""
    _, store = _store()
    columns = ("tenant", "name", "active", "revoked", "expired", "created")
    _table(columns, admin.tenant_rows(store, now_ms()), ("created",))
    default = store.default_tenant
    console.print(
        f"tenant {default} is the default one: its operator key is the API token `deckstream up` "
        "prints (DECKSTREAM_API_TOKEN, or api-token in DECKSTREAM_HOME), not counted above"
    )


@keys_app.command("add")
def keys_add(
    tenant: Annotated[str, typer.Argument(help="the tenant's id or name")],
    label: LabelOption = None,
    expires_days: ExpiresOption = None,
) -> None:
    """Add an API key to a tenant; print the key (once)."""
    bootstrap, store = _store()
    try:
        issued = admin.add_key(store, tenant, by=_by(), label=label, expires_days=expires_days)
    except Refused as exc:
        raise _fail(exc.reason) from None
    _issue(bootstrap, issued, "added")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (`keys list`; in a key: dsk_<id>_…)")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit trail")] = None,
) -> None:
    """Revoke an API key: the API refuses it from now on (a running API within a second)."""
    bootstrap, store = _store()
    try:
        event = admin.revoke_key(store, key_id, by=_by(), reason=reason)
    except Refused as exc:
        raise _fail(exc.reason) from None
    _publish(bootstrap, [event])
    typer.echo(f"{event.key_id}\t{event.tenant_id}")
    console.print(f"revoked key {event.key_id} of tenant {event.tenant_id}")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Argument(help="only this tenant's (id or name)")] = None,
) -> None:
    """API keys: id, tenant, label, created, expiry, status, revoked and why (never a secret)."""
    _, store = _store()
    try:
        rows = admin.key_rows(store, tenant, now_ms())
    except Refused as exc:
        raise _fail(exc.reason) from None
    columns = ("key_id", "tenant", "label", "created", "expires", "status", "revoked", "reason")
    _table(columns, rows, ("created", "expires", "revoked"))


def _password(from_stdin: bool) -> str:
    """From stdin (one line, for scripts), else asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise _fail("the two passwords differ")
    return first


@users_app.command("add")
def users_add(
    tenant: Annotated[str, typer.Argument(help="the tenant's id or name")],
    username: Annotated[str, typer.Argument(help="what the person signs in with: a name or an email")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin instead of asking")
    ] = False,
) -> None:
    """Add an account to a tenant; its password is kept only as an argon2id hash."""
    bootstrap, store = _store()
    try:
        made = admin.create_user(store, tenant, username, _password(password_stdin), by=_by())
    except Refused as exc:
        raise _fail(exc.reason) from None
    _publish(bootstrap, made.events)
    typer.echo(f"{made.user_id}\t{made.tenant_id}")
    console.print(
        f"added {escape(username.strip())} to tenant {made.tenant_id}: they can sign in to the web page"
    )


@users_app.command("disable")
def users_disable(user: Annotated[str, typer.Argument(help="the account's id or user name")]) -> None:
    """Stop an account signing in; its open sessions end (a running API within a second)."""
    bootstrap, store = _store()
    try:
        events = admin.disable_user(store, user, by=_by())
    except Refused as exc:
        raise _fail(exc.reason) from None
    _publish(bootstrap, events)
    console.print(f"disabled {escape(user)}; {len(events) - 1} open session(s) ended")


@users_app.command("list")
def users_list(
    tenant: Annotated[str | None, typer.Argument(help="only this tenant's (id or name)")] = None,
) -> None:
    """Accounts: id, tenant, user name, created, status (never a password hash)."""
    _, store = _store()
    try:
        rows = admin.user_rows(store, tenant)
    except Refused as exc:
        raise _fail(exc.reason) from None
    _table(("user_id", "tenant", "username", "created", "status"), rows, ("created",))


def register(app: typer.Typer) -> None:
    app.add_typer(tenants_app, name="tenants", help="Create and list tenants (each sees only its own).")
    app.add_typer(keys_app, name="keys", help="Add, revoke and list the tenants' API keys.")
    app.add_typer(users_app, name="users", help="Add, disable and list accounts for the web page.")
