"""``knm demo``: a worker, then number operations sent through the broker, step by step."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from config.settings import reset_settings
from knm.cli import render
from knm.cli.helpers import (
    FAILED,
    broker_guard,
    broker_lines,
    console,
    current_settings,
    open_knm,
    producer_app,
)
from knm.domain.accounts import Account
from knm.domain.number import NumberState
from knm.services import numbers_requests as requests
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.services.search import SearchQuery

if TYPE_CHECKING:
    from celery import Celery

    from carriers.sandbox import Sandbox


DEMO_RESELLER = "demoreseller".ljust(32, "0")
DEMO_CHILD = "demochild".ljust(32, "0")
DEMO_NUMBERS = ("+14155550170", "+14155550171", "+14155550172")
#: The number the demo asks a worker for until one answers (never created).
DEMO_PROBE = "+14155550179"
DEMO_WORKER_LOG = "demo-worker.log"
DEMO_READY_TIMEOUT_S = 60.0
DEMO_STOP_TIMEOUT_S = 10.0


class _DemoError(Exception):
    """The demo cannot go on (the worker died or did not answer)."""


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
        stopping = time.monotonic()
        _stop_process(proc)
        typer.echo(f"worker stopped in {time.monotonic() - stopping:.1f} s")


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
            raise _DemoError(
                f"the worker exited with code {code} before answering; "
                f"its log ({log_path}):\n{_log_tail(log_path)}"
            )
        try:
            return producer.wait(result, producer.task_name(Operation.GET), timeout=0.5)
        except (producer.NoWorkerError, producer.StillRunningError):
            if time.monotonic() >= deadline:
                raise _DemoError(
                    f"the worker did not answer within {timeout_s:g} s; "
                    f"its log ({log_path}):\n{_log_tail(log_path)}"
                ) from None


def demo() -> None:
    """Walk through the worker path: a worker, then number operations sent through the broker.

    Starts ``knm worker`` as a subprocess (the embedded broker and store unless configured),
    sends every step as a task and shows its result and which queue and worker handled it, then
    stops the worker. Re-runnable: the demo numbers are deleted first.
    """
    from workers import producer

    out = console()
    settings = current_settings()
    log_path = settings.data_dir.expanduser().resolve() / DEMO_WORKER_LOG
    celery_app = producer_app(settings)
    started = time.monotonic()
    out.rule("knm demo: the worker path")
    for line in broker_lines(celery_app, settings):
        out.print(line, markup=False, soft_wrap=True)

    try:
        with (
            _demo_sandbox() as sandbox,
            _worker_process(log_path) as proc,
            broker_guard(settings),
        ):
            out.print(f"started a worker: pid {proc.pid}, log {log_path}")
            if sandbox is not None:
                out.print(f"carrier sandbox (fake providers over HTTP): {sandbox.url}")

            # accounts and leftovers in process, while the worker boots
            with open_knm() as knm:
                accounts: list[Account] = []
                for account_id, name, parent in (
                    (DEMO_RESELLER, "Demo Reseller", None),
                    (DEMO_CHILD, "Demo Customer", DEMO_RESELLER),
                ):
                    account = knm.get_account(account_id)
                    if account is None:
                        account = knm.create_account(
                            account_id, name, parent=parent, allow_additions=parent is None
                        )
                    accounts.append(account)
                leftovers = requests.execute(
                    knm, Operation.DELETE, NumbersRequest(numbers=list(DEMO_NUMBERS))
                )
            out.print(render.account_table(accounts, title="1. accounts (created if missing)"))
            out.print(f"removed {len(leftovers['succeeded'])} demo numbers left by an earlier run")

            ready = _wait_for_worker(celery_app, proc, log_path, DEMO_READY_TIMEOUT_S)
            out.print(
                f"worker {ready.worker or '?'} answered "
                f"{time.monotonic() - started:.1f} s after the demo started"
            )

            def step(title: str, op: Operation, **fields: Any) -> None:
                request = NumbersRequest.model_validate(fields)
                reply = producer.call_reply(op, request, app=celery_app)
                out.print(render.result_table(reply.result, title=title))
                out.print(_handled_by(producer.task_name(op), reply), soft_wrap=True)

            step(
                "2. create the demo numbers as available (system)",
                Operation.CREATE,
                numbers=list(DEMO_NUMBERS),
                account=DEMO_RESELLER,
                state=NumberState.AVAILABLE,
            )
            query = SearchQuery(prefix="41555501", quantity=10, account_id=DEMO_CHILD)
            found = producer.call_task(
                producer.SEARCH_TASK,
                query.model_dump(mode="json", exclude_none=True),
                timeout=producer.DEFAULT_TIMEOUT_S,
                app=celery_app,
            )
            out.print(
                render.search_rows_table(found.result, title="3. the customer searches 41555501")
            )
            out.print(_handled_by(producer.SEARCH_TASK, found), soft_wrap=True)
            step(
                "4. the reseller reserves two numbers for the customer",
                Operation.RESERVE,
                numbers=list(DEMO_NUMBERS[:2]),
                account=DEMO_CHILD,
                auth_by=DEMO_RESELLER,
            )
            step(
                "5. the customer activates one of them",
                Operation.ACTIVATE,
                numbers=list(DEMO_NUMBERS[:1]),
                account=DEMO_CHILD,
                auth_by=DEMO_CHILD,
            )
            step(
                "6. the customer tries to delete a number (admins only)",
                Operation.DELETE,
                numbers=list(DEMO_NUMBERS[:1]),
                auth_by=DEMO_CHILD,
            )
            step(
                "7. the customer releases the active number (knm_local numbers are deleted)",
                Operation.RELEASE,
                numbers=list(DEMO_NUMBERS[:1]),
                auth_by=DEMO_CHILD,
            )
            bought = _demo_carrier_steps(out, celery_app, step, sandbox)
            step(
                "12. where everything stands (system view)",
                Operation.GET,
                numbers=[*DEMO_NUMBERS, *bought, "1000"],
            )
    except _DemoError as exc:
        typer.echo(f"knm: error: {exc}", err=True)
        raise typer.Exit(FAILED) from None
    out.print(f"worker stopped; the demo took {time.monotonic() - started:.1f} s")
    out.print("done: run `knm demo` again to start over")


@contextlib.contextmanager
def _demo_sandbox() -> Iterator[Sandbox | None]:
    """The carrier sandbox for the demo, unless Telnyx is configured (then the real one is used).

    Its environment is set before the worker starts, so the worker buys from it too.
    """
    from carriers.sandbox import Sandbox

    if os.environ.get("KNM_CARRIERS__TELNYX__BASE_URL"):
        yield None
        return
    with Sandbox() as sandbox:
        saved = dict(os.environ)
        os.environ.update(sandbox.env())
        os.environ["KNM_CARRIER_HTTP__BACKOFF_BASE_S"] = "0.2"
        reset_settings()
        try:
            yield sandbox
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_settings()


def _demo_carrier_steps(
    out: Console, celery_app: Celery, step: Callable[..., None], sandbox: Sandbox | None
) -> list[str]:
    """Buy a number from Telnyx (the sandbox) through the carrier's queue, surviving a 503."""
    from carriers.sandbox import SandboxClient
    from workers import producer

    query = SearchQuery(prefix="646555", quantity=3, account_id=DEMO_CHILD, carriers=["knm_telnyx"])
    found = producer.call_task(
        producer.SEARCH_TASK,
        query.model_dump(mode="json", exclude_none=True),
        timeout=producer.DEFAULT_TIMEOUT_S,
        app=celery_app,
    )
    out.print(
        render.search_rows_table(found.result, title="8. the customer searches 646555 at Telnyx")
    )
    out.print(_handled_by(producer.SEARCH_TASK, found), soft_wrap=True)
    if not found.result:
        out.print("Telnyx offered nothing (see the worker log): skipping the purchase")
        return []
    number = str(found.result[0]["number"])
    with open_knm() as knm:  # a number an earlier demo run bought and released
        requests.execute(knm, Operation.DELETE, NumbersRequest(numbers=[number]))
    client = SandboxClient(sandbox.url) if sandbox is not None else None
    if client is not None:
        client.fault("status", provider="telnyx", match="order", status=503, retry_after=1)
        out.print("   the sandbox will answer the next order with 503 Service Unavailable")
    step(
        f"9. the customer activates {number}: knm buys it on queue carrier.knm_telnyx",
        Operation.ACTIVATE,
        numbers=[number],
        account=DEMO_CHILD,
        auth_by=DEMO_CHILD,
    )
    if client is not None:
        orders = client.requests("telnyx").get("order", 0)
        bought = client.purchases("telnyx").get(number, 0)
        out.print(
            f"10. the sandbox saw {orders} order requests (503, retried after Retry-After) "
            f"and {bought} purchase of {number}"
        )
        client.close()
    step(
        "11. the customer releases it (Telnyx has no release call; the number stays available)",
        Operation.RELEASE,
        numbers=[number],
        auth_by=DEMO_CHILD,
    )
    return [number]


def _handled_by(name: str, reply: Any) -> str:
    queue = reply.queue or "?"
    worker = reply.worker or "?"
    ms = reply.seconds * 1000
    return f"[dim]   {name} → queue {queue}, worker {worker}, {ms:.0f} ms[/dim]"


def register(cli: typer.Typer) -> None:
    """Add ``knm demo`` to the command line."""
    cli.command("demo")(demo)
