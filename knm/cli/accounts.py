"""``knm accounts create|get``: accounts, their tree and reseller."""

from __future__ import annotations

from typing import Annotated

import typer

from knm.cli import render
from knm.cli.helpers import FAILED, JsonFlag, console, die, open_knm, print_json, usage_error
from knm.domain.accounts import Account, bad_account_id, is_account_id

accounts_app = typer.Typer(help="Create and show accounts.", no_args_is_help=True)

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


def register(cli: typer.Typer) -> None:
    """Add ``knm accounts ...`` to the command line."""
    cli.add_typer(accounts_app, name="accounts")
