"""`deckstream demo FILE`: the whole flow from the command line, with a live progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deckstream.client import DeckstreamClient
from deckstream.stack import start_stack
from services.bootstrap import api_token
from services.settings import Settings


def run_demo(settings: Settings, file: Path, *, cloze: bool, console: Console) -> int:
    settings = settings.model_copy(deep=True)
    settings.api.port = 0  # any free port: the demo is its own client
    with console.status("starting Kafka, the LLM server, the worker and the API..."):
        stack = start_stack(settings, api=True)
    try:
        token = api_token(stack.settings)
        assert stack.api_url is not None
        with DeckstreamClient(stack.api_url, token) as client:
            options = {"card_types": ["basic", "cloze"]} if cloze else None
            r = client.upload(file, options)
            if r.status_code != 202:
                console.print(f"[red]refused[/]: {r.json().get('detail')}")
                return 2
            doc = r.json()["document_id"]
            final: dict[str, object] = {}
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                task = bar.add_task(file.name, total=1.0, info="queued")
                for ev in client.events(doc):
                    if ev.event == "progress":
                        d = ev.data
                        info = (
                            f"{d['status']}  page {d['pages_done']}/{d['pages_total']}  "
                            f"chunks {d['chunks_done']}/{d['chunks_total']}  cards {d['cards']}"
                        )
                        bar.update(task, completed=d["progress"], info=info)
                    elif ev.event == "done":
                        final = ev.data
            deck = client.deck(doc).json()
        table = Table(
            title=f"{file.name}: {len(deck['cards'])} cards ({final.get('status')})", show_lines=True
        )
        for col in ("front", "back", "source"):
            table.add_column(col)
        for c in deck["cards"]:
            src = c["source"]
            table.add_row(
                c["front"], c["back"], f"{src['file']} p.{src['page_label']} {' > '.join(src['section'])}"
            )
        console.print(table)
        for f in deck["failures"]:
            console.print(f"[yellow]chunk {f['chunk_index']} failed[/]: {f['reason']}")
        return 0 if final.get("status") in ("completed", "partial") else 1
    finally:
        with console.status("stopping..."):
            stack.stop()
