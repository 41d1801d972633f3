"""knm's command line: accounts, number operations, search, inventory generation and a demo.

Other tools parse the ``--json`` output, so its shape is a contract:

- ``knm numbers get|create|activate|reserve|release|delete NUMBER... --json`` prints one object
  ``{"succeeded": {E.164: stored document}, "failed": {input: error}}``; a stored document is the
  number's full MongoDB document (private fields included, datetimes as ISO 8601 strings) and an
  error is ``KnmError.to_json()``.
- ``knm search PREFIX --json`` prints a list of ``{"number", "state", "carrier_module"}``.
- ``knm accounts create|get ID --json`` prints ``Account.to_json()``.

Exit codes: 0 when everything succeeded, 1 when any number (or the store) failed, 2 for a usage
error. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from pymongo.errors import ConfigurationError, ConnectionFailure, PyMongoError
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from carriers.base import SearchResult
from config.settings import Settings, get_settings, reset_settings
from knm import embedded, render
from knm.accounts import SYSTEM, Account, is_account_id
from knm.app import InputError, Knm
from knm.batch import Batch
from knm.model import NumberState
from knm.options import Options
from knm.search import SearchQuery

OK = 0
FAILED = 1
USAGE = 2


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
            message = _one_line(exc.format_message()).replace("Value error, ", "")
            typer.echo(f"{command}: error: {message}", err=True)
            code = exc.exit_code
        except ClickException as exc:
            typer.echo(f"knm: error: {_one_line(exc.format_message())}", err=True)
            code = exc.exit_code
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
app.add_typer(numbers_app, name="numbers")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``knm`` console script; returns the exit code."""
    command = typer.main.get_command(app)
    code = command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    return code if isinstance(code, int) else OK


# ================================================================================ plumbing
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _die(message: str, code: int) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"knm: error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _usage(message: str) -> NoReturn:
    """A usage error of the current command (exit 2)."""
    raise UsageError(message, ctx=get_current_context(silent=True))


def _settings() -> Settings:
    """Settings read from the environment now (a test or a wrapper may have changed it)."""
    reset_settings()
    return get_settings()


def _redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url


def _store_url(settings: Settings | None) -> str:
    if settings is None:
        return "(unknown)"
    if settings.mongodb_url:
        return _redact(settings.mongodb_url)
    state = embedded.read_state(settings.data_dir.expanduser().resolve())
    if state is not None:
        return state.url
    return f"the embedded server in {settings.data_dir}"


def _mongo_message(exc: PyMongoError) -> str:
    """pymongo's message without the (long) topology description."""
    text = str(exc).split(", Topology Description:")[0]
    return _one_line(text)


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return f"invalid {exc.title}: " + "; ".join(problems)


@contextlib.contextmanager
def _guard(settings: Callable[[], Settings | None]) -> Iterator[None]:
    """Turn the expected failures into one line on stderr and an exit code."""
    try:
        yield
    except InputError as exc:
        _die(str(exc), USAGE)
    except ValidationError as exc:
        _die(_validation_message(exc), USAGE)
    except ConfigurationError as exc:
        _die(f"cannot reach MongoDB at {_store_url(settings())}: {_mongo_message(exc)}", USAGE)
    except ConnectionFailure as exc:
        _die(f"cannot reach MongoDB at {_store_url(settings())}: {_mongo_message(exc)}", FAILED)
    except PyMongoError as exc:
        _die(f"MongoDB error at {_store_url(settings())}: {_mongo_message(exc)}", FAILED)


@contextlib.contextmanager
def _open() -> Iterator[Knm]:
    """The facade on the configured store, closed afterwards; failures become one line."""
    current: list[Settings] = []
    with _guard(lambda: current[0] if current else None):
        settings = _settings()
        current.append(settings)
        try:
            knm = Knm.open(settings)
        except (RuntimeError, OSError) as exc:  # TimeoutError is an OSError
            if settings.mongodb_url:
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _die(
                f"cannot start the embedded MongoDB server in {settings.data_dir}: {first}", FAILED
            )
        try:
            yield knm
        finally:
            knm.close()


