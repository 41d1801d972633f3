"""``knm jobs submit|status|results|list|delete``: bulk CSV jobs run by the workers.

``knm jobs submit`` stores a CSV job (``knm.services.jobs``) and publishes its chunks for the
workers; ``--wait`` follows it to the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import typer
from pymongo.errors import PyMongoError

from knm.cli import render
from knm.cli.helpers import (
    FAILED,
    JsonFlag,
    broker_guard,
    console,
    current_settings,
    die,
    open_knm,
    print_json,
    producer_app,
    usage_error,
)
from knm.domain.accounts import SYSTEM, bad_account_id, is_account_id
from knm.services.csv_actions import ACTIONS, Action
from knm.services.csv_files import write_csv
from knm.services.facade import Knm
from knm.services.job_access import job_refusal
from knm.services.jobs import (
    DEFAULT_CHUNK_SIZE,
    FINAL_STATUSES,
    RESULT_HEADER,
    Job,
    JobStatus,
    JobStore,
    create_job,
)

jobs_app = typer.Typer(
    help="Bulk CSV jobs (KAZOO's number_management tasks) run by the workers.",
    no_args_is_help=True,
)

JobId = Annotated[str, typer.Argument(metavar="JOB", help="Job id (from 'knm jobs submit').")]
#: How often ``knm jobs submit --wait`` reads the job's status.
JOB_POLL_S = 0.25
#: ``--timeout`` of ``knm jobs submit --wait``.
DEFAULT_JOB_TIMEOUT_S = 3600.0


def _job_action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        usage_error(f"unknown action {name!r}: expected one of {', '.join(ACTIONS)}")
    return action


def _check_source(action: Action, source: Path | None) -> None:
    """The CSV file an action needs (or refuses), checked before anything is stored."""
    if action.takes_input and source is None:
        usage_error(
            f"action {action.name} needs a CSV file: knm jobs submit {action.name} FILE.csv"
        )
    if not action.takes_input and source is not None:
        usage_error(f"action {action.name} takes no CSV file")
    if source is not None:
        if not source.exists():
            usage_error(f"cannot read {source}: no such file")
        if not source.is_file():
            usage_error(f"cannot read {source}: not a regular file")
        if not os.access(source, os.R_OK):
            usage_error(f"cannot read {source}: permission denied")


def _check_job_accounts(knm: Knm, account: str, auth_by: str) -> None:
    if not is_account_id(account):
        usage_error(bad_account_id(account))
    if auth_by != SYSTEM and not is_account_id(auth_by):
        usage_error(f"--auth-by must be 'system' or an account id: {auth_by!r}")
    wanted = {account} | ({auth_by} - {SYSTEM})
    found = {a.id for a in knm.store.find_accounts(wanted)}
    if account not in found:
        usage_error(f"account {account} does not exist")
    if auth_by != SYSTEM and auth_by not in found:
        usage_error(f"--auth-by account {auth_by} does not exist")


def _discard_job(knm: Knm, job_id: str) -> None:
    """Remove a job that was stored but could not be submitted (best effort)."""
    store = JobStore(knm)
    with contextlib.suppress(PyMongoError):
        store.rows.delete_many({"job_id": job_id})
        store.jobs.delete_one({"_id": job_id})


def _publish_job(knm: Knm, job: Job) -> None:
    """Publish the job's chunks; if that fails the job is removed and the error is one line."""
    from workers import producer

    settings = current_settings()
    with broker_guard(settings):
        try:
            producer.submit_job(job.id, job.chunks, app=producer_app(settings))
        except BaseException:
            _discard_job(knm, job.id)
            raise


def _job_consumers() -> int | None:
    """How many workers consume the queue job chunks go to (``None``: the broker cannot tell,
    or cannot be reached, which publishing will then report)."""
    from workers import queue_depths
    from workers.celery_config import DEFAULT_QUEUE

    settings = current_settings()
    try:
        counts = queue_depths.queue_consumers(settings, [DEFAULT_QUEUE], producer_app(settings))
    except Exception:  # kombu, redis, amqp: the broker is unreachable
        return None
    return counts.get(DEFAULT_QUEUE)


def _no_worker_hint() -> str:
    from workers.celery_config import DEFAULT_QUEUE

    return f"no worker consumes queue {DEFAULT_QUEUE}: start one with 'knm worker'"


