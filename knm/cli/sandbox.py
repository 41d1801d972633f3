"""``knm sandbox serve``: the fake providers over real HTTP, for trying knm without accounts.

It prints the environment that points knm at it (``export KNM_CARRIERS__...`` lines on stdout,
so ``eval "$(knm sandbox serve --print-env-only)"`` or copy-paste works) and serves until
interrupted. ``--latency``, ``--error-rate`` and ``--timeout-rate`` inject the slowness and the
failures the retry policy is built for; the control API under ``/_sandbox/`` (stats, config,
faults, reset) changes them while it runs.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from carriers.sandbox.core import Injection
from carriers.sandbox.server import Sandbox, sandbox_env

sandbox_app = typer.Typer(help="The carrier sandbox: fake providers over real HTTP.")


@sandbox_app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")] = (
        8765
    ),
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    latency: Annotated[
        float, typer.Option("--latency", min=0, metavar="MS", help="Delay of every answer.")
    ] = 0.0,
    error_rate: Annotated[
        float,
        typer.Option(
            "--error-rate", min=0, max=1, metavar="R", help="Share answered 503 (unprocessed)."
        ),
    ] = 0.0,
    timeout_rate: Annotated[
        float,
        typer.Option(
            "--timeout-rate",
            min=0,
            max=1,
            metavar="R",
            help="Share processed, then answered too late (the client times out).",
        ),
    ] = 0.0,
    status: Annotated[
        int | None,
        typer.Option("--status", min=100, max=599, help="Answer every request with this status."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the injected faults.")] = 7,
    print_env_only: Annotated[
        bool,
        typer.Option(
            "--print-env-only",
            help="Print the environment for a sandbox on --host/--port and exit (binds nothing, "
            "so it works while the sandbox runs).",
        ),
    ] = False,
) -> None:
    """Serve every fake provider; print the environment lines that point knm at it."""
    if print_env_only:
        if port == 0:
            typer.echo("knm: error: --print-env-only needs the sandbox's --port (not 0)", err=True)
            raise typer.Exit(2)
        reachable = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
        for key, value in sandbox_env(f"http://{reachable}:{port}").items():
            typer.echo(f"export {key}={shlex.quote(value)}")
        return
    if error_rate + timeout_rate > 1:
        typer.echo("knm: error: --error-rate plus --timeout-rate must not exceed 1", err=True)
        raise typer.Exit(2)
    injection = Injection(
        latency_ms=latency,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        status=status,
        seed=seed,
    )
    try:
        sandbox = Sandbox(host=host, port=port, injection=injection)
    except OSError as exc:
        typer.echo(f"knm: error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    for key, value in sandbox.env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")
    typer.echo(
        f"# knm sandbox serving on {sandbox.url} (latency {latency:g} ms, error rate "
        f"{error_rate:g}, timeout rate {timeout_rate:g}); control API: {sandbox.url}/_sandbox/"
        "stats; Ctrl-C stops",
        err=True,
    )
    try:
        sandbox.serve_forever()
    except KeyboardInterrupt:
        typer.echo("# sandbox stopped", err=True)
    finally:
        sandbox.stop()


def register(cli: typer.Typer) -> None:
    """Add ``knm sandbox ...`` to the command line."""
    cli.add_typer(sandbox_app, name="sandbox")
