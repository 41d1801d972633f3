"""``knm search PREFIX`` and ``knm generate-numbers``: find numbers, fill an inventory."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

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
    guard,
    open_knm,
    print_json,
    producer_app,
    require_account,
)
from knm.services.search import SearchQuery


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


def generate_numbers(
    kind: Annotated[Generator, typer.Argument(help="Inventory to fill.")],
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT", help="Owner account id.")],
    start: Annotated[int, typer.Argument(metavar="START", help="First number (digits).")],
    quantity: Annotated[int, typer.Argument(metavar="QUANTITY", help="How many numbers.")],
    as_json: JsonFlag = False,
    force: Force = False,
) -> None:
    """Generate inventory numbers +START, +START+1, ... for ACCOUNT (managed or inum)."""
    require_account(account_id, force, option="ACCOUNT")
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


def register(cli: typer.Typer) -> None:
    """Add ``knm search`` and ``knm generate-numbers`` to the command line."""
    cli.command("search")(search)
    cli.command("generate-numbers")(generate_numbers)
