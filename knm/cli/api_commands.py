"""``knm api serve`` (the HTTP API) and ``knm api-keys create|list|revoke`` (its keys).

A key is printed once, when it is created (``{"key": ...}`` with ``--json``); only its digest
is stored. Every request made with it has the key's account as its requester.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from knm.cli.helpers import (
    FAILED,
    JsonFlag,
    console,
    current_settings,
    die,
    open_knm,
    print_json,
    usage_error,
)
from knm.domain.accounts import bad_account_id, is_account_id
from knm.store.api_keys import ApiKeyStore

api_app = typer.Typer(help="The KAZOO-compatible HTTP API.", no_args_is_help=True)
keys_app = typer.Typer(help="Keys of the HTTP API (X-Auth-Token).", no_args_is_help=True)


@api_app.command("serve")
def api_serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")
    ] = 8000,
) -> None:
    """Serve the phone_numbers and tasks APIs until interrupted (Ctrl-C)."""
    from knm.api.server import serve

    settings = current_settings()
    _check_listen(host, port)
    serve(host, port, settings)


def _check_listen(host: str, port: int) -> None:
    """Fail with one line (exit 1) when the address cannot be listened on, before starting."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        die(f"cannot listen on {host}:{port}: {exc.strerror or exc}", FAILED)


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Argument(metavar="ACCOUNT", help="The key's account.")],
    name: Annotated[
        str | None, typer.Option("--name", metavar="N", help="What the key is for.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key for ACCOUNT and print it (once: only its digest is kept)."""
    if not is_account_id(account):
        usage_error(bad_account_id(account))
    with open_knm() as knm:
        if knm.get_account(account) is None:
            die(f"account {account} does not exist", FAILED)
        keys = ApiKeyStore(knm.store.db)
        keys.ensure_indexes()
        key, record = keys.create(account, name)
    if as_json:
        print_json({"key": key, **record.to_json()})
    else:
        typer.echo(key)
        typer.echo(
            f"knm: key {record.id} for account {account}: shown once, keep it safe", err=True
        )


@keys_app.command("list")
def keys_list(
    account: Annotated[
        str | None, typer.Option("--account", metavar="ID", help="Only this account's keys.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List keys (their ids, accounts and names; never the keys)."""
    with open_knm() as knm:
        found = [k.to_json() for k in ApiKeyStore(knm.store.db).list(account)]
    if as_json:
        print_json(found)
        return
    table = Table(title="api keys")
    for column in ("id", "account_id", "name", "created", "revoked"):
        table.add_column(column)
    for row in found:
        table.add_row(
            *(str(row[c] or "") for c in ("id", "account_id", "name", "created", "revoked"))
        )
    console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (api-keys list).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    with open_knm() as knm:
        record = ApiKeyStore(knm.store.db).revoke(key_id)
    if record is None:
        die(f"no key has id {key_id}", FAILED)
    if as_json:
        print_json(record.to_json())
    else:
        typer.echo(f"revoked key {record.id} of account {record.account_id}")


def register(cli: typer.Typer) -> None:
    """Add ``knm api ...`` and ``knm api-keys ...`` to the command line."""
    cli.add_typer(api_app, name="api")
    cli.add_typer(keys_app, name="api-keys")
