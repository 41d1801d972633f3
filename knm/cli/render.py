"""Rendering for the CLI: JSON-safe documents and rich tables.

The ``--json`` forms are a contract other tools parse (see ``knm.cli``), so they are built here in
one place: a batch is ``{"succeeded": {number: stored document}, "failed": {input: error}}``, a
search is a list of ``{"number", "state", "carrier_module"}``. Without ``--json`` the same data is
shown as a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carriers.base import SearchResult
from knm.contract.json_values import jsonable
from knm.domain.accounts import Account
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber


# ------------------------------------------------------------------------------------ JSON
def dumps(value: Any) -> str:
    """The CLI's JSON text (indented, UTF-8 kept as is)."""
    return json.dumps(jsonable(value), indent=2, ensure_ascii=False)


def document_json(pn: PhoneNumber) -> dict[str, Any]:
    """A number as its full stored document (private fields included), JSON-safe."""
    doc: dict[str, Any] = jsonable(pn.to_document())
    return doc


def batch_json(batch: Batch) -> dict[str, Any]:
    """``{"succeeded": {E.164: document}, "failed": {input: error}}``."""
    return batch.to_json(document_json)


def search_json(results: Iterable[SearchResult]) -> list[dict[str, Any]]:
    """``[{"number", "state", "carrier_module"}]``."""
    return [
        {"number": r.number, "state": r.state.value, "carrier_module": r.carrier_module}
        for r in results
    ]


def account_json(account: Account) -> dict[str, Any]:
    data: dict[str, Any] = jsonable(account.to_json())
    return data


# ------------------------------------------------------------------------------------ tables
def error_text(error: KnmError) -> str:
    """One line: ``name: message (cause)``; plain reasons are just their name."""
    text = error.error
    if error.message and error.message != error.error:
        text += f": {error.message}"
    if error.cause not in (None, ""):
        text += f" ({error.cause})"
    return text


def batch_table(batch: Batch, title: str | None = None) -> Table:
    """One row per number: succeeded ones first, then the failures with their error."""
    return result_table(batch_json(batch), title=title)


