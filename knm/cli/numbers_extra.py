"""``knm numbers lookup NUMBER`` and ``knm billing quantities ACCOUNT``: two read-only views.

``numbers lookup`` answers what call routing asks for every call (``knm.services.lookup``): the
account a number routes to and its routing properties. ``billing quantities`` counts an account's
numbers the way KAZOO's billing does (``knm.services.billing``). ``--json`` output:

- ``knm numbers lookup NUMBER --json``: the properties ``{"account_id", "number",
  "pending_port", "local", "force_outbound", "inbound_cnam", "prepend"?, "ringback_media"?,
  "transfer_media"?}``, or the failure ``{"error": ...}`` (plus ``"assigned_to"`` for
  ``not_in_service`` and ``account_disabled``), printed on stdout before exiting 1.
- ``knm billing quantities ACCOUNT --json``: ``{"account_id", "phone_numbers",
  "number_carriers", "number_services", "billable"}``.

Exit codes follow ``knm.cli.helpers``: 0 fine, 1 the number does not route (or the store
failed), 2 a usage error (e.g. an account id that is not 32 characters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from knm.cli.helpers import FAILED, console, die, open_knm, print_json, usage_error
from knm.cli.numbers import numbers_app

if TYPE_CHECKING:
    from knm.services.lookup import LookupResult

billing_app = typer.Typer(help="What accounts' numbers count for billing.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def numbers_lookup(
    number: Annotated[
        str, typer.Argument(metavar="NUMBER", help="The number, in any dialable form.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Show the account a number routes to and its routing properties (exit 1 if none)."""
    from knm.services import lookup

    with open_knm() as knm:
        result = lookup.lookup_account(knm, number)
    if as_json:
        print_json(result.to_json())
        if not result.ok:
            raise typer.Exit(FAILED)
        return
    if not result.ok:
        die(_lookup_failure(number, result), FAILED)
    table = Table(title=f"lookup {result.number}", show_header=False)
    table.add_column("property")
    table.add_column("value")
    for key, value in result.props.items():
        table.add_row(key, Text(_text(value)))  # a prepend name is no markup
    console().print(table)


def _lookup_failure(number: str, result: LookupResult) -> str:
    shown = result.number or number
    if result.assigned_to is not None:
        return f"{shown}: {result.error} (assigned to {result.assigned_to})"
    return f"{shown}: {result.error}"


@billing_app.command("quantities")
def billing_quantities(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT", help="32-character account id.")],
    as_json: JsonFlag = False,
) -> None:
    """Count an account's numbers per classification, carrier module and feature."""
    from knm.domain.accounts import bad_account_id, is_account_id
    from knm.services import billing

    if not is_account_id(account_id):
        usage_error(bad_account_id(account_id))
    with open_knm() as knm:
        counted = billing.quantities(knm, account_id)
    if as_json:
        print_json(counted)
        return
    table = Table(title=f"billing quantities of {account_id}")
    for column in ("category", "item", "quantity"):
        table.add_column(column)
    for category in ("phone_numbers", "number_carriers", "number_services"):
        for item, quantity in counted[category].items():
            table.add_row(category, item, str(quantity))
    out = console()
    out.print(table)
    out.print(f"billable numbers: {counted['billable']}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def register(cli: typer.Typer) -> None:
    """Add ``knm numbers lookup`` and ``knm billing ...`` (idempotent: a second call is a no-op)."""
    if not any(info.name == "lookup" for info in numbers_app.registered_commands):
        numbers_app.command("lookup")(numbers_lookup)
    if not any(info.name == "billing" for info in cli.registered_groups):
        cli.add_typer(billing_app, name="billing")
