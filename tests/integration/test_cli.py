"""The ``knm`` command line against a real MongoDB wire server (contract of the CLI issue)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner, Result

from knm.cli.numbers import numbers_request
from knm.cli.root import cli
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.store import embedded

pytestmark = pytest.mark.integration

ROOT = "a" * 32  # reseller, allowed additions
CHILD = "b" * 32  # customer under ROOT
N1, N2 = "+14155550101", "+14155550102"

Run = Callable[..., Result]


@pytest.fixture
def knm(mongo_url: str, mongo_db: Database[dict[str, Any]]) -> Run:
    """Run ``knm ARGS`` in-process against this test's database; checks the exit code."""
    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def run(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        if code is not None:
            assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    """stderr is exactly one line (never a traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def is_iso(value: Any) -> bool:
    assert isinstance(value, str)
    return datetime.fromisoformat(value).tzinfo is not None


def accounts(knm: Run) -> None:
    knm("accounts", "create", ROOT, "--name", "Root", "--allow-additions")
    knm("accounts", "create", CHILD, "--name", "Child", "--parent", ROOT)


# ------------------------------------------------------------------------------ accounts
def test_accounts_create_and_get_json(knm: Run) -> None:
    created = as_json(knm("accounts", "create", ROOT, "--name", "Root", "--admin", "--json"))
    assert created["id"] == ROOT
    assert created["superduper_admin"] is True
    knm("accounts", "create", CHILD, "--name", "Child", "--parent", ROOT, "--allow-additions")

    child = as_json(knm("accounts", "get", CHILD, "--json"))
    assert child == {
        "id": CHILD,
        "name": "Child",
        "parent": ROOT,
        "tree": [ROOT],
        "superduper_admin": False,
        "allow_additions": True,
        "is_reseller": False,
        "reseller_id": ROOT,
        "enabled": True,
        "number_manager": {},
        "created": child["created"],
    }
    assert is_iso(child["created"])

    table = knm("accounts", "get", CHILD).stdout
    assert CHILD in table
    assert "Child" in table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["accounts", "create", "short", "--name", "X"], "account id must be 32"),
        (["accounts", "create", CHILD, "--name", "X", "--parent", ROOT], f"parent account {ROOT}"),
        (["accounts", "create", CHILD], "--name"),
        (["accounts", "get", "nope"], "account id must be 32"),
    ],
)
def test_accounts_bad_input_is_one_line_usage_error(
    knm: Run, args: list[str], expected: str
) -> None:
    assert expected in one_line_error(knm(*args, code=2))


def test_accounts_get_unknown_and_duplicate(knm: Run) -> None:
    assert "does not exist" in one_line_error(knm("accounts", "get", ROOT, "--json", code=1))
    knm("accounts", "create", ROOT, "--name", "Root")
    assert "already exists" in one_line_error(
        knm("accounts", "create", ROOT, "--name", "Again", code=2)
    )


# ------------------------------------------------------------------------------ numbers
def test_numbers_lifecycle_json(knm: Run, mongo_db: Database[dict[str, Any]]) -> None:
    accounts(knm)

    # create: one object, stored documents under E.164, the bad input under itself
    args = ("numbers", "create", "4155550101", N2, "1000", "--account", ROOT)
    created = as_json(knm(*args, "--state", "available", "--json", code=1))
    assert set(created) == {"succeeded", "failed"}
    assert created["failed"] == {"1000": {"error": "not_reconcilable"}}
    assert sorted(created["succeeded"]) == [N1, N2]
    doc = created["succeeded"][N1]
    assert doc["_id"] == N1
    assert doc["pvt_type"] == "number"
    assert doc["pvt_state"] == "available"
    assert doc["pvt_carrier_module"] == "knm_local"
    assert doc["pvt_rev"] == 1
    assert "pvt_assigned_to" not in doc  # available numbers belong to nobody
    assert is_iso(doc["pvt_created"])
    assert is_iso(doc["pvt_modified"])
    stored = mongo_db.numbers.find_one({"_id": N1})
    assert stored is not None
    assert stored["pvt_rev"] == 1
    assert stored["pvt_created"].isoformat() == doc["pvt_created"]

    # reserve both for the child, on the reseller's authority
    reserved = as_json(
        knm("numbers", "reserve", N1, N2, "--account", CHILD, "--auth-by", ROOT, "--json")
    )
    assert reserved["failed"] == {}
    assert {d["pvt_state"] for d in reserved["succeeded"].values()} == {"reserved"}
    assert reserved["succeeded"][N1]["pvt_assigned_to"] == CHILD
    assert reserved["succeeded"][N1]["pvt_reserve_history"] == [CHILD]
    assert reserved["succeeded"][N1]["pvt_rev"] == 2

    # activate one for the child, on the child's authority
    active = as_json(
        knm("numbers", "activate", N1, "--account", CHILD, "--auth-by", CHILD, "--json")
    )
    assert active == {"succeeded": {N1: active["succeeded"][N1]}, "failed": {}}
    assert active["succeeded"][N1]["pvt_state"] == "in_service"
    assert active["succeeded"][N1]["pvt_rev"] == 3

    # release the other: a knm_local number is hard-deleted, shown as deleted
    released = as_json(knm("numbers", "release", N2, "--auth-by", CHILD, "--json"))
    assert released["failed"] == {}
    assert released["succeeded"][N2]["pvt_state"] == "deleted"
    assert mongo_db.numbers.find_one({"_id": N2}) is None

    got = as_json(knm("numbers", "get", N1, "--auth-by", CHILD, "--json"))
    assert got["succeeded"][N1]["pvt_state"] == "in_service"
    assert got["succeeded"][N1]["pvt_assigned_to"] == CHILD

    deleted = as_json(knm("numbers", "delete", N1, "--json"))
    assert deleted["succeeded"][N1]["pvt_state"] == "deleted"
    assert mongo_db.numbers.count_documents({}) == 0

    gone = as_json(knm("numbers", "get", N1, N2, "--json", code=1))
    assert gone == {
        "succeeded": {},
        "failed": {N1: {"error": "not_found"}, N2: {"error": "not_found"}},
    }


def test_forbidden_error_shape_and_table(knm: Run) -> None:
    accounts(knm)
    out = knm("numbers", "create", N1, "--account", CHILD, "--auth-by", CHILD, "--json", code=1)
    result = as_json(out)
    assert result["succeeded"] == {}
    error = result["failed"][N1]
    assert set(error) == {"error", "code", "message", "cause"}
    assert error["error"] == "forbidden"
    assert error["code"] == 403
    assert error["message"] == "requestor is unauthorized to perform operation"
    assert isinstance(error["cause"], str)

    table = knm("numbers", "create", N1, "--account", CHILD, "--auth-by", CHILD, code=1).stdout
    assert N1 in table
    assert "forbidden" in table
    assert "0 succeeded, 1 failed" in table


def test_create_table_output(knm: Run) -> None:
    accounts(knm)
    table = knm("numbers", "create", N1, "--account", ROOT).stdout
    assert N1 in table
    assert "in_service" in table
    assert "knm_local" in table
    assert "1 succeeded, 0 failed" in table


def test_dry_run_writes_nothing(knm: Run, mongo_db: Database[dict[str, Any]]) -> None:
    accounts(knm)
    out = as_json(knm("numbers", "create", N1, "--account", ROOT, "--dry-run", "--json"))
    assert out["failed"] == {}
    assert out["succeeded"][N1]["pvt_state"] == "in_service"
    assert "pvt_rev" not in out["succeeded"][N1]
    assert mongo_db.numbers.count_documents({}) == 0


def test_request_carries_only_the_options_given() -> None:
    """The CLI builds a ``NumbersRequest`` whose payload holds only what the user gave."""
    plain = numbers_request(Operation.CREATE, [N1], account=ROOT)
    assert plain.to_payload() == {"numbers": [N1], "account": ROOT}
    assert "ported_in" not in plain.model_fields_set

    ported = numbers_request(Operation.CREATE, [N1], account=ROOT, ported_in=True)
    assert ported.to_payload() == {"numbers": [N1], "account": ROOT, "ported_in": True}

    full = numbers_request(
        Operation.ACTIVATE, [N1, N2], account=CHILD, auth_by=ROOT, carrier="knm_local", mdn=True
    )
    assert full.to_payload() == {
        "numbers": [N1, N2],
        "account": CHILD,
        "auth_by": ROOT,
        "carrier_module": "knm_local",
        "mdn": True,
    }
    # in process the payload limits of a task message do not apply (an empty input fails alone)
    unchecked = numbers_request(Operation.GET, [""], validate=False)
    assert isinstance(unchecked, NumbersRequest)
    assert unchecked.numbers == [""]


def test_empty_input_fails_alone_in_process(knm: Run) -> None:
    got = as_json(knm("numbers", "get", "", N1, "--json", code=1))
    assert got == {
        "succeeded": {},
        "failed": {"": {"error": "not_reconcilable"}, N1: {"error": "not_found"}},
    }
    # through the broker the payload must be valid: refused before anything is published
    line = one_line_error(knm("numbers", "get", "", "--via-broker", code=2))
    assert "numbers must not be empty strings" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["numbers", "create", N1, "--state", "bogus"], "'bogus' is not one of"),
        (["numbers", "reserve", N1, "--state", "reserved", "--account", ROOT], "--state"),
        (["numbers", "activate", N1], "--account"),
        (["numbers", "reserve", N1], "--account"),
        (["numbers", "get"], "NUMBER"),
        (["search", "415", "--quantity", "0"], "--quantity"),
        (["generate-numbers", "bogus", ROOT, "1", "1"], "'bogus' is not one of"),
        (["generate-numbers", "managed", "short", "1", "1"], "account id must be 32"),
    ],
)
def test_usage_errors_exit_2(knm: Run, args: list[str], expected: str) -> None:
    assert expected in one_line_error(knm(*args, code=2))


def test_unreachable_store_is_one_line(tmp_path: Path) -> None:
    url = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"
    result = CliRunner().invoke(
        cli, ["numbers", "get", N1], env={"KNM_MONGODB_URL": url, "KNM_MONGODB_DB": "x"}
    )
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith("knm: error: cannot reach MongoDB at mongodb://127.0.0.1:9/")


# ------------------------------------------------------------------------------ search
def test_generate_numbers_then_search(knm: Run) -> None:
    accounts(knm)
    report = as_json(knm("generate-numbers", "managed", ROOT, "12223334000", "3", "--json"))
    assert report == {
        "success": {"+12223334000": {}, "+12223334001": {}, "+12223334002": {}},
        "errors": {},
    }
    again = as_json(knm("generate-numbers", "managed", ROOT, "12223334002", "1", "--json", code=1))
    assert again["errors"]["+12223334002"]["reason"] == "exists"

    args = ("search", "222333", "--account", ROOT, "--carrier", "knm_managed")
    found = as_json(knm(*args, "--quantity", "2", "--json"))
    assert found == [
        {"number": "+12223334000", "state": "discovery", "carrier_module": "knm_managed"},
        {"number": "+12223334001", "state": "discovery", "carrier_module": "knm_managed"},
    ]
    page = as_json(knm(*args, "--quantity", "2", "--offset", "2", "--json"))
    assert [r["number"] for r in page] == ["+12223334002"]
    assert "+12223334000" in knm(*args, "--quantity", "1").stdout

    summary = knm("generate-numbers", "inum", ROOT, "12223335000", "1").stdout
    assert "generated 1 inum numbers" in summary


def test_search_local_numbers_json(knm: Run) -> None:
    accounts(knm)
    knm("numbers", "create", N1, "--account", ROOT, "--state", "available")
    found = as_json(knm("search", "415555", "--account", CHILD, "--quantity", "5", "--json"))
    assert found == [{"number": N1, "state": "available", "carrier_module": "knm_local"}]
    assert "does not exist" in one_line_error(knm("search", "415", "--account", "c" * 32, code=2))


# ------------------------------------------------------------------------------ demo
def test_demo_is_rerunnable(knm: Run) -> None:
    """``knm demo`` runs a worker subprocess (embedded broker under KNM_DATA_DIR, this store)."""
    first = knm("demo").stdout
    assert "forbidden" in first
    second = knm("demo").stdout
    assert "removed 5 demo numbers" in second
    assert "in_service" in second
    assert "store: KNM_MONGODB_URL" in second  # a configured store is not the demo's to stop
    assert "embedded store stopped" not in second


# ------------------------------------------------------------------------------ scripts
def _script_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env["KNM_DATA_DIR"] = str(data_dir)
    return env


def test_console_script_embedded(tmp_path: Path) -> None:
    """The installed ``knm`` script on the embedded server (no KNM_MONGODB_URL)."""
    data_dir = tmp_path / "embedded"
    script = Path(sys.executable).with_name("knm")
    env = _script_env(data_dir)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=120
        )

    try:
        created = run("accounts", "create", ROOT, "--name", "Root")
        assert created.returncode == 0, created.stderr
        got = run("accounts", "get", ROOT, "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["name"] == "Root"
        assert (data_dir / embedded.DB_FILE).exists()
    finally:
        embedded.stop_server(data_dir)


def test_python_m_knm_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "knm", "numbers", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "activate" in done.stdout


def test_worker_and_beat_commands_are_listed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "knm", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in ("worker", "beat", "stop", "demo", "numbers", "search"):
        assert command in done.stdout
    for args in (["numbers", "create", "--help"], ["search", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "knm", *args], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        assert "--via-broker" in shown.stdout
        assert "--timeout" in shown.stdout


# ------------------------------------------------------------------------------ frictions
def test_an_account_that_does_not_exist_is_refused_unless_forced(knm: Run) -> None:
    accounts(knm)
    ghost = "c" * 32
    for args in (
        ["numbers", "create", N1, "--account", ghost],
        ["numbers", "create", N1, "--account", ghost, "--via-broker"],  # checked before publishing
        ["generate-numbers", "managed", ghost, "12223336000", "2"],
    ):
        line = one_line_error(knm(*args, code=2))
        assert f"{ghost}: no such account" in line, args
        assert "--force" in line
    assert as_json(knm("numbers", "get", N1, "--json", code=1))["failed"] == {
        N1: {"error": "not_found"}
    }
    forced = as_json(knm("numbers", "create", N1, "--account", ghost, "--force", "--json"))
    assert forced["succeeded"][N1]["pvt_assigned_to"] == ghost
    generated = as_json(
        knm("generate-numbers", "managed", ghost, "12223336000", "2", "--force", "--json")
    )
    assert len(generated["success"]) == 2
    # an existing account needs no --force; --force belongs to create only
    knm("numbers", "create", N2, "--account", ROOT)
    line = one_line_error(knm("numbers", "reserve", N2, "--account", CHILD, "--force", code=2))
    assert "only valid for 'numbers create'" in line


def test_features_system_show_prints_json_values(knm: Run) -> None:
    lines = dict(
        line.split(": ", 1) for line in knm("features", "system", "show").stdout.splitlines()
    )
    assert json.loads(lines["features"]) == {"allow": None, "deny": None}
    assert json.loads(lines["cnam_provider"]) == "knm_cnam_notifier"
    assert json.loads(lines["local_feature_override"]) is False
    assert lines["e911_provider"] == "(default)"
    assert "None" not in "".join(lines.values())
    assert "'" not in "".join(lines.values())


def test_print_env_only_works_while_the_sandbox_runs(knm: Run) -> None:
    from carriers.sandbox import Sandbox

    with Sandbox() as running:
        port = running.url.rsplit(":", 1)[1]
        printed = knm("sandbox", "serve", "--port", port, "--print-env-only").stdout
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
        assert exports == {k: shlex.quote(v) for k, v in running.env().items()}
    line = one_line_error(knm("sandbox", "serve", "--port", "0", "--print-env-only", code=2))
    assert "needs the sandbox's --port" in line
