"""Start a Celery worker or beat for knm: the queues, the pool, the argv, beat's schedule file.

``knm worker`` and ``knm beat`` are thin commands over this module (docker-compose runs them:
``knm worker --queues ... --pool threads``, ``knm beat``). Both run ``workers.app.app``, the app
the tasks register on; it is created the first time a start needs it, so a command that never
starts Celery never imports it. Creating it prepares the broker: without ``KNM_BROKER_URL`` the
embedded broker's folders under ``KNM_DATA_DIR`` (and the embedded MongoDB when results go there).
This module imports no Celery at import time: the command line builds its options from ``Pool``
and ``LogLevel`` without paying for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from celery import Celery

    from config.settings import Settings

#: Beat's schedule file, under ``KNM_DATA_DIR`` (Celery may add a suffix of its own).
BEAT_SCHEDULE_FILE: Final[str] = "beat-schedule"


class Pool(StrEnum):
    """The worker pools knm offers: Celery's prefork, threads (provider calls wait on the
    network), solo (one task at a time, in the worker's own process)."""

    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class QueueNameError(ValueError):
    """A ``--queues`` list with an empty name in it."""


@dataclass(frozen=True)
class WorkerStart:
    """A worker ready to run: the app, the queues it consumes, Celery's argv."""

    app: Celery
    queues: list[str]
    argv: list[str]


@dataclass(frozen=True)
class BeatStart:
    """Beat ready to run: the app, its schedule file, Celery's argv."""

    app: Celery
    schedule: Path
    argv: list[str]


def split_queues(values: Sequence[str]) -> list[str]:
    """``-Q a,b -Q c`` → ``[a, b, c]`` (order kept, duplicates dropped)."""
    queues = [q.strip() for value in values for q in value.split(",")]
    if not all(queues):
        raise QueueNameError(f"empty queue name in --queues {','.join(values)!r}")
    return list(dict.fromkeys(queues))


def worker_argv(
    queues: Sequence[str],
    *,
    loglevel: LogLevel = LogLevel.INFO,
    concurrency: int | None = None,
    pool: Pool | None = None,
    hostname: str | None = None,
) -> list[str]:
    """Celery's ``worker`` argv; an option left out is Celery's (or the app's) default."""
    argv = ["worker", "--queues", ",".join(queues), "--loglevel", loglevel.value]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if pool is not None:
        argv += ["--pool", pool.value]
    if hostname is not None:
        argv += ["--hostname", hostname]
    return argv


def schedule_file(settings: Settings) -> Path:
    """Beat's schedule file under the data dir (created if missing)."""
    data_dir = settings.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / BEAT_SCHEDULE_FILE


def celery_app() -> Celery:
    """``workers.app.app`` (where the tasks are registered), configured from the environment."""
    from workers.app import app

    return app


def worker(
    queues: Sequence[str] | None = None,
    *,
    loglevel: LogLevel = LogLevel.INFO,
    concurrency: int | None = None,
    pool: Pool | None = None,
    hostname: str | None = None,
) -> WorkerStart:
    """A worker consuming ``queues`` (``-Q`` values: comma-separated or repeated), by default
    all of knm's: its own, plain Celery's default and one per carrier module. Raises
    ``QueueNameError`` for an empty name."""
    from workers.app import all_queues

    consumed = split_queues(queues) if queues else all_queues()
    argv = worker_argv(
        consumed, loglevel=loglevel, concurrency=concurrency, pool=pool, hostname=hostname
    )
    return WorkerStart(app=celery_app(), queues=consumed, argv=argv)


def beat(settings: Settings, *, loglevel: LogLevel = LogLevel.INFO) -> BeatStart:
    """Beat sending knm's periodic sweeps, its schedule kept under ``KNM_DATA_DIR``."""
    schedule = schedule_file(settings)
    argv = ["beat", "--schedule", str(schedule), "--loglevel", loglevel.value]
    return BeatStart(app=celery_app(), schedule=schedule, argv=argv)


def run(start: WorkerStart | BeatStart) -> int:
    """Run the worker or beat until it stops; its exit code."""
    # app.worker_main(argv) is app.start(argv) without the exit code; keep the code.
    code: object = start.app.start(argv=start.argv)
    return code if isinstance(code, int) else 0
