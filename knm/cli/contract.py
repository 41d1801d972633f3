"""``knm contract write|check [DIR]``: the JSON Schema files of the task contract.

``write`` regenerates them from the pydantic models (``knm.contract``) into DIR, by default the
package's ``knm/contract/schemas/v<N>/`` (commit the result); ``check`` lists the files in DIR
that are missing or differ from what the models generate and exits 1 if there are any (CI runs it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

contract_app = typer.Typer(
    help="The task contract: JSON Schema files of knm.numbers.* and knm.search.",
    no_args_is_help=True,
)

DirArg = Annotated[
    Path | None,
    typer.Argument(
        metavar="DIR",
        help="Directory of the schema files (default: the package's knm/contract/schemas/v<N>).",
        show_default=False,
    ),
]


@contract_app.command("write")
def write(directory: DirArg = None) -> None:
    """Generate the schema files from the models into DIR."""
    from knm.contract import json_schema as contract

    target = directory if directory is not None else contract.SCHEMAS_DIR
    try:
        written = contract.write(target)
    except OSError as exc:
        typer.echo(f"knm: error: cannot write {target}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {len(written)} files of contract v{contract.CONTRACT_VERSION} to {target}")


@contract_app.command("check")
def check(directory: DirArg = None) -> None:
    """Exit 1, listing them, if files in DIR differ from what the models generate."""
    from knm.contract import json_schema as contract

    target = directory if directory is not None else contract.SCHEMAS_DIR
    stale = contract.check(target)
    if stale:
        for name in stale:
            typer.echo(name)
        typer.echo(
            f"knm: error: {len(stale)} contract files in {target} are stale: "
            "run 'knm contract write' (and remove files it no longer generates)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"contract v{contract.CONTRACT_VERSION} in {target} is up to date")


def register(cli: typer.Typer) -> None:
    """Add ``knm contract ...`` to the command line."""
    cli.add_typer(contract_app, name="contract")
