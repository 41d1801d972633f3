"""``knm demo``: the whole mission in under a minute, on a real worker, then everything stopped.

It starts the carrier sandbox (fake providers over HTTP) and a ``knm worker`` subprocess, runs
the steps of ``knm.cli.demo_steps`` (a CSV import, per-carrier dispatch with a provider purchase
that is retried, an aging sweep ahead in time, a request from another service, ``knm status``),
then stops the worker and the sandbox, and the embedded store too when the demo started it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import typer

from config.settings import reset_settings
from knm.cli import demo_steps, render
from knm.cli.demo_steps import DemoError
from knm.cli.helpers import (
    FAILED,
    broker_guard,
    broker_lines,
    console,
    current_settings,
    producer_app,
)
from knm.services.numbers_requests import NumbersRequest, Operation

if TYPE_CHECKING:
    from celery import Celery

    from carriers.sandbox import Sandbox
    from config.settings import Settings

#: The number the demo asks a worker for until one answers (never created).
DEMO_PROBE: Final[str] = "+14155550179"
DEMO_WORKER_LOG: Final[str] = "demo-worker.log"
DEMO_READY_TIMEOUT_S: Final[float] = 60.0
DEMO_STOP_TIMEOUT_S: Final[float] = 10.0
#: The environment the demo's worker runs with, besides the sandbox's: quick provider retries,
#: and released numbers of other carriers age (so the sweep has something to do).
DEMO_ENV: Final[dict[str, str]] = {
    "KNM_CARRIER_HTTP__BACKOFF_BASE_S": "0.2",
    "KNM_SHOULD_AGE": "true",
}


def _demo_worker_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "knm",
        "worker",
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--loglevel",
        "WARNING",
        "--hostname",
        f"knm-demo-{os.getpid()}@%h",
    ]


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _worker_process(log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``knm worker`` subprocess with this environment, stopped on the way out.

    Its own session keeps a Ctrl-C in the terminal from reaching it first: the demo stops it
    (SIGTERM, then SIGKILL if it does not exit in time) however the demo ends.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _demo_worker_command(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop_process(proc)
        typer.echo(f"worker stopped (pid {proc.pid})")


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float = DEMO_STOP_TIMEOUT_S) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def _wait_for_worker(
    celery_app: Celery, proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float
) -> Any:
    """Send one ``knm.numbers.get`` and wait until a worker returns it (or the worker dies)."""
    from workers import producer

    probe = NumbersRequest(numbers=[DEMO_PROBE])
    result = producer.publish(Operation.GET, probe, timeout=timeout_s, app=celery_app)
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise DemoError(
                f"the worker exited with code {code} before answering; "
                f"its log ({log_path}):\n{_log_tail(log_path)}"
            )
        try:
            return producer.wait(result, producer.task_name(Operation.GET), timeout=0.5)
        except (producer.NoWorkerError, producer.StillRunningError):
            if time.monotonic() >= deadline:
                raise DemoError(
                    f"the worker did not answer within {timeout_s:g} s; "
                    f"its log ({log_path}):\n{_log_tail(log_path)}"
                ) from None


@contextlib.contextmanager
def _demo_environment() -> Iterator[Sandbox | None]:
    """The sandbox (unless Telnyx is configured: then the real one is used) and ``DEMO_ENV``,
    set before the worker starts so that it buys from the sandbox too; restored afterwards."""
    from carriers.sandbox import Sandbox

    saved = dict(os.environ)
    with contextlib.ExitStack() as stack:
        sandbox: Sandbox | None = None
        if not os.environ.get("KNM_CARRIERS__TELNYX__BASE_URL"):
            sandbox = stack.enter_context(Sandbox())
            os.environ.update(sandbox.env())
        os.environ.update(DEMO_ENV)
        reset_settings()
        try:
            yield sandbox
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_settings()


@contextlib.contextmanager
def _embedded_store(settings: Settings) -> Iterator[str]:
    """Stops the embedded store on the way out if it was not running before the demo.

    Yields what the demo will do with it, for the header.
    """
    from knm.store import embedded

    if settings.mongodb_url:
        yield "store: KNM_MONGODB_URL"
        return
    data_dir = settings.data_dir.expanduser().resolve()
    if embedded.live_state(data_dir) is not None:
        yield f"store: the embedded store already running under {data_dir} (left running)"
        return
    try:
        yield f"store: the embedded store under {data_dir} (started now, stopped at the end)"
    finally:
        if embedded.stop_server(data_dir):
            typer.echo("embedded store stopped")


def demo() -> None:
    """Show the whole mission on a real worker: a CSV import, per-carrier dispatch with a
    provider purchase that is retried, an aging sweep ahead in time, a request from another
    service, then knm status. Stops what it started. Re-runnable: demo numbers are reset."""
    out = console()
    settings = current_settings()
    log_path = settings.data_dir.expanduser().resolve() / DEMO_WORKER_LOG
    started = time.monotonic()
    out.rule("knm demo: operators, other services and the scheduler, on a real worker")
    try:
        with _embedded_store(settings) as store_line, _demo_environment() as sandbox:
            settings = current_settings()
            celery_app = producer_app(settings)
            for line in [*broker_lines(celery_app, settings), store_line]:
                out.print(line, markup=False, soft_wrap=True)
            with _worker_process(log_path) as proc, broker_guard(settings):
                out.print(f"started a worker: pid {proc.pid}, log {log_path}")
                if sandbox is not None:
                    out.print(f"carrier sandbox (fake providers over HTTP): {sandbox.url}")
                accounts, removed = demo_steps.prepare()  # while the worker boots
                out.print(render.account_table(accounts, title="1. accounts (created if missing)"))
                out.print(f"removed {removed} demo numbers left by an earlier run")
                ready = _wait_for_worker(celery_app, proc, log_path, DEMO_READY_TIMEOUT_S)
                out.print(
                    f"worker {ready.worker or '?'} answered "
                    f"{time.monotonic() - started:.1f} s after the demo started"
                )
                demo_steps.run(demo_steps.Demo(out, celery_app, settings, sandbox))
    except DemoError as exc:
        typer.echo(f"knm: error: {exc}", err=True)
        raise typer.Exit(FAILED) from None
    out.print(f"the demo took {time.monotonic() - started:.1f} s")
    out.print("done: run `knm demo` again to start over")


def register(cli: typer.Typer) -> None:
    """Add ``knm demo`` to the command line."""
    cli.command("demo")(demo)
