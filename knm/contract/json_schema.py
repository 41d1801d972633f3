"""The message contract of knm's tasks, as JSON Schema files generated from the pydantic models.

Services that call knm through the broker without importing it read these files (shipped in the
package under ``knm/contract/schemas/v<CONTRACT_VERSION>/``): one schema (draft 2020-12) per
task's kwargs (``knm.numbers.<operation>``, ``knm.search``), the results, the outcome event, and
``index.json`` naming, per task, its schemas, its queue and the routing keys of its events.

The kwargs schemas are ``NumbersRequest``'s with the per-operation rules of
``knm.requests.check`` written in: ``account`` required (and a string) by activate and reserve,
``state`` only for create, ``public_fields`` required (and an object) by update. The files are
generated, never edited: ``knm contract write`` regenerates them, ``knm contract check`` (and
the tests) fail when the models changed and the files did not.

Versioning: additive changes (a new optional field, a new task, a new event field) keep v1;
a breaking change (a field removed, renamed or made required, a type narrowed) bumps
``CONTRACT_VERSION`` and adds ``schemas/v2/`` alongside v1.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from knm.contract.task_names import DEFAULT_QUEUE, SEARCH_TASK, task_name
from knm.domain.number import NumberState
from knm.services.events import EVENT_VERSION, EVENTS_EXCHANGE, NumberEvent
from knm.services.numbers_requests import NEEDS_ACCOUNT, NumbersRequest, Operation
from knm.services.search import SearchQuery

CONTRACT_VERSION: Final[int] = 1
DIALECT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
#: Where the package keeps the generated files of this version.
SCHEMAS_DIR: Final[Path] = Path(__file__).resolve().parent / "schemas" / f"v{CONTRACT_VERSION}"
INDEX: Final[str] = "index.json"
RESULT: Final[str] = "knm.numbers.result.json"
SEARCH_RESULT: Final[str] = "knm.search.result.json"
EVENT: Final[str] = "knm.events.number.json"
#: Operations that publish outcome events (a read, ``get``, publishes none).
EVENT_OPERATIONS: Final[tuple[Operation, ...]] = tuple(
    op for op in Operation if op != Operation.GET
)
OUTCOMES: Final[tuple[Literal["succeeded", "failed"], ...]] = ("succeeded", "failed")

_GENERATED = "Generated from knm's pydantic models by 'knm contract write'; do not edit."

_TASK_DESCRIPTIONS: Final[dict[Operation, str]] = {
    Operation.GET: "Fetch numbers the requester may see. Publishes no events.",
    Operation.CREATE: "Create numbers (in_service unless 'state'), assigned to 'account'.",
    Operation.ACTIVATE: "Move numbers in service for 'account', acquiring discovered ones.",
    Operation.RESERVE: "Reserve numbers for 'account'.",
    Operation.RELEASE: "Release numbers (unwind reservations, disconnect, delete or age).",
    Operation.DELETE: "Hard-delete numbers in any state (admins only).",
    Operation.UPDATE: "Set the numbers' public fields: merge (default) or replace them.",
}


# ------------------------------------------------------------------ results (no model elsewhere)
class PlainError(BaseModel):
    """A plain reason (``not_found``, ``not_reconcilable``): only its name."""

    model_config = ConfigDict(extra="forbid", title="PlainError")

    error: str


class ErrorObject(BaseModel):
    """KAZOO's error object: name, HTTP-like code, message and cause, all four always present."""

    model_config = ConfigDict(extra="forbid", title="ErrorObject")

    error: str
    code: int | None
    message: str | None
    cause: Any = Field(description="Usually a string (JSON-encoded for objects), or null.")


class StoredDocument(BaseModel):
    """The number's stored MongoDB document: public fields and private ``pvt_*`` fields.

    Datetimes are ISO 8601 strings; optional private fields (``pvt_assigned_to``,
    ``pvt_reserve_history``, ``pvt_carrier_data``, ...) are absent when empty.
    """

    model_config = ConfigDict(extra="allow", title="StoredDocument")

    id: str = Field(alias="_id", description="The number (E.164).")
    pvt_type: Literal["number"]
    pvt_state: NumberState | None
    pvt_carrier_module: str
    pvt_ported_in: bool
    pvt_created: datetime
    pvt_modified: datetime


class NumbersResult(BaseModel):
    """The result of every ``knm.numbers.*`` task (and of the CLI with ``--json``)."""

    model_config = ConfigDict(extra="forbid")

    succeeded: dict[str, StoredDocument] = Field(description="Stored documents by number (E.164).")
    failed: dict[str, PlainError | ErrorObject] = Field(
        description="Errors by input (the E.164 form when the input was reconcilable)."
    )


