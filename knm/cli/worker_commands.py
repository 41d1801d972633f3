"""``knm worker`` and ``knm beat``: run Celery for knm's tasks and periodic sweeps."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from config.settings import Settings
from knm.cli.helpers import OK, broker_lines, current_settings, store_url, usage_error

if TYPE_CHECKING:
    from celery import Celery


class Pool(StrEnum):
    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


LogLevelOption = Annotated[
    LogLevel, typer.Option("--loglevel", "-l", case_sensitive=False, help="Logging level.")
]


def _split_queues(values: list[str]) -> list[str]:
    """``-Q a,b -Q c`` → ``[a, b, c]`` (order kept, duplicates dropped)."""
    queues = [q.strip() for value in values for q in value.split(",")]
    if not all(queues):
        usage_error(f"empty queue name in --queues {','.join(values)!r}")
    return list(dict.fromkeys(queues))


def _celery_app(settings: Settings) -> Celery:
    """``workers.app.app`` (where the tasks are registered), configured from the environment."""
    from workers.app import app as celery_app

    return celery_app


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
        Pool | None, typer.Option("--pool", "-P", help="Pool implementation (Celery: prefork).")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", metavar="NAME", help="Node name.")
    ] = None,
    loglevel: LogLevelOption = LogLevel.INFO,
) -> None:
    """Run a Celery worker for knm's tasks (embedded broker unless KNM_BROKER_URL is set)."""
    from workers.app import all_queues

    settings = current_settings()
    consumed = _split_queues(queues) if queues else all_queues()
    celery_app = _celery_app(settings)
    for line in broker_lines(celery_app, settings):
        typer.echo(f"knm worker: {line}")
    typer.echo(f"knm worker: store: {store_url(settings)}")
    typer.echo(f"knm worker: queues: {', '.join(consumed)}")
    argv = ["worker", "--queues", ",".join(consumed), "--loglevel", loglevel.value]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if pool is not None:
        argv += ["--pool", pool.value]
    if hostname is not None:
        argv += ["--hostname", hostname]
    # app.worker_main(argv) is app.start(argv) without the exit code; keep the code.
    code: object = celery_app.start(argv=argv)
    raise typer.Exit(code if isinstance(code, int) else OK)


def beat(loglevel: LogLevelOption = LogLevel.INFO) -> None:
    """Run Celery beat for knm's periodic tasks (schedule file under KNM_DATA_DIR)."""
    settings = current_settings()
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    schedule = data_dir / BEAT_SCHEDULE_FILE
    celery_app = _celery_app(settings)
    for line in broker_lines(celery_app, settings):
        typer.echo(f"knm beat: {line}")
    typer.echo(f"knm beat: schedule: {schedule}")
    code: object = celery_app.start(
        argv=["beat", "--schedule", str(schedule), "--loglevel", loglevel.value]
    )
    raise typer.Exit(code if isinstance(code, int) else OK)


BEAT_SCHEDULE_FILE = "beat-schedule"


def register(cli: typer.Typer) -> None:
    """Add ``knm worker`` and ``knm beat`` to the command line."""
    cli.command("worker")(worker)
    cli.command("beat")(beat)
