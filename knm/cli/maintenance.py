"""knm's maintenance commands: a sweep now, and KAZOO's number maintenance.

``register(cli)`` adds them to the ``knm`` command line (``knm.cli.root.cli``); registering twice
is harmless:

- ``knm sweep [age|purge-discovery|purge-deleted|all] [--now ISO-8601] [--dry-run] [--json]``
  runs sweeps in this process (the ones beat schedules as ``knm.sweeps.*``). ``--now`` pretends
  it is that time; ``--json`` prints the run report, at least ``{"aged": N,
  "purged_discovery": N, "purged_deleted": N}``. When another sweep holds a lock it prints one
  line saying so and exits 0 (the running sweep does the work).
- ``knm carriers usage [PREFIX] [--json]``, ``knm carriers convert SOURCE TARGET [--prefix P |
  --number N] [--json]`` (KAZOO's ``carrier_module_usage`` and ``convert_carrier_module*``).
- ``knm purge discovery|deleted [--prefix P] [--json]`` (``purge_discovery``/``purge_deleted``).
- ``knm features list|show NUMBER``, ``knm features allow|deny add|remove FEATURE NUMBER``
  (``feature_permissions_on_number`` and the ``add/remove_allowed/denied_feature_on_number``).
- ``knm maintenance delete NUMBER`` (``delete``) and ``knm maintenance fix-used-by FILE`` (set
  ``used_by`` from a CSV ``number,app`` or a JSON object ``{"number": "app"}``; an empty app or
  ``null`` clears it).

The conventions are ``knm.cli.helpers``': exit 0 when everything succeeded, 1 when a number or
the store failed, 2 for a usage error; errors are one line on stderr.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from knm.cli import render
from knm.cli.helpers import FAILED, JsonFlag, die, guard, open_knm, print_json, usage_error
from knm.domain.errors import KnmError
from knm.domain.number import NumberState
from knm.services import maintenance
from knm.services.facade import InputError
from knm.services.sweeps import COUNTER, Sweeper, SweepKind, SweepLockedError

if TYPE_CHECKING:
    from knm.domain.batch import Batch

NumberArg = Annotated[str, typer.Argument(metavar="NUMBER", help="A number, any dialable form.")]
FeatureArg = Annotated[str, typer.Argument(metavar="FEATURE", help="A feature (features list).")]

carriers_app = typer.Typer(help="Carrier module usage and conversion.", no_args_is_help=True)
features_app = typer.Typer(
    help="Feature permissions: a number's, a reseller's (reseller ...), the system's (system ...).",
    no_args_is_help=True,
)
allow_app = typer.Typer(help="Edit the number's allowed features.", no_args_is_help=True)
deny_app = typer.Typer(help="Edit the number's denied features.", no_args_is_help=True)
maintenance_app = typer.Typer(help="Repair numbers (delete, fix used_by).", no_args_is_help=True)
features_app.add_typer(allow_app, name="allow")
features_app.add_typer(deny_app, name="deny")

#: The groups ``register`` adds (the plain commands are ``sweep`` and ``purge``).
GROUPS: dict[str, typer.Typer] = {
    "carriers": carriers_app,
    "features": features_app,
    "maintenance": maintenance_app,
}


def register(cli: typer.Typer) -> None:
    """Add ``sweep``, ``purge`` and the maintenance groups to ``cli`` (a second call: no-op)."""
    names = {c.name for c in cli.registered_commands} | {g.name for g in cli.registered_groups}
    if "sweep" not in names:
        cli.command("sweep")(sweep)
    if "purge" not in names:
        cli.command("purge")(purge)
    for name, group in GROUPS.items():
        if name not in names:
            cli.add_typer(group, name=name)
    from knm.cli.feature_policy import register as register_policy

    if "system" not in {g.name for g in features_app.registered_groups}:
        register_policy(features_app)


# ================================================================================ helpers
@contextlib.contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (only on a terminal); yields the callback to advance it."""
    console = render.console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _batch_error(batch: Batch, number: str) -> str | None:
    """The one-line reason ``number`` failed in ``batch`` (None if it succeeded)."""
    if batch.succeeded:
        return None
    for key, error in batch.failed.items():
        return f"{key}: {render.error_text(error)}"
    return f"{number}: nothing done"


def _error_text(error: dict[str, Any]) -> str:
    """A failure's JSON form (``KnmError.to_json()``) as one line."""
    return render.error_text(
        KnmError(
            str(error.get("error", "")), error.get("code"), error.get("message"), error.get("cause")
        )
    )


def _bulk_out(report: maintenance.BulkReport, as_json: bool, what: str) -> None:
    """Print a bulk report; exit 1 when any number failed."""
    if as_json:
        print_json(report.to_json())
    else:
        out = render.console()
        out.print(f"{what}: {len(report.succeeded)} succeeded, {len(report.failed)} failed")
        if report.failed:
            table = Table(title="failures", title_justify="left")
            table.add_column("number", no_wrap=True)
            table.add_column("error", overflow="fold")
            for number, error in sorted(report.failed.items()):
                table.add_row(number, escape(_error_text(error)))
            out.print(table)
    if report.failed:
        raise typer.Exit(FAILED)


