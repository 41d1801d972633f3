"""The message contract: the committed JSON Schema files are what the models generate, and they
accept exactly what the workers accept (checked against ``requests.parse`` case by case)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

from knm.cli.contract import register
from knm.contract import json_schema as contract
from knm.domain import errors
from knm.domain.batch import Batch
from knm.domain.number import NumberState, PhoneNumber
from knm.services import numbers_requests as requests
from knm.services.events import EVENTS_EXCHANGE, NumberEvent, events_for
from knm.services.numbers_requests import InvalidRequestError, Operation
from knm.services.search import SearchQuery
from tests.fixtures_kazoo import MODULES
from workers.producer import task_name

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "0000000000000000000000000000e4a1"
NUM = "+14155550100"
TASKS = [task_name(op) for op in Operation]


def schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((contract.SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return doc


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name))


def task_validator(task: str) -> jsonschema.Draft202012Validator:
    return validator(schema("index.json")["tasks"][task]["kwargs"])


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "provision_example", ROOT / "examples" / "provision.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- the files
def test_committed_schemas_are_what_the_models_generate() -> None:
    expected = ROOT / "knm" / "contract" / "schemas" / f"v{contract.CONTRACT_VERSION}"
    assert expected == contract.SCHEMAS_DIR
    assert contract.check() == []


def test_check_lists_missing_changed_and_leftover_files(tmp_path: Path) -> None:
    written = contract.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(contract.documents())
    assert contract.check(tmp_path) == []
    (tmp_path / "knm.numbers.get.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "knm.search.json").unlink()
    (tmp_path / "knm.numbers.renamed.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "notes.json").write_text("{}\n", encoding="utf-8")  # not contract-looking
    assert contract.check(tmp_path) == [
        "knm.numbers.get.json",
        "knm.numbers.renamed.json",
        "knm.search.json",
    ]


def test_files_are_stably_formatted() -> None:
    for path in contract.SCHEMAS_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert (
            text
            == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )


def test_every_schema_is_a_valid_2020_12_schema_with_id_title_description() -> None:
    names = sorted(contract.documents())
    assert [p.name for p in sorted(contract.SCHEMAS_DIR.iterdir())] == names
    ids = set()
    for name in names:
        if name == "index.json":
            continue
        doc = schema(name)
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].startswith(f"urn:knm:schema:v{contract.CONTRACT_VERSION}:")
        assert doc["title"]
        assert doc["description"]
        ids.add(doc["$id"])
    assert len(ids) == len(names) - 1


# ---------------------------------------------------------------------------- the index
def test_index_names_every_task_the_worker_registers() -> None:
    import tasks.numbers  # registers the tasks
    from workers.app import app

    registered = {name for name in app.tasks if name.startswith("knm.numbers.")}
    index = schema("index.json")
    assert registered == set(TASKS)
    assert {t for t in index["tasks"] if t.startswith("knm.numbers.")} == registered
    assert {name for name in index["tasks"]} == registered | {"knm.search"}
    for name in tasks.numbers.__all__:
        task = getattr(tasks.numbers, name)
        assert task.name in index["tasks"]
    assert index["contract_version"] == contract.CONTRACT_VERSION


def test_the_producer_and_the_workers_use_the_contracts_names() -> None:
    from knm.contract import task_names
    from workers import celery_config, producer

    assert producer.SEARCH_TASK == task_names.SEARCH_TASK
    assert celery_config.DEFAULT_QUEUE == task_names.DEFAULT_QUEUE
    assert [producer.task_name(op) for op in Operation] == [
        task_names.task_name(op) for op in Operation
    ]


def test_index_entries_point_at_files_queue_and_routing_keys() -> None:
    index = schema("index.json")
    for task, entry in index["tasks"].items():
        assert (contract.SCHEMAS_DIR / entry["kwargs"]).is_file()
        assert (contract.SCHEMAS_DIR / entry["result"]).is_file()
        assert entry["queue"] == "knm"
        assert schema(entry["kwargs"])["title"] == f"{task} kwargs"
    for op in Operation:
        keys = index["tasks"][task_name(op)]["events"]
        if op == Operation.GET:
            assert keys == []
        else:
            assert keys == [f"number.{op.value}.succeeded", f"number.{op.value}.failed"]
    events = index["events"]
    assert events["exchange"] == EVENTS_EXCHANGE
    assert events["exchange_type"] == "topic"
    assert (contract.SCHEMAS_DIR / events["schema"]).is_file()
    assert sorted(events["routing_keys"]) == sorted(
        key for entry in index["tasks"].values() for key in entry["events"]
    )


# ---------------------------------------------------------------------------- task kwargs
VALID: list[tuple[Operation, dict[str, Any]]] = [
    (Operation.GET, {"numbers": [NUM, "4155550101"]}),
    (Operation.GET, {"numbers": [NUM], "auth_by": ACCOUNT, "request_id": None}),
    (
        Operation.CREATE,
        {
            "numbers": [NUM],
            "account": ACCOUNT,
            "state": "reserved",
            "carrier_module": "knm_local",
            "ported_in": True,
            "public_fields": {"cnam": {"display_name": "ACME"}},
            "dry_run": True,
            "mdn": False,
        },
    ),
    (Operation.CREATE, {"numbers": [NUM], "account": None, "state": None}),
    (
        Operation.ACTIVATE,
        {
            "numbers": [NUM],
            "account": ACCOUNT,
            "request_id": "3f2a6c1e-8d7b-4d0e-9a51-2b7c0e6f4d11",
            "reply_to": "billing.knm-replies",
        },
    ),
    (Operation.RESERVE, {"numbers": [NUM], "account": ACCOUNT, "auth_by": "system"}),
    (Operation.RELEASE, {"numbers": [NUM], "dry_run": True}),
    (Operation.DELETE, {"numbers": [NUM], "request_id": "job:42.1", "reply_to": None}),
    (Operation.UPDATE, {"numbers": [NUM], "public_fields": {}, "merge": False}),
]


@pytest.mark.parametrize(("op", "payload"), VALID)
def test_schema_and_worker_accept_valid_payloads(op: Operation, payload: dict[str, Any]) -> None:
    assert list(task_validator(task_name(op)).iter_errors(payload)) == []
    requests.parse(op, payload)


INVALID: list[tuple[Operation, dict[str, Any], str]] = [
    (Operation.GET, {}, "numbers missing"),
    (Operation.GET, {"numbers": []}, "no numbers"),
    (Operation.GET, {"numbers": NUM}, "numbers not a list"),
    (Operation.GET, {"numbers": [" "]}, "blank number"),
    (Operation.GET, {"numbers": [1]}, "number not a string"),
    (Operation.GET, {"numbers": [NUM], "colour": "red"}, "unknown field"),
    (Operation.GET, {"numbers": [NUM], "state": "reserved"}, "state outside create"),
    (Operation.GET, {"numbers": [NUM], "dry_run": None}, "null boolean"),
    (Operation.CREATE, {"numbers": [NUM], "state": "bogus"}, "unknown state"),
    (Operation.ACTIVATE, {"numbers": [NUM]}, "account missing"),
    (Operation.ACTIVATE, {"numbers": [NUM], "account": None}, "account null"),
    (Operation.ACTIVATE, {"numbers": [NUM], "account": ACCOUNT, "state": "reserved"}, "state"),
    (Operation.ACTIVATE, {"numbers": [NUM], "account": ACCOUNT, "request_id": "a b"}, "id"),
    (Operation.ACTIVATE, {"numbers": [NUM], "account": ACCOUNT, "request_id": ""}, "empty id"),
    (Operation.ACTIVATE, {"numbers": [NUM], "account": ACCOUNT, "reply_to": "q/1"}, "queue"),
    (Operation.RESERVE, {"numbers": [NUM]}, "account missing"),
    (Operation.RELEASE, {"numbers": [NUM], "state": "available"}, "state outside create"),
    (Operation.DELETE, {"numbers": [NUM] * 10_001}, "too many numbers"),
    (Operation.UPDATE, {"numbers": [NUM]}, "public_fields missing"),
    (Operation.UPDATE, {"numbers": [NUM], "public_fields": None}, "public_fields null"),
    (Operation.UPDATE, {"numbers": [NUM], "public_fields": ["x"]}, "public_fields not object"),
]


@pytest.mark.parametrize(("op", "payload", "why"), INVALID, ids=[c[2] for c in INVALID])
def test_schema_and_worker_reject_invalid_payloads(
    op: Operation, payload: dict[str, Any], why: str
) -> None:
    assert list(task_validator(task_name(op)).iter_errors(payload)), why
    with pytest.raises(InvalidRequestError):
        requests.parse(op, payload)


@pytest.mark.parametrize(
    "payload",
    [
        {"numbers": [NUM], "dry_run": "yes"},
        {"numbers": [NUM], "ported_in": 1},
        {"numbers": [NUM], "auth_by": "system", "mdn": "false"},
    ],
)
def test_schema_asks_for_json_types_the_worker_would_coerce(payload: dict[str, Any]) -> None:
    """Pydantic's lax mode turns "yes" or 1 into true; the contract asks for real booleans."""
    assert list(task_validator("knm.numbers.get").iter_errors(payload))
    requests.parse(Operation.GET, payload)


