"""``knm worker`` and ``knm beat``: run Celery for knm's tasks and periodic sweeps; ``knm stop``
stops the embedded store the other commands start.

Thin commands over ``workers.start``, which builds the worker or beat (queues, pool, argv,
schedule file); these print what it will use (broker, results, store or schedule) and run it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from knm.cli.helpers import broker_lines, current_settings, store_url, usage_error
from workers import start

LogLevelOption = Annotated[
    start.LogLevel, typer.Option("--loglevel", "-l", case_sensitive=False, help="Logging level.")
]


def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            "-Q",
            metavar="Q1,Q2",
            help="Queues to consume (comma-separated or repeated); default: all of knm's.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", min=1, help="Pool size (default: KNM_WORKER_CONCURRENCY)."
        ),
    ] = None,
    pool: Annotated[
        start.Pool | None,
        typer.Option("--pool", "-P", help="Pool implementation (Celery: prefork)."),
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", metavar="NAME", help="Node name.")
    ] = None,
    loglevel: LogLevelOption = start.LogLevel.INFO,
) -> None:
    """Run a Celery worker for knm's tasks (embedded broker unless KNM_BROKER_URL is set)."""
    settings = current_settings()
    try:
        started = start.worker(
            queues, loglevel=loglevel, concurrency=concurrency, pool=pool, hostname=hostname
        )
    except start.QueueNameError as exc:
        usage_error(str(exc))
    for line in broker_lines(started.app, settings):
        typer.echo(f"knm worker: {line}")
    typer.echo(f"knm worker: store: {store_url(settings)}")
    typer.echo(f"knm worker: queues: {', '.join(started.queues)}")
    raise typer.Exit(start.run(started))


def beat(loglevel: LogLevelOption = start.LogLevel.INFO) -> None:
    """Run Celery beat for knm's periodic tasks (schedule file under KNM_DATA_DIR)."""
    settings = current_settings()
    started = start.beat(settings, loglevel=loglevel)
    for line in broker_lines(started.app, settings):
        typer.echo(f"knm beat: {line}")
    typer.echo(f"knm beat: schedule: {started.schedule}")
    raise typer.Exit(start.run(started))


def stop() -> None:
    """Stop the embedded store (the MongoDB-compatible server under KNM_DATA_DIR)."""
    from knm.store import embedded

    settings = current_settings()
    data_dir = settings.data_dir.expanduser().resolve()
    if settings.mongodb_url:
        typer.echo(f"knm stop: KNM_MONGODB_URL is set ({store_url(settings)}): nothing to stop")
        return
    state = embedded.read_state(data_dir)
    if embedded.stop_server(data_dir) and state is not None:
        typer.echo(f"knm stop: stopped the embedded store under {data_dir} (pid {state.pid})")
    else:
        typer.echo(f"knm stop: no embedded store running under {data_dir}")


def register(cli: typer.Typer) -> None:
    """Add ``knm worker``, ``knm beat`` and ``knm stop`` to the command line."""
    cli.command("worker")(worker)
    cli.command("beat")(beat)
    cli.command("stop")(stop)
