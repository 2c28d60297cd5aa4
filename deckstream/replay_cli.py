"""``deckstream replay``, ``generations`` and ``promote``: reprocess kept uploads into new
generations, compare a document's generations, and choose the one the API serves.

They read the log whole (documents.uploaded, jobs.progress, documents.generations) from
DECKSTREAM_KAFKA_BOOTSTRAP or the local broker `deckstream kafka up` runs, and the blob store
under DECKSTREAM_HOME. Results go to stdout, one tab-separated line per document; the rest to
stderr.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.documents.decks import kept_generations, load_generation
from services.errors import Refused
from services.events import topics
from services.events.log_reader import read_topic
from services.events.models import (
    DocumentProgress,
    DocumentUploaded,
    Event,
    GenerationPromoted,
)
from services.events.publisher import KafkaPublisher
from services.handlers.generations import SERVABLE, compare_generations, promotion
from services.handlers.replay import ProgressWatch, plan_replay
from services.settings import Settings, get_settings
from services.storage.blobs import LocalBlobStore

console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{escape(message)}[/]")
    return typer.Exit(1)


def _bootstrap(settings: Settings) -> str:
    from infra.kafka.cluster import broker_status

    running = broker_status(settings.home)
    bootstrap = settings.kafka.bootstrap or (running or {}).get("bootstrap")
    if not bootstrap:
        raise _fail(
            "no broker to read the log from: start it (`deckstream kafka up --detach`) "
            "or set DECKSTREAM_KAFKA_BOOTSTRAP"
        )
    return str(bootstrap)


async def _read(bootstrap: str, *specs: topics.TopicSpec) -> list[Event]:
    found: list[Event] = []
    for spec in specs:
        found += await read_topic(bootstrap, spec.name)
    return found


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"--since {value!r} is not a date (YYYY-MM-DD, or with a time)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def replay(
    documents: Annotated[
        list[str] | None,
        typer.Option(
            "--documents", help="document ids (repeat it, or separate them with commas); default: all"
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only documents first uploaded on or after this date (UTC)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="write the cards with this model (default: the worker's)")
    ] = None,
    prompt_version: Annotated[
        str | None, typer.Option("--prompt-version", help="e.g. v2 (default: the worker's)")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="follow until every new generation is done")
    ] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = 3600.0,
) -> None:
    """Reprocess kept uploads into a new generation each; the current ones keep serving until
    `deckstream promote`. Chunks whose cache key is unchanged are not sent to the LLM again."""
    settings = get_settings()
    bootstrap = _bootstrap(settings)
    wanted = [d for item in documents or [] for d in item.split(",") if d]
    blobs = LocalBlobStore(settings.blob_dir)
    log = asyncio.run(_read(bootstrap, topics.UPLOADED, topics.PROGRESS))
    try:
        plan = plan_replay(
            log, blobs, documents=wanted, since_ms=_since(since), model=model, prompt_version=prompt_version
        )
    except Refused as exc:
        raise _fail(exc.reason) from None
    for doc, why in plan.skipped:
        console.print(f"skipped {doc}: {escape(why)}")
    if not plan.uploads:
        console.print("nothing to replay")
        raise typer.Exit(1 if plan.skipped else 0)
    done = asyncio.run(_publish_and_follow(bootstrap, plan.uploads, wait, timeout))
    for up in plan.uploads:
        end = done.get(up.document_id)
        status = end.status if end else ("queued" if not wait else "timed out")
        cards = str(end.cards) if end else ""
        typer.echo(f"{up.document_id}\t{up.generation}\t{status}\t{cards}")
    if wait:
        console.print("compare: deckstream generations ID · serve one: deckstream promote ID --generation N")
    if wait and len(done) < len(plan.uploads):
        raise _fail(f"{len(plan.uploads) - len(done)} document(s) not done within {timeout:g} s")


async def _publish_and_follow(
    bootstrap: str, uploads: list[DocumentUploaded], wait: bool, timeout_s: float
) -> dict[str, DocumentProgress]:
    watch = ProgressWatch(bootstrap)
    await watch.start()  # before publishing: no event of the new generations is missed
    try:
        publisher = KafkaPublisher(bootstrap)
        await publisher.start()
        try:
            for up in uploads:
                await publisher.publish(topics.UPLOADED.name, up)
        finally:
            await publisher.stop()
        console.print(f"replaying {len(uploads)} document(s)")
        if not wait:
            return {}
        fraction = {up.document_id: 0.0 for up in uploads}
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"))
        with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("replaying", total=len(uploads), done=f"0/{len(uploads)} done")
            finished: set[str] = set()

            def seen(ev: DocumentProgress) -> None:
                fraction[ev.document_id] = ev.progress
                if ev.kind == "done":
                    finished.add(ev.document_id)
                bar.update(
                    task, completed=sum(fraction.values()), done=f"{len(finished)}/{len(uploads)} done"
                )

            wanted = [(up.document_id, up.generation) for up in uploads]
            return await watch.until_done(wanted, seen, timeout_s)
    finally:
        await watch.stop()


def _document_log(
    bootstrap: str, document: str
) -> tuple[dict[int, DocumentUploaded], DocumentProgress | None, int | None]:
    """A document's uploads by generation, newest snapshot and last promotion, off the log."""
    log = asyncio.run(_read(bootstrap, topics.UPLOADED, topics.PROGRESS, topics.GENERATIONS))
    uploads: dict[int, DocumentUploaded] = {}
    live: DocumentProgress | None = None
    promoted: int | None = None
    for ev in log:
        if ev.document_id != document:
            continue
        if isinstance(ev, DocumentUploaded) and ev.is_original:
            uploads[ev.generation] = ev
        elif isinstance(ev, DocumentProgress) and (live is None or ev.generation >= live.generation):
            live = ev
        elif isinstance(ev, GenerationPromoted):
            promoted = ev.generation
    if not uploads:
        raise _fail(f"no document {document} in the log")
    return uploads, live, promoted