def result_table(result: Mapping[str, Any], title: str | None = None) -> Table:
    """A JSON result ``{"succeeded": {number: document}, "failed": {input: error}}`` as a table.

    The in-process and the ``--via-broker`` paths both print their result through this, so a
    table looks the same whichever way the request travelled.
    """
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("number", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("account", overflow="fold")
    table.add_column("carrier", no_wrap=True)
    table.add_column("error", overflow="fold", min_width=5)
    succeeded: Mapping[str, Any] = result.get("succeeded") or {}
    failed: Mapping[str, Any] = result.get("failed") or {}
    for number, doc in sorted(succeeded.items()):
        table.add_row(
            number,
            _text(doc.get("pvt_state")),
            _text(doc.get("pvt_assigned_to")),
            _text(doc.get("pvt_carrier_module")),
            "",
        )
    for key, error in sorted(failed.items()):
        table.add_row(key, "", "", "", f"[red]{_escape(error_text(_error(error)))}[/red]")
    return table


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _error(error: Any) -> KnmError:
    """A failure's JSON form (``KnmError.to_json()``) back as a ``KnmError``."""
    if isinstance(error, KnmError):
        return error
    if not isinstance(error, Mapping):
        return KnmError(str(error))
    return KnmError(
        str(error.get("error", "")), error.get("code"), error.get("message"), error.get("cause")
    )


def search_table(results: Iterable[SearchResult], title: str | None = None) -> Table:
    return search_rows_table(search_json(results), title=title)


def search_rows_table(rows: Iterable[Mapping[str, Any]], title: str | None = None) -> Table:
    """A search's JSON rows (``search_json``, or a ``knm.search`` task's result) as a table."""
    table = Table(title=title, title_justify="left")
    table.add_column("number", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("carrier", no_wrap=True)
    for row in rows:
        table.add_row(
            _text(row.get("number")), _text(row.get("state")), _text(row.get("carrier_module"))
        )
    return table


def account_detail(account: Account, title: str | None = None) -> Table:
    """One account as field/value rows."""
    table = Table(title=title, title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in account_json(account).items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        if isinstance(shown, dict):
            shown = render_json_inline(shown)
        table.add_row(key, _escape("" if shown is None else str(shown)))
    return table


def account_table(accounts: Iterable[Account], title: str | None = None) -> Table:
    """Several accounts, one row each; a parent in the list is shown by its name."""
    accounts = list(accounts)
    names = {a.id: a.name for a in accounts}
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("parent", overflow="fold")
    table.add_column("flags")
    for account in accounts:
        flags = [
            name
            for name, on in (
                ("admin", account.superduper_admin),
                ("allow_additions", account.allow_additions),
                ("reseller", account.is_reseller),
                ("disabled", not account.enabled),
            )
            if on
        ]
        parent = names.get(account.parent, account.parent) if account.parent else ""
        table.add_row(account.id, _escape(account.name), _escape(parent or ""), ", ".join(flags))
    return table


def render_json_inline(value: Any) -> str:
    """Compact one-line JSON (for table cells)."""
    return json.dumps(jsonable(value), ensure_ascii=False, sort_keys=True)


def report_table(report: Mapping[str, Any], title: str | None = None) -> Table:
    """``generate_numbers``' ``{success, errors}`` report: one row per failure."""
    table = Table(title=title, title_justify="left")
    table.add_column("number", no_wrap=True)
    table.add_column("reason")
    table.add_column("message")
    for number, err in sorted((report.get("errors") or {}).items()):
        table.add_row(number, str(err.get("reason", "")), _escape(str(err.get("message", ""))))
    return table


# ------------------------------------------------------------------------------------ jobs
#: The fields of a job's JSON (``Job.to_json()``) that ``job_detail`` shows, in this order.
JOB_FIELDS: tuple[str, ...] = (
    "id",
    "action",
    "status",
    "account_id",
    "auth_account_id",
    "source",
    "rows",
    "done",
    "succeeded",
    "failed",
    "chunks",
    "chunks_done",
    "chunk_size",
    "created",
    "started",
    "finished",
)
_JOB_STATUS_STYLE = {"succeeded": "green", "partial": "yellow", "failed": "red"}


def _job_status(status: Any) -> str:
    text = _escape(_text(status))
    style = _JOB_STATUS_STYLE.get(str(status))
    return f"[{style}]{text}[/{style}]" if style else text


def job_detail(job: Mapping[str, Any], title: str | None = None) -> Table:
    """A job's JSON (``Job.to_json()``) as field/value rows."""
    table = Table(title=title, title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    keys = [k for k in JOB_FIELDS if k in job] + [k for k in job if k not in JOB_FIELDS]
    for key in keys:
        value = job[key]
        shown = _job_status(value) if key == "status" else _escape(_text(value))
        table.add_row(key, shown)
    return table


def jobs_table(jobs: Iterable[Mapping[str, Any]], title: str | None = None) -> Table:
    """Several jobs' JSON, one row each (the id whole: the other commands take it)."""
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False
    )
    table.add_column("id", no_wrap=True, min_width=32)
    table.add_column("action", overflow="fold", min_width=6)
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("rows", justify="right", no_wrap=True, min_width=4)
    table.add_column("ok", justify="right", no_wrap=True, min_width=2)
    table.add_column("failed", justify="right", no_wrap=True, min_width=6)
    table.add_column("created", overflow="fold", min_width=11)
    for job in jobs:
        table.add_row(
            _text(job.get("id")),
            _text(job.get("action")),
            _job_status(job.get("status")),
            _text(job.get("rows")),
            _text(job.get("succeeded")),
            _text(job.get("failed")),
            _text(job.get("created"))[5:16].replace("T", " "),
        )
    return table


def _escape(text: str) -> str:
    """Keep user text from being read as rich markup."""
    return escape(text)


def console(*, stderr: bool = False) -> Console:
    """A console bound to the current stdout/stderr (test runners swap them)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)
