"""knm's command line: accounts, number operations, search, inventory, workers and a demo.

Other tools parse the ``--json`` output, so its shape is a contract:

- ``knm numbers get|create|activate|reserve|release|delete NUMBER... --json`` prints one object
  ``{"succeeded": {E.164: stored document}, "failed": {input: error}}``; a stored document is the
  number's full MongoDB document (private fields included, datetimes as ISO 8601 strings) and an
  error is ``KnmError.to_json()``.
- ``knm search PREFIX --json`` prints a list of ``{"number", "state", "carrier_module"}``.
- ``knm accounts create|get ID --json`` prints ``Account.to_json()``.
- ``knm jobs submit ... --json`` and ``knm jobs status JOB --json`` print ``Job.to_json()``
  (``{"id", "action", "status", "rows", "done", "succeeded", "failed", ...}``); ``knm jobs list
  --json`` prints a list of them. ``knm jobs results`` writes the result CSV (the listing
  columns of spec §6.2 plus ``error``).

``knm numbers ...`` and ``knm search`` build the request of ``knm.requests`` and run it in this
process, or with ``--via-broker`` publish it as a task (``knm.producer``) and print the result a
worker returns: the same output either way. ``knm worker`` and ``knm beat`` run Celery on the
configured broker (the embedded one under ``KNM_DATA_DIR`` without ``KNM_BROKER_URL``); ``knm
demo`` starts a worker and walks through the worker path. ``knm jobs submit`` stores a CSV job
(``knm.jobs``) and publishes its chunks for the workers; ``--wait`` follows it to the end.

Exit codes: 0 when everything succeeded, 1 when any number (or the store, or the broker) failed,
2 for a usage error or a request a worker rejected as invalid (or a CSV file a job refuses);
``knm jobs submit --wait`` exits 0 when the job succeeded, 1 when it is partial or failed.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from config.settings import Settings, SettingsError, reset_settings
from knm.cli import render
from knm.cli.helpers import (
    DEFAULT_TIMEOUT_S,
    FAILED,
    OK,
    USAGE,
    JsonFlag,
    Timeout,
    ViaBroker,
    broker_guard,
    broker_lines,
    console,
    current_settings,
    die,
    guard,
    one_line,
    open_knm,
    print_json,
    producer_app,
    store_url,
    usage_error,
    validation_message,
)
from knm.domain.accounts import SYSTEM, Account, bad_account_id, is_account_id
from knm.domain.number import NumberState
from knm.services import numbers_requests as requests
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
from knm.services.numbers_requests import (
    NEEDS_ACCOUNT,
    InvalidRequestError,
    NumbersRequest,
    Operation,
)
from knm.services.search import SearchQuery

if TYPE_CHECKING:
    from celery import Celery

    from carriers.sandbox import Sandbox


# ================================================================================ the app
class _KnmGroup(TyperGroup):
    """Runs the app in click's non-standalone mode to print usage errors as one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except NoArgsIsHelpError as exc:
            # typer's rich help has already been printed; plain help comes as the message
            if exc.format_message().strip():
                typer.echo(exc.format_message(), err=True)
            code = USAGE
        except UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "knm"
            message = one_line(exc.format_message()).replace("Value error, ", "")
            typer.echo(f"{command}: error: {message}", err=True)
            code = exc.exit_code
        except ClickException as exc:
            typer.echo(f"knm: error: {one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except SettingsError as exc:  # KNM_* variables that are wrong (or wrong together)
            typer.echo(f"knm: error: {one_line(str(exc))}", err=True)
            code = USAGE
        except typer.Abort:
            typer.echo("knm: aborted", err=True)
            code = FAILED
        else:
            code = rv if isinstance(rv, int) else OK
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_KnmGroup,
    name="knm",
    help="knm: KAZOO's number manager (accounts, numbers, search, inventory).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(help="Create and show accounts.", no_args_is_help=True)
numbers_app = typer.Typer(
    help="Run number operations (one result per number).", no_args_is_help=True
)
app.add_typer(accounts_app, name="accounts")
jobs_app = typer.Typer(
    help="Bulk CSV jobs (KAZOO's number_management tasks) run by the workers.",
    no_args_is_help=True,
)
app.add_typer(numbers_app, name="numbers")
app.add_typer(jobs_app, name="jobs")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``knm`` console script; returns the exit code."""
    command = typer.main.get_command(app)
    code = command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    return code if isinstance(code, int) else OK


# ================================================================================ accounts
AccountId = Annotated[str, typer.Argument(metavar="ID", help="32-character account id.")]


@accounts_app.command("create")
def accounts_create(
    account_id: AccountId,
    name: Annotated[str, typer.Option("--name", help="Account name.")],
    parent: Annotated[
        str | None, typer.Option("--parent", metavar="ID", help="Parent account id.")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Superduper admin (may do anything).")
    ] = False,
    allow_additions: Annotated[
        bool, typer.Option("--allow-additions", help="May create numbers (KAZOO wnm additions).")
    ] = False,
    reseller: Annotated[
        bool, typer.Option("--reseller", help="Mark as reseller (root accounts always are).")
    ] = False,
    carrier_modules: Annotated[
        list[str] | None,
        typer.Option(
            "--carrier-module",
            metavar="MODULE",
            help="Carrier modules searches of this reseller's accounts use (repeatable).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account; its tree and reseller follow from the parent."""
    with open_knm() as knm:
        account = knm.create_account(
            account_id,
            name,
            parent=parent,
            admin=admin,
            allow_additions=allow_additions,
            reseller=reseller,
            carrier_modules=carrier_modules or None,
        )
    _show_account(account, as_json, "account created")


@accounts_app.command("get")
def accounts_get(account_id: AccountId, as_json: JsonFlag = False) -> None:
    """Show an account (exit 1 if it does not exist)."""
    if not is_account_id(account_id):
        usage_error(bad_account_id(account_id))
    with open_knm() as knm:
        account = knm.get_account(account_id)
    if account is None:
        die(f"account {account_id} does not exist", FAILED)
    _show_account(account, as_json, "account")


def _show_account(account: Account, as_json: bool, title: str) -> None:
    if as_json:
        print_json(render.account_json(account))
    else:
        console().print(render.account_detail(account, title=title))


# ================================================================================ numbers
_NUMBER_HELP = {
    Operation.GET: "Fetch numbers the requester may see.",
    Operation.CREATE: "Create numbers (in_service unless --state), assigned to --account.",
    Operation.ACTIVATE: "Move numbers in service for --account, acquiring discovered ones.",
    Operation.RESERVE: "Reserve numbers for --account.",
    Operation.RELEASE: "Release numbers (unwind reservations, disconnect, delete or age).",
    Operation.DELETE: "Hard-delete numbers in any state (admins only).",
}
#: The operations ``knm numbers`` offers with the common options (``update`` has its own).
CLI_OPERATIONS = tuple(_NUMBER_HELP)


def numbers_request(
    op: Operation,
    numbers: list[str],
    *,
    account: str | None = None,
    auth_by: str = SYSTEM,
    state: NumberState | None = None,
    carrier: str | None = None,
    ported_in: bool = False,
    dry_run: bool = False,
    mdn: bool = False,
    validate: bool = True,
) -> NumbersRequest:
    """The request of a ``knm numbers`` command, with only the options the user gave.

    A field left out is not applied at all (``requests.to_options``), so an option the user did
    not give must not be passed, not even with its default value. Raises ``InvalidRequestError``
    for an option the operation does not take.

    ``validate=False`` (the in-process path) lets empty strings through: in process every
    input gets its own result as it always has, an empty one failing ``not_reconcilable``. At
    most ``MAX_NUMBERS_PER_REQUEST`` numbers either way (``requests.check``).
    """
    fields: dict[str, Any] = {"numbers": numbers}
    if account is not None:
        fields["account"] = account
    if auth_by != SYSTEM:
        fields["auth_by"] = auth_by
    if state is not None:
        fields["state"] = state
    if carrier is not None:
        fields["carrier_module"] = carrier
    if ported_in:
        fields["ported_in"] = True
    if dry_run:
        fields["dry_run"] = True
    if mdn:
        fields["mdn"] = True
    if validate:
        request = NumbersRequest.model_validate(fields)
    else:
        request = NumbersRequest.model_construct(**fields)
    requests.check(op, request)
    return request


def _show_result(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print_json(result)
        return
    out = console()
    out.print(render.result_table(result, title=title))
    succeeded, failed = result.get("succeeded") or {}, result.get("failed") or {}
    out.print(f"{len(succeeded)} succeeded, {len(failed)} failed")


def _run_request(
    op: Operation,
    request: NumbersRequest,
    dry_run: bool,
    *,
    via_broker: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Run a ``knm numbers`` request in process or through the broker, show it, exit 1 if a
    number failed."""
    if via_broker:
        from carriers.registry import default_registry
        from workers import producer

        settings = current_settings()
        unknown = requests.unknown_carrier(default_registry(), request)
        if unknown is not None:  # nobody consumes such a queue: refuse it here, publish nothing
            result = requests.result_json(requests.refused(settings, request.numbers, unknown))
        else:
            with broker_guard(settings):
                result = producer.call(op, request, timeout, app=producer_app(settings))
    else:
        with open_knm() as knm:
            result = requests.execute(knm, op, request)
    _show_result(result, as_json, f"numbers {op.value}" + (" (dry run)" if dry_run else ""))
    if result.get("failed"):
        raise typer.Exit(FAILED)


def _number_command(op: Operation) -> Callable[..., None]:
    def command(
        numbers: Annotated[
            list[str], typer.Argument(metavar="NUMBER...", help="Numbers, in any dialable form.")
        ],
        account: Annotated[
            str | None,
            typer.Option(
                "--account",
                metavar="ID",
                help="Account to assign to (create, reserve) or to activate for.",
            ),
        ] = None,
        auth_by: Annotated[
            str,
            typer.Option("--auth-by", metavar="ID|system", help="Requesting account."),
        ] = SYSTEM,
        state: Annotated[
            NumberState | None,
            typer.Option("--state", help="State to create numbers in (create only)."),
        ] = None,
        carrier: Annotated[
            str | None,
            typer.Option("--carrier", metavar="MODULE", help="Carrier module (e.g. knm_local)."),
        ] = None,
        ported_in: Annotated[
            bool, typer.Option("--ported-in", help="The numbers are ported in.")
        ] = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Compute the result, write nothing.")
        ] = False,
        mdn: Annotated[bool, typer.Option("--mdn", help="The numbers are MDNs.")] = False,
        via_broker: ViaBroker = False,
        timeout: Timeout = DEFAULT_TIMEOUT_S,
        as_json: JsonFlag = False,
    ) -> None:
        if state is not None and op != Operation.CREATE:
            usage_error("option '--state' is only valid for 'numbers create'")
        if op in NEEDS_ACCOUNT and account is None:
            usage_error(f"missing option '--account' (required by 'numbers {op.value}')")
        try:
            request = numbers_request(
                op,
                numbers,
                account=account,
                auth_by=auth_by,
                state=state,
                carrier=carrier,
                ported_in=ported_in,
                dry_run=dry_run,
                mdn=mdn,
                validate=via_broker,
            )
        except ValidationError as exc:
            usage_error(validation_message(exc))
        except InvalidRequestError as exc:
            usage_error(str(exc))
        _run_request(op, request, dry_run, via_broker=via_broker, timeout=timeout, as_json=as_json)

    command.__name__ = f"numbers_{op.value}"
    command.__doc__ = _NUMBER_HELP[op]
    return command


for _op in CLI_OPERATIONS:
    numbers_app.command(_op.value)(_number_command(_op))


def _json_object(option: str, text: str) -> dict[str, Any]:
    """A ``--set``/``--merge`` value: a JSON object, or a usage error naming the option."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        usage_error(f"{option} must be a JSON object: {exc}")
    if not isinstance(value, dict):
        usage_error(f"{option} must be a JSON object, not {type(value).__name__}")
    return value


@numbers_app.command("update")
def numbers_update(
    numbers: Annotated[
        list[str], typer.Argument(metavar="NUMBER...", help="Numbers, in any dialable form.")
    ],
    set_fields: Annotated[
        str | None,
        typer.Option(
            "--set",
            metavar="JSON",
            help='Replace the public fields, e.g. \'{"e911": {...}, "cnam": {...}}\'.',
        ),
    ] = None,
    merge_fields: Annotated[
        str | None,
        typer.Option(
            "--merge", metavar="JSON", help="Merge into the public fields (nested objects too)."
        ),
    ] = None,
    auth_by: Annotated[
        str, typer.Option("--auth-by", metavar="ID|system", help="Requesting account.")
    ] = SYSTEM,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute the result, write nothing.")
    ] = False,
    via_broker: ViaBroker = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    as_json: JsonFlag = False,
) -> None:
    """Set (--set: overwrite) or merge (--merge) public fields; features apply on save."""
    if (set_fields is None) == (merge_fields is None):
        usage_error("give exactly one of --set JSON (overwrite) or --merge JSON (merge)")
    option, text = ("--set", set_fields) if set_fields is not None else ("--merge", merge_fields)
    assert text is not None
    fields: dict[str, Any] = {
        "numbers": numbers,
        "public_fields": _json_object(option, text),
        "merge": merge_fields is not None,
    }
    if auth_by != SYSTEM:
        fields["auth_by"] = auth_by
    if dry_run:
        fields["dry_run"] = True
    try:
        if via_broker:
            request = NumbersRequest.model_validate(fields)
        else:
            request = NumbersRequest.model_construct(**fields)
        requests.check(Operation.UPDATE, request)
    except ValidationError as exc:
        usage_error(validation_message(exc))
    except InvalidRequestError as exc:
        usage_error(str(exc))
    _run_request(
        Operation.UPDATE, request, dry_run, via_broker=via_broker, timeout=timeout, as_json=as_json
    )


# ================================================================================ search
@app.command("search")
def search(
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Number prefix, e.g. 415 (or +1415).")
    ],
    quantity: Annotated[int, typer.Option("--quantity", min=1, help="Results wanted.")] = 1,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Results to skip.")] = 0,
    country: Annotated[str, typer.Option("--country", metavar="CC", help="ISO country.")] = "US",
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help="Search for this account.")
    ] = None,
    carrier: Annotated[
        list[str] | None,
        typer.Option("--carrier", metavar="MODULE", help="Carrier module to ask (repeatable)."),
    ] = None,
    via_broker: ViaBroker = False,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    as_json: JsonFlag = False,
) -> None:
    """Search numbers (an account's carriers, or the --carrier modules)."""
    with guard(lambda: None):
        query = SearchQuery(
            prefix=prefix,
            quantity=quantity,
            offset=offset,
            country=country,
            account_id=account,
            carriers=list(carrier) if carrier else None,
        )
    if via_broker:
        from workers import producer

        settings = current_settings()
        with broker_guard(settings):
            rows = producer.search(query, timeout, app=producer_app(settings))
    else:
        with open_knm() as knm:
            rows = render.search_json(knm.search(query))
    _show_search(rows, as_json, f"search {prefix}")