def _print_json(value: Any) -> None:
    typer.echo(render.dumps(value))


def _console() -> Console:
    return render.console()


# ================================================================================ accounts
AccountId = Annotated[str, typer.Argument(metavar="ID", help="32-character account id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


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
    with _open() as knm:
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
        _usage(f"account id must be 32 letters, digits or '_': {account_id!r}")
    with _open() as knm:
        account = knm.get_account(account_id)
    if account is None:
        _die(f"account {account_id} does not exist", FAILED)
    _show_account(account, as_json, "account")


def _show_account(account: Account, as_json: bool, title: str) -> None:
    if as_json:
        _print_json(render.account_json(account))
    else:
        _console().print(render.account_detail(account, title=title))


# ================================================================================ numbers
class Operation(StrEnum):
    GET = "get"
    CREATE = "create"
    ACTIVATE = "activate"
    RESERVE = "reserve"
    RELEASE = "release"
    DELETE = "delete"


#: Operations that need ``--account`` (the target of activate, the holder of a reservation).
NEEDS_ACCOUNT = frozenset({Operation.ACTIVATE, Operation.RESERVE})

_NUMBER_HELP = {
    Operation.GET: "Fetch numbers the requester may see.",
    Operation.CREATE: "Create numbers (in_service unless --state), assigned to --account.",
    Operation.ACTIVATE: "Move numbers in service for --account, acquiring discovered ones.",
    Operation.RESERVE: "Reserve numbers for --account.",
    Operation.RELEASE: "Release numbers (unwind reservations, disconnect, delete or age).",
    Operation.DELETE: "Hard-delete numbers in any state (admins only).",
}


def number_options(
    op: Operation,
    *,
    account: str | None,
    auth_by: str,
    state: NumberState | None,
    carrier: str | None,
    ported_in: bool,
    dry_run: bool,
    mdn: bool,
) -> Options:
    """The operation's ``Options``, with only the options the user gave set.

    ``Options.model_fields_set`` decides which setters an operation applies, so an option the
    user did not give must not be passed, not even with its default value.
    """
    fields: dict[str, Any] = {"auth_by": auth_by}
    if account is not None and op != Operation.ACTIVATE:
        fields["assign_to"] = account
    if state is not None:
        fields["state"] = state
    if carrier is not None:
        fields["module_name"] = carrier
    if ported_in:
        fields["ported_in"] = True
    if dry_run:
        fields["dry_run"] = True
    if mdn:
        fields["mdn_run"] = True
    return Options(**fields)


def run_operation(
    knm: Knm, op: Operation, numbers: list[str], account: str | None, options: Options
) -> Batch:
    manager = knm.numbers
    if op == Operation.GET:
        return manager.get(numbers, options)
    if op == Operation.CREATE:
        return manager.create(numbers, options)
    if op == Operation.ACTIVATE:
        assert account is not None
        return manager.move(numbers, account, options)
    if op == Operation.RESERVE:
        return manager.reserve(numbers, options)
    if op == Operation.RELEASE:
        return manager.release(numbers, options)
    return manager.delete(numbers, options)


def _show_batch(batch: Batch, as_json: bool, title: str) -> None:
    if as_json:
        _print_json(render.batch_json(batch))
        return
    out = _console()
    out.print(render.batch_table(batch, title=title))
    out.print(f"{len(batch.succeeded)} succeeded, {len(batch.failed)} failed")


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
        as_json: JsonFlag = False,
    ) -> None:
        if state is not None and op != Operation.CREATE:
            _usage("option '--state' is only valid for 'numbers create'")
        if op in NEEDS_ACCOUNT and account is None:
            _usage(f"missing option '--account' (required by 'numbers {op.value}')")
        options = number_options(
            op,
            account=account,
            auth_by=auth_by,
            state=state,
            carrier=carrier,
            ported_in=ported_in,
            dry_run=dry_run,
            mdn=mdn,
        )
        with _open() as knm:
            batch = run_operation(knm, op, numbers, account, options)
        title = f"numbers {op.value}" + (" (dry run)" if dry_run else "")
        _show_batch(batch, as_json, title)
        if batch.failed:
            raise typer.Exit(FAILED)

    command.__name__ = f"numbers_{op.value}"
    command.__doc__ = _NUMBER_HELP[op]
    return command


for _op in Operation:
    numbers_app.command(_op.value)(_number_command(_op))


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
    as_json: JsonFlag = False,
) -> None:
    """Search numbers (an account's carriers, or the --carrier modules)."""
    with _open() as knm:
        query = SearchQuery(
            prefix=prefix,
            quantity=quantity,
            offset=offset,
            country=country,
            account_id=account,
            carriers=list(carrier) if carrier else None,
        )
        results = knm.search(query)
    _show_search(results, as_json, f"search {prefix}")