def test_state_is_only_in_the_create_schema() -> None:
    for op in Operation:
        doc = schema(f"{task_name(op)}.json")
        assert ("state" in doc["properties"]) == (op == Operation.CREATE)
        assert doc["additionalProperties"] is False
        assert doc["properties"]["numbers"]["maxItems"] == requests.MAX_NUMBERS_PER_REQUEST
    assert set(schema("knm.numbers.create.json")["$defs"]["NumberState"]["enum"]) == {
        s.value for s in NumberState
    }


def test_search_schema() -> None:
    check = task_validator("knm.search")
    valid = {"prefix": "415", "quantity": 3, "offset": 0, "country": "US", "account_id": None}
    assert list(check.iter_errors(valid)) == []
    SearchQuery.model_validate(valid)
    for invalid in ({}, {"prefix": ""}, {"prefix": "415", "quantity": 0}, {"prefix": 415}):
        assert list(check.iter_errors(invalid)), invalid
        with pytest.raises(ValueError, match="validation error"):
            SearchQuery.model_validate(invalid)
    assert list(check.iter_errors({"prefix": "415", "colour": "red"}))


# ---------------------------------------------------------------------------- results and events
def _batch() -> Batch:
    batch = Batch()
    pn = PhoneNumber.new(NUM, modules=MODULES)
    pn.state = NumberState.IN_SERVICE
    pn.assigned_to = ACCOUNT
    pn.public = {"cnam": {"display_name": "ACME"}}
    pn.request_id = "r1"
    batch.succeed(pn)
    batch.fail("1000", errors.not_reconcilable())
    batch.fail("+14155550101", errors.number_exists("+14155550101"))
    batch.fail("+14155550102", errors.by_carrier("+14155550102", "503 from provider", "knm_x"))
    batch.fail("+14155550103", errors.invalid_state_transition())
    return batch