class SearchHit(BaseModel):
    """One number a search found."""

    model_config = ConfigDict(extra="forbid")

    number: str
    state: NumberState
    carrier_module: str


# ------------------------------------------------------------------------------------ schemas
def _header(name: str, title: str, description: str) -> dict[str, Any]:
    return {
        "$schema": DIALECT,
        "$id": f"urn:knm:schema:v{CONTRACT_VERSION}:{name.removesuffix('.json')}",
        "$comment": _GENERATED,
        "title": title,
        "description": description,
    }


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _prune_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop ``$defs`` nothing refers to any more (``state`` removed: no ``NumberState``)."""
    defs = schema.get("$defs", {})
    used = set(_refs({k: v for k, v in schema.items() if k != "$defs"}))
    kept = {name: d for name, d in defs.items() if f"#/$defs/{name}" in used}
    schema.pop("$defs", None)
    if kept:
        schema["$defs"] = kept
    return schema


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A nullable optional property made a required non-null one."""
    out = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        out.update(branches[0])
    elif branches:
        out["anyOf"] = branches
    return out


def task_file(op: Operation) -> str:
    return f"{task_name(op)}.json"


def task_schema(op: Operation) -> dict[str, Any]:
    """The kwargs of ``knm.numbers.<op>``: ``NumbersRequest`` with ``check()``'s rules."""
    generated = NumbersRequest.model_json_schema()
    props: dict[str, Any] = generated["properties"]
    required = ["numbers"]
    props["numbers"]["items"] = {
        "type": "string",
        "pattern": r"\S",
        "description": "A number in any reconcilable form (not blank).",
    }
    props["numbers"]["description"] = "1 to 10,000 numbers, in any reconcilable form."
    if op != Operation.CREATE:
        del props["state"]
    if op in NEEDS_ACCOUNT:
        props["account"] = _not_null(props["account"])
        required.append("account")
    if op == Operation.UPDATE:
        props["public_fields"] = _not_null(props["public_fields"])
        required.append("public_fields")
    schema = _header(
        task_file(op),
        f"{task_name(op)} kwargs",
        f"Keyword arguments of the {task_name(op)} task. {_TASK_DESCRIPTIONS[op]} "
        "Fields left out are not applied; unknown fields fail the task at once.",
    )
    schema.update(
        {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
        }
    )
    if "$defs" in generated:
        schema["$defs"] = generated["$defs"]
    return _prune_defs(schema)


def search_schema() -> dict[str, Any]:
    """The kwargs of ``knm.search``: ``SearchQuery``."""
    generated = SearchQuery.model_json_schema()
    schema = _header(
        f"{SEARCH_TASK}.json",
        f"{SEARCH_TASK} kwargs",
        f"Keyword arguments of the {SEARCH_TASK} task: numbers starting with 'prefix' from the "
        "account's carriers; a fresh search at offset 0, later pages from the shared cache.",
    )
    schema.update(
        {
            "type": "object",
            "properties": generated["properties"],
            "required": generated["required"],
            "additionalProperties": False,
        }
    )
    return schema


def result_schema() -> dict[str, Any]:
    """The result of every ``knm.numbers.*`` task."""
    generated = NumbersResult.model_json_schema()
    schema = _header(
        RESULT,
        "knm.numbers.* result",
        '{"succeeded": {E.164: stored document}, "failed": {input: error}}; an error is '
        '{"error"} for a plain reason, else {"error", "code", "message", "cause"}.',
    )
    schema.update(
        {
            "type": "object",
            "properties": generated["properties"],
            "required": generated["required"],
            "additionalProperties": False,
            "$defs": generated["$defs"],
        }
    )
    return schema


def search_result_schema() -> dict[str, Any]:
    """The result of ``knm.search``: a list of hits."""
    generated = TypeAdapter(list[SearchHit]).json_schema()
    schema = _header(
        SEARCH_RESULT,
        f"{SEARCH_TASK} result",
        'The numbers found, sorted: [{"number", "state", "carrier_module"}].',
    )
    schema.update({"type": "array", "items": generated["items"], "$defs": generated["$defs"]})
    return schema