def _show_search(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        print_json(rows)
    else:
        console().print(render.search_rows_table(rows, title=title))


# ================================================================================ inventory
class Generator(StrEnum):
    MANAGED = "managed"
    INUM = "inum"


@app.command("generate-numbers")
def generate_numbers(
    kind: Annotated[Generator, typer.Argument(help="Inventory to fill.")],
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Owner account id.")],
    start: Annotated[int, typer.Argument(metavar="START", help="First number (digits).")],
    quantity: Annotated[int, typer.Argument(metavar="QUANTITY", help="How many numbers.")],
    as_json: JsonFlag = False,
) -> None:
    """Generate inventory numbers +START, +START+1, ... for ACCOUNT (managed or inum)."""
    with open_knm() as knm:
        report = knm.generate_numbers(kind.value, account_id, start, quantity)
    errors = report.get("errors") or {}
    if as_json:
        print_json(report)
    else:
        out = console()
        out.print(
            f"generated {len(report.get('success') or {})} {kind.value} numbers for "
            f"{account_id}, {len(errors)} failed"
        )
        if errors:
            out.print(render.report_table(report, title="failures"))
    if errors:
        raise typer.Exit(FAILED)


# ================================================================================ jobs
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
def jobs_delete(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Delete a job, its rows and results now (finished jobs expire after KNM_JOB_RETENTION_D)."""
    from knm.store import job_retention

    with open_knm() as knm:
        existed, rows = job_retention.delete_job(knm.store.db, job_id)
    if not existed and not rows:
        die(f"job {job_id} does not exist", FAILED)
    if as_json:
        print_json({"id": job_id, "deleted": existed, "rows_deleted": rows})
    else:
        typer.echo(f"deleted job {job_id} and its {rows} rows")


# ================================================================================ worker, beat
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


@app.command("worker")
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


@app.command("beat")
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


# ================================================================================ demo
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


@app.command("demo")
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


def _register_maintenance() -> None:
    """Sweeps, maintenance and the sandbox live in their own modules (knm/cli_*.py)."""
    from knm.cli.contract import register as register_contract
    from knm.cli.maintenance import register
    from knm.cli.numbers_extra import register as register_numbers_extra
    from knm.cli.request_commands import register as register_requests
    from knm.cli.sandbox import register as register_sandbox
    from knm.cli.status import register as register_status

    register(app)
    register_sandbox(app)
    register_requests(app)
    register_contract(app)
    register_status(app)
    register_numbers_extra(app)


_register_maintenance()