# ================================================================================ sweep
class SweepWhat(StrEnum):
    AGE = "age"
    PURGE_DISCOVERY = "purge-discovery"
    PURGE_DELETED = "purge-deleted"
    ALL = "all"


SWEEP_KINDS: dict[SweepWhat, list[SweepKind]] = {
    SweepWhat.AGE: [SweepKind.AGE],
    SweepWhat.PURGE_DISCOVERY: [SweepKind.PURGE_DISCOVERY],
    SweepWhat.PURGE_DELETED: [SweepKind.PURGE_DELETED],
    SweepWhat.ALL: list(SweepKind),
}


def _parse_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        usage_error(f"--now must be an ISO 8601 time (2030-01-31T12:00:00Z), not {value!r}")


def sweep(
    what: Annotated[
        SweepWhat,
        typer.Argument(help="Which sweep: age, purge-discovery, purge-deleted or all."),
    ] = SweepWhat.ALL,
    now: Annotated[
        str | None,
        typer.Option(
            "--now", metavar="ISO-8601", help="Pretend it is this time (UTC when no offset)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what is due; change nothing.")
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, help="Documents per batch (KNM_SWEEP_BATCH_SIZE)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run sweeps now, in this process: aging -> available, purge discovery and deleted docs."""
    as_of = _parse_now(now)
    kinds = SWEEP_KINDS[what]
    with open_knm() as knm:
        settings = knm.settings
        sweeper = Sweeper(
            knm,
            lock_ttl_s=settings.sweep_lock_ttl_s,
            batch_size=batch_size or settings.sweep_batch_size,
        )
        try:
            report = sweeper.run(kinds, now=as_of, dry_run=dry_run)
        except SweepLockedError as exc:
            if exc.lost:
                die(str(exc), FAILED)
            if as_json:
                typer.echo(json.dumps({"locked": True, "message": str(exc)}))
            else:
                typer.echo(f"knm sweep: {exc}")
            return
    result = report.to_json()
    if as_json:
        print_json(result)
    else:
        title = f"sweep {what.value} as of {report.as_of.isoformat()}"
        table = Table(title=title + (" (dry run)" if dry_run else ""), title_justify="left")
        table.add_column("transition")
        table.add_column("documents", justify="right")
        labels = {
            SweepKind.AGE: "aging -> available",
            SweepKind.PURGE_DISCOVERY: "discovery purged",
            SweepKind.PURGE_DELETED: "deleted purged",
        }
        for kind in kinds:
            table.add_row(labels[kind], str(result[COUNTER[kind]]))
        out = render.console()
        out.print(table)
        for error in report.errors:
            out.print(f"[red]{escape(error)}[/red]")
    if report.errors:
        raise typer.Exit(FAILED)


# ================================================================================ carriers
@carriers_app.command("usage")
def carriers_usage(
    prefix: Annotated[
        str | None, typer.Argument(metavar="[PREFIX]", help="Only numbers starting with it.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Numbers per carrier module (all numbers, or those starting with PREFIX)."""
    with open_knm() as knm:
        usage = maintenance.carrier_usage(knm, prefix)
    total = sum(usage.values())
    if as_json:
        print_json({"prefix": prefix, "modules": usage, "total": total})
        return
    table = Table(title=f"carrier modules{f' of {prefix}' if prefix else ''}", title_justify="left")
    table.add_column("module", no_wrap=True)
    table.add_column("numbers", justify="right")
    for module, count in usage.items():
        table.add_row(module, str(count))
    table.add_row("[b]total[/b]", f"[b]{total}[/b]")
    render.console().print(table)


@carriers_app.command("convert")
def carriers_convert(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Current module (any name).")],
    target: Annotated[str, typer.Argument(metavar="TARGET", help="New module (a known one).")],
    prefix: Annotated[
        str | None, typer.Option("--prefix", metavar="P", help="Only numbers starting with P.")
    ] = None,
    number: Annotated[
        str | None, typer.Option("--number", metavar="N", help="Only this number.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Set TARGET as the carrier module of the numbers whose module is SOURCE."""
    if prefix is not None and number is not None:
        usage_error("give --prefix or --number, not both")
    with open_knm() as knm, _progress(f"{source} -> {target}", number is None) as advance:
        report = maintenance.convert_carrier_module(
            knm, source, target, prefix=prefix, number=number, progress=advance
        )
    _bulk_out(report, as_json, f"converted {source} -> {target}")


# ================================================================================ purge
class PurgeState(StrEnum):
    DISCOVERY = "discovery"
    DELETED = "deleted"


def purge(
    state: Annotated[PurgeState, typer.Argument(help="Which documents: discovery or deleted.")],
    prefix: Annotated[
        str | None, typer.Option("--prefix", metavar="P", help="Only numbers starting with P.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Delete every stored document in STATE (whatever its age), optionally by prefix."""
    with open_knm() as knm, _progress(f"purge {state.value}", True) as advance:
        removed = maintenance.purge(knm, NumberState(state.value), prefix, advance)
    if as_json:
        print_json({"state": state.value, "prefix": prefix, "purged": removed})
    else:
        render.console().print(f"purged {removed} {state.value} documents")


# ================================================================================ features
def _show_permissions(permissions: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(permissions)
        return
    table = Table(title=f"feature permissions of {permissions['number']}", title_justify="left")
    table.add_column("list")
    table.add_column("features")
    table.add_row("allowed", ", ".join(permissions["allowed"]) or "-")
    table.add_row("denied", ", ".join(permissions["denied"]) or "-")
    render.console().print(table)


@features_app.command("list")
def features_list(as_json: JsonFlag = False) -> None:
    """Every feature a permission may name."""
    if as_json:
        print_json(list(maintenance.ALL_FEATURES))
    else:
        typer.echo("\n".join(maintenance.ALL_FEATURES))


@features_app.command("show")
def features_show(number: NumberArg, as_json: JsonFlag = False) -> None:
    """The number's allowed and denied features (pvt_features_allowed / _denied)."""
    with open_knm() as knm:
        try:
            permissions = maintenance.feature_permissions(knm, number)
        except InputError as exc:
            die(str(exc), FAILED)
    _show_permissions(permissions, as_json)


def _edit(number: str, feature: str, *, allow: bool, add: bool, as_json: bool) -> None:
    with open_knm() as knm:
        batch = maintenance.edit_feature_permission(
            knm, number, feature=feature, allow=allow, add=add
        )
        error = _batch_error(batch, number)
        if error is not None:
            die(error, FAILED)
        pn = next(iter(batch.succeeded.values()))
    permissions = {
        "number": pn.number,
        "allowed": pn.features_allowed,
        "denied": pn.features_denied,
    }
    _show_permissions(permissions, as_json)


def _edit_command(allow: bool, add: bool) -> Callable[..., None]:
    listing = "allowed" if allow else "denied"

    def command(feature: FeatureArg, number: NumberArg, as_json: JsonFlag = False) -> None:
        _edit(number, feature, allow=allow, add=add, as_json=as_json)

    verb = "add" if add else "remove"
    command.__name__ = f"features_{'allow' if allow else 'deny'}_{verb}"
    command.__doc__ = (
        f"{'Add FEATURE to' if add else 'Remove FEATURE from'} the number's {listing} features."
    )
    return command


for _allow, _group in ((True, allow_app), (False, deny_app)):
    for _add in (True, False):
        _group.command("add" if _add else "remove")(_edit_command(_allow, _add))


# ================================================================================ maintenance
@maintenance_app.command("delete")
def maintenance_delete(number: NumberArg, as_json: JsonFlag = False) -> None:
    """Hard-delete a number with system authority (prints ``Removed NUMBER``)."""
    with open_knm() as knm:
        batch = maintenance.delete_number(knm, number)
    if as_json:
        print_json(render.batch_json(batch))
    error = _batch_error(batch, number)
    if error is not None:
        die(error, FAILED)
    if not as_json:
        typer.echo(f"Removed {next(iter(batch.succeeded))}")


def read_app_mapping(path: Path) -> dict[str, str | None]:
    """``number -> app`` from a CSV ``number,app`` (header optional) or a JSON object.

    An empty app (or JSON ``null``) clears ``used_by``; a number listed twice keeps its last app.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object {{number: app}}")
        mapping: dict[str, str | None] = {}
        for number, app in data.items():
            if app is not None and not isinstance(app, str):
                raise InputError(f"{path}: the app of {number} must be a string or null")
            mapping[str(number)] = app or None
        return mapping
    mapping = {}
    for line, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if line == 1 and cells[0].lower() == "number":
            continue  # header
        if len(cells) > 2:
            raise InputError(f"{path}:{line}: expected 'number,app', got {len(cells)} columns")
        mapping[cells[0]] = (cells[1] if len(cells) > 1 else "") or None
    return mapping


@maintenance_app.command("fix-used-by")
def maintenance_fix_used_by(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="CSV 'number,app' or a JSON object {number: app}.", dir_okay=False
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Set each number's used_by from FILE (an empty app clears it)."""
    with guard(lambda: None):
        apps = read_app_mapping(file)
    if not apps:
        usage_error(f"{file} lists no numbers")
    with open_knm() as knm, _progress("fix used_by", len(apps) > maintenance.BATCH) as advance:
        report = maintenance.fix_used_by(knm, apps, advance)
    _bulk_out(report, as_json, "fixed used_by")
