"""``deckstream extract FILE [--text]``: what extraction makes of one file, page by page.

Prints the page ledger as one JSON object (file, kind, status, reason, pages_total, and per page:
number, label, section, chars, tokens, method, reason), or with ``--text`` the extracted text
with ``=== page N (label) ===`` markers as pages arrive. A refused file prints
``{"status": "refused", "reason": ...}`` and exits with code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from services.domain import DocumentOpened, ExtractionEnded, Page
from services.errors import InputRejected
from services.extraction import extract, extract_isolated
from services.settings import get_settings


def extract_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="file to extract")],
    text: Annotated[bool, typer.Option("--text", help="print the text instead of the page ledger")] = False,
    isolated: Annotated[
        bool, typer.Option("--isolated/--in-process", help="parse in a resource-limited subprocess")
    ] = True,
) -> None:
    """Extract FILE and print its page ledger (or its text with --text)."""
    limits = get_settings().limits
    run = extract_isolated if isolated else extract
    ledger: dict[str, Any] = {"file": file.name}
    pages: list[dict[str, Any]] = []
    try:
        for event in run(file, limits, filename=file.name):
            if isinstance(event, DocumentOpened):
                ledger.update(kind=event.kind, title=event.title)
            elif isinstance(event, Page):
                pages.append(
                    {
                        "number": event.number,
                        "label": event.label,
                        "section": list(event.section),
                        "chars": event.chars,
                        "tokens": event.tokens,
                        "method": event.method,
                        "reason": event.reason,
                    }
                )
                if text:
                    typer.echo(f"=== page {event.number} ({event.label}) ===\n{event.text}\n")
            elif isinstance(event, ExtractionEnded):
                ledger.update(status=event.status, reason=event.reason, pages_total=event.pages_total)
    except InputRejected as e:
        refusal = {"file": file.name, "status": "refused", "error": e.code, "reason": e.reason}
        typer.echo(json.dumps(refusal, ensure_ascii=False))
        raise typer.Exit(code=2) from None
    if text:
        summary = {k: ledger.get(k) for k in ("file", "kind", "status", "reason", "pages_total")}
        typer.echo(json.dumps(summary, ensure_ascii=False), err=True)
        return
    ledger["pages"] = pages
    typer.echo(json.dumps(ledger, ensure_ascii=False, indent=1))


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the ``deckstream`` command line."""
    app.command("extract")(extract_command)