def test_result_schema_accepts_real_results() -> None:
    result = requests.result_json(_batch())
    check = validator("knm.numbers.result.json")
    assert list(check.iter_errors(result)) == []
    assert list(check.iter_errors({"succeeded": {}, "failed": {}})) == []


@pytest.mark.parametrize(
    "result",
    [
        {"succeeded": {}},
        {"succeeded": {}, "failed": {"x": {"error": "invalid", "code": 400}}},
        {"succeeded": {}, "failed": {"x": {"code": 400, "message": "m", "cause": None}}},
        {"succeeded": {NUM: {"_id": NUM}}, "failed": {}},
        {"succeeded": {}, "failed": {}, "extra": 1},
    ],
)
def test_result_schema_rejects_other_shapes(result: dict[str, Any]) -> None:
    assert list(validator("knm.numbers.result.json").iter_errors(result))


def test_search_result_schema() -> None:
    check = validator("knm.search.result.json")
    hit = {"number": NUM, "state": "discovery", "carrier_module": "knm_local"}
    assert list(check.iter_errors([hit])) == []
    assert list(check.iter_errors([{**hit, "state": "bogus"}]))


def test_event_schema_accepts_published_events() -> None:
    result = requests.result_json(_batch())
    events = events_for("r1", "activate", result, {NUM: {"pvt_state": "reserved"}})
    assert {e.outcome for e in events} == {"succeeded", "failed"}
    check = validator("knm.events.number.json")
    for event in events:
        body = event.model_dump(mode="json")  # as tasks/events.py publishes it
        assert list(check.iter_errors(body)) == [], body
    body = events[0].model_dump(mode="json")
    for broken in (
        {k: v for k, v in body.items() if k != "at"},
        {**body, "operation": "get"},
        {**body, "outcome": "maybe"},
        {**body, "error": {"error": "x", "code": 1}},
        {**body, "extra": True},
    ):
        assert list(check.iter_errors(broken)), broken


