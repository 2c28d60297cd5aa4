"""``deckstream analytics query "SQL"`` and ``deckstream analytics rebuild [--force]``.

With chDB one process owns the database: the API. These commands go through it when it answers
(DECKSTREAM_API_URL, default the configured host and port, with the API token); otherwise they
open the store themselves (chDB under the home, or DECKSTREAM_CLICKHOUSE_URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from services.bootstrap import api_token
from services.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="Query the analytics tables, or rebuild them from Kafka.")
console = Console(stderr=True)


def _api(settings: Settings) -> tuple[str, dict[str, str]] | None:
    """The running API's URL and auth header, if one answers."""
    url = os.environ.get("DECKSTREAM_API_URL") or f"http://{settings.api.host}:{settings.api.port}"
    try:
        if httpx.get(f"{url}/healthz", timeout=2.0).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    return url, {"Authorization": f"Bearer {api_token(settings)}"}


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/]")
    return typer.Exit(1)


def _answer(r: httpx.Response) -> Any:
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise _fail(f"{r.status_code}: {detail}")
    return r.json()


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="one read-only statement")],
    as_json: Annotated[bool, typer.Option("--json", help="print {columns, rows} as JSON")] = False,
) -> None:
    """Run a read-only SQL statement; prints a tab-separated table (a header line, then rows)."""
    settings = get_settings()
    api = _api(settings)
    if api is not None:
        url, headers = api
        body = _answer(
            httpx.post(f"{url}/v1/analytics/query", json={"sql": sql}, headers=headers, timeout=300)
        )
        columns, rows = body["columns"], body["rows"]
    else:
        columns, rows = _query_directly(settings, sql)
    if as_json:
        typer.echo(json.dumps({"columns": columns, "rows": rows}, default=str))
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join(str(v) for v in row))


def _query_directly(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    from services.analytics.store import AnalyticsStore

    try:
        store = AnalyticsStore.open(settings.clickhouse, settings.chdb_dir)
    except Exception as exc:
        raise _fail(f"cannot open the analytics store (is another process using it?): {exc}") from None
    try:
        result = store.query(sql, readonly=True)
    except Exception as exc:
        raise _fail(f"the query failed: {exc}") from None
    finally:
        store.close()
    return result.columns, result.rows


@app.command()
def rebuild(
    force: Annotated[
        bool,
        typer.Option("--force", help="swap in tables even where the log keeps fewer rows than they have"),
    ] = False,
) -> None:
    """Rebuild every table from the topics' start; prints the comparison with the live tables as JSON."""
    settings = get_settings()
    api = _api(settings)
    if api is not None:
        url, headers = api
        with console.status("rebuilding through the API…"):
            report = _answer(
                httpx.post(
                    f"{url}/v1/analytics/rebuild", params={"force": force}, headers=headers, timeout=3600
                )
            )
    else:
        report = asyncio.run(_rebuild_directly(settings, force))
    typer.echo(json.dumps(report, indent=2))
    if not report["identical"]:
        console.print("the rebuilt tables differ from the live ones (see the report)")
        sys.exit(2)


async def _rebuild_directly(settings: Settings, force: bool) -> dict[str, Any]:
    from infra.kafka.cluster import broker_status
    from services.analytics.rebuild import rebuild as run
    from services.analytics.store import AnalyticsStore

    bootstrap = settings.kafka.bootstrap or (broker_status(settings.home) or {}).get("bootstrap")
    if not bootstrap:
        raise _fail(
            "no broker to read from: start it (`deckstream kafka up --detach`) "
            "or set DECKSTREAM_KAFKA_BOOTSTRAP"
        )
    store = await asyncio.to_thread(AnalyticsStore.open, settings.clickhouse, settings.chdb_dir)
    try:
        await asyncio.to_thread(store.migrate)
        return (await run(str(bootstrap), store, force=force)).as_json()
    finally:
        await asyncio.to_thread(store.close)