def _wait_for_job(knm: Knm, job_id: str, timeout_s: float) -> Job:
    """Poll the job until it finishes, with a progress bar on stderr; its final state."""
    from knm.cli import job_progress

    store = JobStore(knm)
    deadline = time.monotonic() + timeout_s
    progress = job_progress.running(render.console(stderr=True))
    job = store.get(job_id)
    if job is None:
        die(f"job {job_id} does not exist (was it deleted?)", FAILED)
    try:
        with progress:
            bar = progress.add_task(
                "rows", total=job.rows or None, job=job_id[:8], status=job.status.value
            )
            while True:
                progress.update(
                    bar, completed=job.done, total=job.rows or None, status=job.status.value
                )
                if job.status in FINAL_STATUSES:
                    if not job.rows:
                        progress.update(bar, total=1, completed=1)
                    return job
                if time.monotonic() >= deadline:
                    break
                time.sleep(JOB_POLL_S)
                current = store.get(job_id)
                if current is None:
                    die(f"job {job_id} disappeared while waiting for it", FAILED)
                job = current
    except KeyboardInterrupt:
        die(
            f"stopped waiting for job {job_id}: it goes on without this command "
            f"(knm jobs status {job_id})",
            FAILED,
        )
    hint = " (no worker took it: start one with 'knm worker')" if job.started is None else ""
    die(
        f"job {job_id} not finished after {timeout_s:g} s: {job.status.value}, "
        f"{job.done} of {job.rows} rows done{hint}; it goes on without this command "
        f"(knm jobs status {job_id})",
        FAILED,
    )


def _show_job_totals(job: Job) -> None:
    typer.echo(
        f"job {job.id} {job.status.value}: {job.rows} rows, "
        f"{job.succeeded} succeeded, {job.failed} failed"
    )


@jobs_app.command("submit")
def jobs_submit(
    action_name: Annotated[
        str,
        typer.Argument(
            metavar="ACTION",
            help="import, assign_to, reserve, release, delete, update_merge, update_overwrite, "
            "find (with a CSV file); list, list_all, dump, dump_<state> (without).",
        ),
    ],
    source: Annotated[
        Path | None,
        typer.Argument(metavar="FILE.csv", help="UTF-8 CSV file (actions that take one)."),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help="The job's account.")
    ] = None,
    auth_by: Annotated[
        str,
        typer.Option("--auth-by", metavar="ID|system", help="Requesting account."),
    ] = SYSTEM,
    wait: Annotated[
        bool, typer.Option("--wait", help="Show progress until the job finishes.")
    ] = False,
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", metavar="N", min=1, max=100_000, help="Rows per worker task."),
    ] = DEFAULT_CHUNK_SIZE,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0.1,
            help="With --wait: stop waiting after this long (the job goes on).",
        ),
    ] = DEFAULT_JOB_TIMEOUT_S,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job's status as JSON.")
    ] = False,
) -> None:
    """Submit a CSV job to the workers and print its id (--wait: until it finishes)."""
    action = _job_action(action_name)
    if account is None:
        usage_error("missing option '--account'")
    _check_source(action, source)
    if wait and _job_consumers() == 0:  # say so now, rather than after --timeout
        die(f"{_no_worker_hint()}, then submit again (nothing was submitted)", FAILED)
    with open_knm() as knm:
        _check_job_accounts(knm, account, auth_by)
        with contextlib.ExitStack() as shown:
            stored = None
            if wait and source is not None:
                from knm.cli import job_progress

                stored = shown.enter_context(job_progress.storing(render.console(stderr=True)))
            job = create_job(
                knm,
                action.name,
                source,
                account_id=account,
                auth_by=auth_by,
                chunk_size=chunk_size,
                source_name=source.name if source is not None else None,
                on_stored=stored,
            )
        _publish_job(knm, job)
        if not wait:
            if as_json:
                print_json(job.to_json())
            else:
                typer.echo(job.id)
            return
        if not as_json:
            typer.echo(job.id)
        final = _wait_for_job(knm, job.id, timeout)
    if as_json:
        print_json(final.to_json())
    else:
        _show_job_totals(final)
    if final.status != JobStatus.SUCCEEDED:
        raise typer.Exit(FAILED)


