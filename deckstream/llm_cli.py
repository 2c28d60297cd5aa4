"""``deckstream llm serve|sim``: the local llama.cpp server, or the LLM simulator.

The server's URL goes to stdout (``URL=$(deckstream llm serve ... &)`` style scripting);
progress goes to stderr. Ctrl-C (or SIGTERM) stops the server and its child process.
"""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infra.process import raise_keyboard_interrupt

app = typer.Typer(help="Run the local llama.cpp server or the LLM simulator.", no_args_is_help=True)
err = Console(stderr=True)


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="gemma3-270m (fast, base) or qwen2.5-coder-1.5b (instruct)")
    ] = "",
    port: Annotated[int, typer.Option(help="0: a free port")] = 0,
    n_parallel: Annotated[int, typer.Option(help="requests served at once (slots)")] = 0,
) -> None:
    """Start the local llama.cpp server in the foreground; Ctrl-C stops it."""
    from infra.llm.server import start_local_llm
    from services.errors import PermanentError
    from services.settings import get_settings

    settings = get_settings()
    cfg = settings.llm
    name = model or cfg.model
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job ignores it
        signal.signal(sig, raise_keyboard_interrupt)
    try:
        with err.status(f"starting {name} (llama.cpp)..."):
            server = start_local_llm(
                name,
                cache=settings.home / "models",
                n_parallel=n_parallel or cfg.n_parallel,
                ctx_per_slot=cfg.ctx_per_slot,
                threads=cfg.threads or (os.cpu_count() or 1),
                port=port,
            )
    except PermanentError as exc:
        err.print(f"[red]{escape(exc.reason)}[/]")
        raise typer.Exit(2) from None
    except (RuntimeError, TimeoutError) as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    err.print(f"[green]{name}[/] at [bold]{server.url}[/] (log: {server.log}); Ctrl-C stops it")
    typer.echo(server.url)
    try:
        code = server.process.wait()
        err.print(f"[red]the server exited with {code}[/] (log: {server.log})")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print("stopping...")
    finally:
        server.stop()


@app.command()
def sim(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8090,
    latency: Annotated[float, typer.Option(help="seconds per call before decoding")] = 0.5,
    capacity: Annotated[int, typer.Option(help="requests served at once; the rest queue")] = 4,
    tokens_per_s: Annotated[float, typer.Option(help="decode rate per request; 0: instant")] = 30.0,
    error_rate: Annotated[float, typer.Option(help="share of 503 + Retry-After answers")] = 0.0,
    garbage_rate: Annotated[float, typer.Option(help="share of 200 answers with garbage")] = 0.0,
    unsupported_rate: Annotated[
        float, typer.Option(help="share of answers with a made-up card the text does not support")
    ] = 0.0,
    slow_rate: Annotated[float, typer.Option(help="share of answers delayed by --slow-s")] = 0.0,
    slow_s: Annotated[float, typer.Option()] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the OpenAI-compatible LLM simulator (faults can be changed at POST /admin/faults)."""
    import uvicorn

    from infra.llm.sim import SimConfig, create_sim_app

    cfg = SimConfig(
        latency_s=latency,
        capacity=capacity,
        tokens_per_s=tokens_per_s,
        error_rate=error_rate,
        garbage_rate=garbage_rate,
        unsupported_rate=unsupported_rate,
        slow_rate=slow_rate,
        slow_s=slow_s,
        seed=seed,
    )
    err.print(f"LLM simulator at [bold]http://{host}:{port}[/] (stats: /stats); Ctrl-C stops it")
    uvicorn.run(create_sim_app(cfg), host=host, port=port, log_level="warning")
