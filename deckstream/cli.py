"""The `deckstream` command line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infra.process import raise_keyboard_interrupt
from services.bootstrap import api_token
from services.errors import BrokerHomeMismatch
from services.logs import configure_logging
from services.settings import get_settings

app = typer.Typer(
    help="deckstream: course material in, cited flashcard decks out, streamed through Kafka.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


def _mount() -> None:
    from deckstream import accounts_cli, analytics_cli, extract_cli, kafka_cli, llm_cli, replay_cli

    app.add_typer(kafka_cli.app, name="kafka", help="Run the local single-node Kafka broker.")
    app.add_typer(llm_cli.app, name="llm", help="Run the local llama.cpp server or the LLM simulator.")
    app.add_typer(
        analytics_cli.app, name="analytics", help="Query the analytics tables, or rebuild them from Kafka."
    )
    extract_cli.register(app)
    replay_cli.register(app)
    accounts_cli.register(app)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 0,
) -> None:
    """Start everything: Kafka broker, LLM server, Faust worker and the API. Ctrl-C stops it all."""
    import uvicorn

    from api.app import create_app
    from deckstream.stack import start_stack

    configure_logging()
    settings = get_settings()
    if port:
        settings.api.port = port
    token = api_token(settings)
    with console.status(
        "starting Kafka, the LLM server and the worker (first run resolves jars and models)..."
    ):
        try:
            stack = start_stack(settings, api=False)
        except BrokerHomeMismatch as exc:  # kept data we must not use: say why, start nothing
            console.print(f"[red]{escape(exc.reason)}[/]")
            raise typer.Exit(1) from None
    try:
        s = stack.settings
        console.print(f"[bold green]deckstream is up[/] at [bold]http://{s.api.host}:{s.api.port}[/]")
        console.print(f"API token: [bold]{token}[/]   (also in {s.home / 'api-token'})")
        metrics = ", ".join(stack.worker_metrics.values())
        console.print(f"Metrics: http://{s.api.host}:{s.api.port}/metrics (API), {metrics} (worker)")
        console.print(f"Kafka: {s.kafka.bootstrap}   LLM: {s.llm.url} ({s.llm.model})   logs: {stack.logs}")
        console.print(
            f'Try: curl -H "Authorization: Bearer {token}" -F file=@book.pdf '
            f"http://{s.api.host}:{s.api.port}/v1/documents"
        )
        uvicorn.run(create_app(s), host=s.api.host, port=s.api.port, log_level="warning")
    finally:
        with console.status("stopping..."):
            stack.stop()
        console.print("stopped.")


ParentOption = Annotated[
    int, typer.Option("--parent", help="exit (after a grace period) when this process is gone", hidden=True)
]


def _watch_parent(parent: int) -> None:
    if parent:
        from infra.process import exit_when_orphaned

        exit_when_orphaned(parent)


@app.command()
def worker(parent: ParentOption = 0) -> None:
    """Run the Faust stream workers (settings from DECKSTREAM_*)."""
    import faust

    from streams.app import build_app

    configure_logging()
    _watch_parent(parent)
    # The loop thread holds the GIL for up to 5 ms at a time by default; the threads writing
    # blobs and reading the extraction subprocess wait that long after every system call.
    sys.setswitchinterval(0.0005)
    faust_app, lifecycle = build_app(get_settings())
    faust.Worker(faust_app, lifecycle, loglevel="info").execute_from_commandline()


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    parent: ParentOption = 0,
) -> None:
    """Run only the HTTP API under uvicorn (settings from DECKSTREAM_*)."""
    import uvicorn

    from api.app import create_app

    configure_logging()
    _watch_parent(parent)
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="warning",
    )


@app.command()
def demo(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a PDF, DOCX, PPTX or TXT")
    ],
    cloze: Annotated[bool, typer.Option(help="ask for cloze cards too")] = False,
) -> None:
    """Start the stack, turn FILE into a deck with a live progress bar, print the deck, stop."""
    from deckstream.demo import run_demo

    configure_logging("WARNING")
    raise typer.Exit(run_demo(get_settings(), file, cloze=cloze, console=console))


@app.command()
def gc(
    delete: Annotated[bool, typer.Option("--delete", help="remove what is listed")] = False,
) -> None:
    """List (and with --delete, remove) blobs and cache entries no document of any generation uses.

    Reads documents.uploaded whole: from DECKSTREAM_KAFKA_BOOTSTRAP, or the local broker that
    `deckstream kafka up` runs.
    """
    import asyncio

    from infra.kafka.cluster import broker_status
    from services.events.log_reader import read_topic
    from services.events.models import DocumentUploaded
    from services.events.topics import UPLOADED
    from services.handlers import gc as garbage
    from services.storage.blobs import LocalBlobStore

    settings = get_settings()
    running = broker_status(settings.home)
    bootstrap = settings.kafka.bootstrap or (running or {}).get("bootstrap")
    if not bootstrap:
        console.print(
            "[red]no broker to read the log from:[/] start it (`deckstream kafka up --detach`) "
            "or set DECKSTREAM_KAFKA_BOOTSTRAP"
        )
        raise typer.Exit(1)
    events = asyncio.run(read_topic(str(bootstrap), UPLOADED.name))
    uploads = [e for e in events if isinstance(e, DocumentUploaded)]
    store = LocalBlobStore(settings.blob_dir)
    found = garbage.find_garbage(store, uploads)
    for item in found:
        typer.echo(f"{item.bytes:>12,}  {item.path.relative_to(store.root)}  ({item.why})")
    total = sum(item.bytes for item in found)
    documents = len({u.document_id for u in uploads})
    console.print(f"{len(found)} unused ({total:,} bytes); {documents} documents in the log keep the rest")
    if delete and found:
        console.print(f"removed {garbage.delete(found):,} bytes")


def main() -> None:
    # SIGTERM from a supervisor stops `up` and `demo` as cleanly as Ctrl-C (uvicorn and Faust
    # install their own handlers in `api` and `worker`).
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    configure_logging()  # to stderr: stdout carries results (`BOOTSTRAP=$(deckstream kafka up --detach)`)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _mount()
    app()