def event_schema() -> dict[str, Any]:
    """``NumberEvent`` as published: every field present, ``error`` a KAZOO error or null."""
    generated = NumberEvent.model_json_schema(mode="serialization")
    props: dict[str, Any] = {
        name: {k: v for k, v in prop.items() if k != "default"}  # every field is sent
        for name, prop in generated["properties"].items()
    }
    props["operation"] = {
        **props["operation"],
        "enum": [op.value for op in EVENT_OPERATIONS],
    }
    errors = TypeAdapter(PlainError | ErrorObject).json_schema()
    props["error"] = {
        "anyOf": [*errors["anyOf"], {"type": "null"}],
        "description": "The number's error when it failed (as in the task result), else null.",
    }
    schema = _header(
        EVENT,
        "knm number event",
        f"What happened to one number in one request: published to the '{EVENTS_EXCHANGE}' "
        "topic exchange with routing key number.<operation>.<outcome>, and to the request's "
        "reply_to queue. At least once: deduplicate on (request_id, number).",
    )
    schema.update(
        {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
            "$defs": errors["$defs"],
        }
    )
    return schema


def routing_keys(op: Operation) -> list[str]:
    """The routing keys of ``op``'s events (none for ``get``)."""
    if op not in EVENT_OPERATIONS:
        return []
    return [
        NumberEvent(
            request_id="-",
            operation=op.value,
            number="-",
            outcome=outcome,
            old_state=None,
            new_state=None,
            carrier=None,
        ).routing_key
        for outcome in OUTCOMES
    ]


def index() -> dict[str, Any]:
    """Per task: its kwargs schema, queue, result schema and event routing keys."""
    tasks: dict[str, Any] = {
        task_name(op): {
            "description": _TASK_DESCRIPTIONS[op],
            "kwargs": task_file(op),
            "queue": DEFAULT_QUEUE,
            "result": RESULT,
            "events": routing_keys(op),
        }
        for op in Operation
    }
    tasks[SEARCH_TASK] = {
        "description": "Search numbers by prefix across the account's carriers.",
        "kwargs": f"{SEARCH_TASK}.json",
        "queue": DEFAULT_QUEUE,
        "result": SEARCH_RESULT,
        "events": [],
    }
    return {
        "$comment": _GENERATED,
        "contract_version": CONTRACT_VERSION,
        "description": "knm's task contract: send kwargs (JSON) with Celery's send_task to the "
        "queue; the result is the task's return value; events go to the exchange and, when "
        "the request names one, to its reply_to queue.",
        "tasks": tasks,
        "events": {
            "exchange": EVENTS_EXCHANGE,
            "exchange_type": "topic",
            "routing_key": "number.<operation>.<succeeded|failed>",
            "routing_keys": [key for op in EVENT_OPERATIONS for key in routing_keys(op)],
            "bind_all": "number.#",
            "schema": EVENT,
            "version": EVENT_VERSION,
            "delivery": "at least once; deduplicate on (request_id, number)",
        },
    }


def documents() -> dict[str, dict[str, Any]]:
    """Every file of the contract, by file name."""
    docs: dict[str, dict[str, Any]] = {task_file(op): task_schema(op) for op in Operation}
    docs[f"{SEARCH_TASK}.json"] = search_schema()
    docs[RESULT] = result_schema()
    docs[SEARCH_RESULT] = search_result_schema()
    docs[EVENT] = event_schema()
    docs[INDEX] = index()
    return {name: copy.deepcopy(doc) for name, doc in sorted(docs.items())}


def render(doc: dict[str, Any]) -> str:
    """Stable text: sorted keys, 2-space indent, UTF-8 kept, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path | str | None = None) -> list[Path]:
    """Write every file into ``directory`` (default: the package's); returns the paths."""
    target = Path(directory) if directory is not None else SCHEMAS_DIR
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, doc in documents().items():
        path = target / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written


def check(directory: Path | str | None = None) -> list[str]:
    """The file names in ``directory`` that are missing or differ from what the models generate.

    Contract-looking files the models no longer generate (``knm.*.json``) are listed too.
    """
    target = Path(directory) if directory is not None else SCHEMAS_DIR
    expected = {name: render(doc) for name, doc in documents().items()}
    stale: list[str] = []
    for name, text in expected.items():
        path = target / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if target.is_dir():
        stale.extend(p.name for p in target.glob("knm.*.json") if p.name not in expected)
    return sorted(stale)


__all__ = [
    "CONTRACT_VERSION",
    "SCHEMAS_DIR",
    "check",
    "documents",
    "event_schema",
    "index",
    "render",
    "result_schema",
    "search_result_schema",
    "search_schema",
    "task_schema",
    "write",
]