def _show_search(results: list[SearchResult], as_json: bool, title: str) -> None:
    if as_json:
        _print_json(render.search_json(results))
    else:
        _console().print(render.search_table(results, title=title))


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
    with _open() as knm:
        report = knm.generate_numbers(kind.value, account_id, start, quantity)
    errors = report.get("errors") or {}
    if as_json:
        _print_json(report)
    else:
        out = _console()
        out.print(
            f"generated {len(report.get('success') or {})} {kind.value} numbers for "
            f"{account_id}, {len(errors)} failed"
        )
        if errors:
            out.print(render.report_table(report, title="failures"))
    if errors:
        raise typer.Exit(FAILED)


# ================================================================================ demo
DEMO_RESELLER = "demoreseller".ljust(32, "0")
DEMO_CHILD = "demochild".ljust(32, "0")
DEMO_NUMBERS = ("+14155550170", "+14155550171", "+14155550172")


@app.command("demo")
def demo() -> None:
    """Walk through the core on the configured store (re-runnable)."""
    out = _console()
    with _open() as knm:
        manager = knm.numbers
        out.rule("knm demo")

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
        out.print(render.account_table(accounts, title="1. accounts (created if missing)"))

        leftovers = manager.delete(DEMO_NUMBERS, Options(auth_by=SYSTEM))
        out.print(f"removed {len(leftovers.succeeded)} demo numbers left by an earlier run")

        def step(title: str, batch: Batch) -> None:
            out.print(render.batch_table(batch, title=title))

        step(
            "2. create the demo numbers as available (system)",
            manager.create(
                DEMO_NUMBERS,
                Options(auth_by=SYSTEM, assign_to=DEMO_RESELLER, state=NumberState.AVAILABLE),
            ),
        )
        found = knm.search(SearchQuery(prefix="41555501", quantity=10, account_id=DEMO_CHILD))
        out.print(render.search_table(found, title="3. the customer searches 41555501"))
        step(
            "4. the reseller reserves two numbers for the customer",
            manager.reserve(DEMO_NUMBERS[:2], Options(auth_by=DEMO_RESELLER, assign_to=DEMO_CHILD)),
        )
        step(
            "5. the customer activates one of them",
            manager.move(DEMO_NUMBERS[:1], DEMO_CHILD, Options(auth_by=DEMO_CHILD)),
        )
        step(
            "6. the customer tries to delete a number (admins only)",
            manager.delete(DEMO_NUMBERS[:1], Options(auth_by=DEMO_CHILD)),
        )
        step(
            "7. the customer releases the active number (knm_local numbers are deleted)",
            manager.release(DEMO_NUMBERS[:1], Options(auth_by=DEMO_CHILD)),
        )
        step(
            "8. where everything stands (system view)",
            manager.get((*DEMO_NUMBERS, "1000"), Options(auth_by=SYSTEM)),
        )
    out.print("done: run `knm demo` again to start over")