JobReader = Annotated[
    str,
    typer.Option(
        "--auth-by",
        metavar="ID|system",
        help="Requesting account: its own jobs and those of accounts it may read.",
    ),
]


def _readable_job(knm: Knm, job_id: str, auth_by: str) -> Job:
    """The job, if it exists and ``auth_by`` may read it (else one line, exit 1)."""
    if auth_by != SYSTEM and not is_account_id(auth_by):
        usage_error(f"--auth-by must be 'system' or an account id: {auth_by!r}")
    job = JobStore(knm).get(job_id)
    if job is None:
        die(f"job {job_id} does not exist", FAILED)
    if (refusal := job_refusal(knm, job, auth_by)) is not None:
        die(render.error_text(refusal), FAILED)
    return job


@jobs_app.command("status")
def jobs_status(job_id: JobId, auth_by: JobReader = SYSTEM, as_json: JsonFlag = False) -> None:
    """Show a job's status (exit 1 if it does not exist or the requester may not read it)."""
    with open_knm() as knm:
        job = _readable_job(knm, job_id, auth_by)
    if as_json:
        print_json(job.to_json())
    else:
        console().print(render.job_detail(job.to_json(), title="job"))


@jobs_app.command("results")
def jobs_results(
    job_id: JobId,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE.csv", help="Write the CSV here instead of stdout."
        ),
    ] = None,
    auth_by: JobReader = SYSTEM,
) -> None:
    """Write a job's result CSV: the listing of each row's number, or its input and error."""
    with open_knm() as knm:
        store = JobStore(knm)
        job = _readable_job(knm, job_id, auth_by)
        if output is None:
            count = _write_stdout_csv(RESULT_HEADER, store.result_rows(job_id))
        else:
            try:
                with output.open("w", encoding="utf-8", newline="") as out:
                    count = write_csv(out, RESULT_HEADER, store.result_rows(job_id))
            except OSError as exc:
                die(f"cannot write {output}: {exc.strerror or exc}", FAILED)
    if job.status not in FINAL_STATUSES:
        typer.echo(
            f"knm: note: job {job_id} is {job.status.value}: "
            f"{job.done} of {job.rows} rows have a result so far",
            err=True,
        )
    if output is not None:
        typer.echo(f"wrote {count} result rows to {output}")


def _write_stdout_csv(columns: Sequence[str], rows: Iterator[dict[str, str]]) -> int:
    """CSV on stdout as UTF-8 whatever the locale, CRLF line ends kept as written."""
    stdout = sys.stdout
    binary = getattr(stdout, "buffer", None)
    if binary is None:
        return write_csv(stdout, columns, rows)
    stdout.flush()
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="", write_through=True)
    try:
        return write_csv(text, columns, rows)
    finally:
        text.flush()
        text.detach()


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many jobs (newest first).")
    ] = 50,
    auth_by: JobReader = SYSTEM,
    as_json: JsonFlag = False,
) -> None:
    """List the latest jobs (those the requester may read), newest first."""
    if auth_by != SYSTEM and not is_account_id(auth_by):
        usage_error(f"--auth-by must be 'system' or an account id: {auth_by!r}")
    with open_knm() as knm:
        found = [job.to_json() for job in JobStore(knm).list(limit, auth_by)]
    if as_json:
        print_json(found)
    else:
        console().print(render.jobs_table(found, title="jobs"))


@jobs_app.command("delete")
def jobs_delete(job_id: JobId, auth_by: JobReader = SYSTEM, as_json: JsonFlag = False) -> None:
    """Delete a job, its rows and results now (finished jobs expire after KNM_JOB_RETENTION_D).

    A requester other than ``system`` may delete only a job it may read (``jobs status``'s rule).
    """
    from knm.store import job_retention

    with open_knm() as knm:
        if auth_by != SYSTEM:
            _readable_job(knm, job_id, auth_by)
        existed, rows = job_retention.delete_job(knm.store.db, job_id)
    if not existed and not rows:
        die(f"job {job_id} does not exist", FAILED)
    if as_json:
        print_json({"id": job_id, "deleted": existed, "rows_deleted": rows})
    else:
        typer.echo(f"deleted job {job_id} and its {rows} rows")


def register(cli: typer.Typer) -> None:
    """Add ``knm jobs ...`` to the command line."""
    cli.add_typer(jobs_app, name="jobs")
