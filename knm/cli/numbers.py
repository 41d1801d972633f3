"""``knm numbers get|create|activate|reserve|release|delete|update``: one result per number.

Each command builds the request of ``knm.services.numbers_requests`` and runs it in this process,
or with ``--via-broker`` publishes it as a task (``workers.producer``) and prints the result a
worker returns: the same output either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from knm.cli import render
from knm.cli.helpers import (
    DEFAULT_TIMEOUT_S,
    FAILED,
    Force,
    JsonFlag,
    Timeout,
    ViaBroker,
    broker_guard,
    console,
    current_settings,
    open_knm,
    print_json,
    producer_app,
    require_account,
    usage_error,
    validation_message,
)
from knm.domain.accounts import SYSTEM
from knm.domain.number import NumberState
from knm.services import numbers_requests as requests
from knm.services.numbers_requests import (
    NEEDS_ACCOUNT,
    InvalidRequestError,
    NumbersRequest,
    Operation,
)

numbers_app = typer.Typer(
    help="Run number operations (one result per number).", no_args_is_help=True
)

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
        force: Force = False,
    ) -> None:
        if state is not None and op != Operation.CREATE:
            usage_error("option '--state' is only valid for 'numbers create'")
        if force and op != Operation.CREATE:
            usage_error("option '--force' is only valid for 'numbers create'")
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
        if op == Operation.CREATE and account is not None:
            require_account(account, force)
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


def register(cli: typer.Typer) -> None:
    """Add ``knm numbers ...`` to the command line."""
    cli.add_typer(numbers_app, name="numbers")