def test_routing_keys_are_the_events() -> None:
    event = NumberEvent(
        request_id="r",
        operation="release",
        number=NUM,
        outcome="failed",
        old_state=None,
        new_state=None,
        carrier=None,
    )
    assert event.routing_key in schema("index.json")["events"]["routing_keys"]


# ---------------------------------------------------------------------------- the example
def test_example_payloads_validate_against_the_committed_schemas() -> None:
    example = load_example()
    assert example.SCHEMAS == contract.SCHEMAS_DIR
    assert example.load("index.json") == contract.index()
    create = example.create_payload([NUM], ACCOUNT)
    activate = example.activate_payload([NUM], ACCOUNT, "provision-1", "provision.replies.1")
    for op, payload in ((Operation.CREATE, create), (Operation.ACTIVATE, activate)):
        name = task_name(op)
        kwargs_schema = schema(f"{name}.json")
        assert list(task_validator(name).iter_errors(payload)) == []
        assert example.problems(payload, kwargs_schema) == []
        assert example.tiny_check(payload, kwargs_schema) == []
        requests.parse(op, payload)


def test_example_tiny_checker_rejects_what_the_schema_rejects() -> None:
    example = load_example()
    activate = schema("knm.numbers.activate.json")
    assert example.tiny_check({"numbers": [NUM]}, activate) == ["account: required"]
    assert example.tiny_check({"numbers": [NUM], "account": ACCOUNT, "colour": 1}, activate) == [
        "colour: unknown field"
    ]
    assert example.tiny_check({"numbers": NUM, "account": ACCOUNT}, activate) == [
        "numbers: expected array"
    ]
    assert example.tiny_check({"numbers": [NUM], "account": ACCOUNT, "dry_run": 1}, activate) == [
        "dry_run: expected boolean"
    ]
    assert example.tiny_check({"numbers": [NUM], "account": None}, activate) == [
        "account: expected string"
    ]
    event = events_for("r1", "activate", requests.result_json(_batch()), {})[0]
    body = event.model_dump(mode="json")
    assert example.tiny_check(body, schema("knm.events.number.json")) == []


# ---------------------------------------------------------------------------- the CLI
def test_cli_write_and_check(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """knm"""

    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["contract", "write", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {len(contract.documents())} files" in result.output
    assert runner.invoke(app, ["contract", "check", str(tmp_path)]).exit_code == 0
    (tmp_path / "knm.numbers.update.json").write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["contract", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "knm.numbers.update.json" in result.stdout
    assert "stale" in result.stderr
    assert runner.invoke(app, ["contract", "check"]).exit_code == 0  # the package's files
