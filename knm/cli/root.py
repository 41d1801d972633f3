"""knm's command line: ``cli``, the root ``knm`` command, and ``main``, its console entry point.

Each command group lives in its own module (``knm.cli.accounts``, ``numbers``, ``search``,
``jobs``, ``worker_commands``, ``demo``, ``maintenance``, ``sandbox``, ``request_commands``,
``contract``, ``status``, ``numbers_extra``, ``api_commands``) and adds itself with
``register(cli)``; this module
registers them all, in the order ``knm --help`` lists them. The groups share ``knm.cli.helpers``
and never import this module.

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
  columns plus ``error``).

``knm numbers ...`` and ``knm search`` build the request of ``knm.services.numbers_requests`` and
run it in this process, or with ``--via-broker`` publish it as a task (``workers.producer``) and
print the result a worker returns: the same output either way. ``knm worker`` and ``knm beat`` run
Celery on the configured broker (the embedded one under ``KNM_DATA_DIR`` without
``KNM_BROKER_URL``); ``knm demo`` starts a worker and walks through the worker path. ``knm jobs
submit`` stores a CSV job (``knm.services.jobs``) and publishes its chunks for the workers;
``--wait`` follows it to the end.

Exit codes: 0 when everything succeeded, 1 when any number (or the store, or the broker) failed,
2 for a usage error or a request a worker rejected as invalid (or a CSV file a job refuses);
``knm jobs submit --wait`` exits 0 when the job succeeded, 1 when it is partial or failed.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Annotated, Any

import typer
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup, TyperOption

from config.settings import SettingsError
from knm.cli import (
    accounts,
    api_commands,
    contract,
    demo,
    jobs,
    maintenance,
    numbers,
    numbers_extra,
    request_commands,
    sandbox,
    search,
    status,
    worker_commands,
)
from knm.cli.helpers import FAILED, OK, USAGE, one_line


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


_option_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: Context) -> str | None:
    """A flag takes no value: typer's rich help showed ``--json <bool>`` as if it took one."""
    if self.is_flag and not self.count:
        return None
    return _option_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def version() -> str:
    """knm's version, from the installed package's metadata."""
    try:
        return metadata.version("knm")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"knm {version()}")
        raise typer.Exit()


#: The ``knm`` command: every command group registered on it.
cli = typer.Typer(
    cls=_KnmGroup,
    name="knm",
    help="knm: KAZOO's number manager (accounts, numbers, search, inventory).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cli.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print knm's version."
        ),
    ] = False,
) -> None:
    """knm: KAZOO's number manager (accounts, numbers, search, inventory)."""


# typer lists the plain commands first, then the groups, each kind in the order added here
accounts.register(cli)
numbers.register(cli)
jobs.register(cli)
search.register(cli)
worker_commands.register(cli)
demo.register(cli)
maintenance.register(cli)
sandbox.register(cli)
request_commands.register(cli)
contract.register(cli)
status.register(cli)
numbers_extra.register(cli)
api_commands.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``knm`` console script; returns the exit code."""
    command = typer.main.get_command(cli)
    code = command.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    return code if isinstance(code, int) else OK