def generations(
    document: Annotated[str, typer.Argument(help="document id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
) -> None:
    """Compare a document's generations: cards, to check, dropped, duplicates, pages covered,
    model and prompt version."""
    settings = get_settings()
    uploads, live, promoted = _document_log(_bootstrap(settings), document)
    current = promoted if promoted is not None else min(uploads)
    blobs = LocalBlobStore(settings.blob_dir)
    table = compare_generations(blobs, document, uploads=uploads, live=live, current=current)
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    columns = ("generation", "status", "cards", "needs_review", "dropped", "duplicates_removed")
    columns += ("pages_covered", "pages_total", "model", "prompt_version")
    typer.echo("\t".join(("", *columns)))
    for row in table["generations"]:
        mark = "*" if row["current"] else ""
        typer.echo("\t".join((mark, *("" if row.get(c) is None else str(row.get(c)) for c in columns))))


def promote(
    document: Annotated[str, typer.Argument(help="document id")],
    generation: Annotated[
        int | None, typer.Option(help="default: the newest generation with a completed or partial deck")
    ] = None,
) -> None:
    """Make a generation the one the API serves for DOCUMENT."""
    settings = get_settings()
    bootstrap = _bootstrap(settings)
    uploads, _, _ = _document_log(bootstrap, document)
    blobs = LocalBlobStore(settings.blob_dir)
    if generation is None:
        servable = [
            g
            for g in kept_generations(blobs, document)
            if (deck := load_generation(blobs, document, g)) is not None and deck.status in SERVABLE
        ]
        if not servable:
            raise _fail(f"document {document} has no completed or partial generation")
        generation = servable[-1]
    elif generation not in uploads and generation not in kept_generations(blobs, document):
        raise _fail(f"document {document} has no generation {generation}")
    tenant = uploads[min(uploads)].tenant_id
    try:
        event = promotion(tenant, document, generation, load_generation(blobs, document, generation), "cli")
    except Refused as exc:
        raise _fail(exc.reason) from None

    async def publish() -> None:
        publisher = KafkaPublisher(bootstrap)
        await publisher.start()
        try:
            await publisher.publish(topics.GENERATIONS.name, event)
        finally:
            await publisher.stop()

    asyncio.run(publish())
    typer.echo(f"{document}\t{generation}")
    console.print(f"{document} now serves generation {generation}")


def register(app: typer.Typer) -> None:
    app.command()(replay)
    app.command()(generations)
    app.command()(promote)
