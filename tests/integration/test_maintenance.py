"""KAZOO's number maintenance on the command line: carriers, purge, features, repairs.

Runs ``knm`` in process (``knm.cli.root.cli`` with ``knm.cli.maintenance.register``) against this
test's database and checks the exit-code and one-line-error conventions of ``knm.cli``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner, Result

from knm.domain.number import utcnow
from knm.services.maintenance import ALL_FEATURES
from tests.fixtures_kazoo import number_doc

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
Run = Callable[..., Result]
ACCOUNT = "d7" * 16


@pytest.fixture
def knm(mongo_url: str, mongo_db: Database[Doc], monkeypatch: pytest.MonkeyPatch) -> Run:
    from knm.cli.maintenance import register
    from knm.cli.root import cli

    register(cli)
    register(cli)  # harmless twice
    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def run(*args: str, code: int = 0, extra: dict[str, str] | None = None) -> Result:
        result = runner.invoke(cli, list(args), env={**env, **(extra or {})})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def _seed(db: Database[Doc], docs: list[Doc]) -> None:
    db["numbers"].insert_many(docs)


def _doc(db: Database[Doc], number: str) -> Doc | None:
    return db["numbers"].find_one({"_id": number})


# ================================================================================ carriers
def test_carriers_usage(knm: Run, mongo_db: Database[Doc]) -> None:
    legacy = number_doc("+14155550003", "in_service", assigned_to=ACCOUNT)
    del legacy["pvt_carrier_module"]  # no module: counted as the default (knm_local)
    _seed(
        mongo_db,
        [
            number_doc("+14155550001", "in_service", "knm_local", assigned_to=ACCOUNT),
            number_doc("+14155550002", "available", "knm_local"),
            legacy,
            number_doc("+14155550004", "in_service", "knm_telnyx", assigned_to=ACCOUNT),
            number_doc("+12125550001", "in_service", "knm_telnyx", assigned_to=ACCOUNT),
            number_doc("+12125550002", "aging", "knm_bandwidth2"),
        ],
    )
    assert as_json(knm("carriers", "usage", "--json")) == {
        "prefix": None,
        "modules": {"knm_bandwidth2": 1, "knm_local": 3, "knm_telnyx": 2},
        "total": 6,
    }
    for prefix in ("+1415", "1415"):
        assert as_json(knm("carriers", "usage", prefix, "--json"))["modules"] == {
            "knm_local": 3,
            "knm_telnyx": 1,
        }
    table = knm("carriers", "usage").stdout
    assert "knm_bandwidth2" in table
    assert "total" in table


def test_carriers_convert_by_prefix_number_and_all(knm: Run, mongo_db: Database[Doc]) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(10, 16)]
    _seed(
        mongo_db,
        [number_doc(n, "in_service", "knm_local", assigned_to=ACCOUNT) for n in numbers]
        + [number_doc("+12125550010", "in_service", "knm_local", assigned_to=ACCOUNT)],
    )
    out = as_json(
        knm("carriers", "convert", "knm_local", "knm_telnyx", "--prefix", "+1415", "--json")
    )
    assert out == {"succeeded": numbers, "failed": {}}
    for number in numbers:
        doc = _doc(mongo_db, number)
        assert doc is not None
        assert doc["pvt_carrier_module"] == "knm_telnyx"
        assert "local" not in doc.get("pvt_features", {}), "the local marker goes with the module"
        assert doc["pvt_rev"] == 2
    assert _doc(mongo_db, "+12125550010")["pvt_carrier_module"] == "knm_local"  # type: ignore[index]

    one = as_json(
        knm("carriers", "convert", "knm_telnyx", "knm_local", "--number", "4155550010", "--json")
    )
    assert one == {"succeeded": ["+14155550010"], "failed": {}}
    assert _doc(mongo_db, "+14155550010")["pvt_features"] == {"local": {}}  # type: ignore[index]

    text = knm("carriers", "convert", "knm_local", "knm_bandwidth2").stdout
    assert "2 succeeded, 0 failed" in text
    usage = as_json(knm("carriers", "usage", "--json"))["modules"]
    assert usage == {"knm_bandwidth2": 2, "knm_telnyx": 5}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["knm_local", "knm_nope"], "carrier_not_found: carrier module knm_nope is not known"),
        # a module KAZOO knows but no registered carrier owns: no worker would consume its queue
        (["knm_local", "knm_simwood"], "carrier_not_found: carrier module knm_simwood is not"),
        (["knm_local", "knm_telnyx", "--prefix", "1", "--number", "+14155550000"], "not both"),
        (["knm_local", "knm_telnyx", "--number", "12"], "not a reconcilable number"),
    ],
)
def test_carriers_convert_bad_input(knm: Run, args: list[str], expected: str) -> None:
    assert expected in one_line_error(knm("carriers", "convert", *args, code=2))


# ================================================================================ purge
def test_purge_discovery_and_deleted_by_prefix(knm: Run, mongo_db: Database[Doc]) -> None:
    now = utcnow()
    discovery = [f"+1415555{n:04d}" for n in range(20, 30)]
    _seed(
        mongo_db,
        [number_doc(n, "discovery", "knm_telnyx", pvt_modified=now) for n in discovery]
        + [
            number_doc("+12125550020", "discovery", "knm_telnyx"),
            number_doc("+14155550030", "deleted", "knm_telnyx"),
            number_doc("+12125550030", "deleted", "knm_telnyx"),
            number_doc("+14155550040", "in_service", "knm_telnyx", assigned_to=ACCOUNT),
        ],
    )
    mongo_db["search_cache"].insert_many(
        [
            {
                "_id": "q1",
                "discovery_numbers": discovery[:3],
                "expires_at": now + timedelta(days=1),
            },
            {
                "_id": "q2",
                "discovery_numbers": ["+12125550020"],
                "expires_at": now + timedelta(days=1),
            },
        ]
    )
    # chunks of 3 ids per $in (the embedded store's limit, scaled down)
    small = {"KNM_MONGODB_MAX_IN": "3"}
    out = as_json(knm("purge", "discovery", "--prefix", "+1415", "--json", extra=small))
    assert out == {"state": "discovery", "prefix": "+1415", "purged": 10}
    assert [d["_id"] for d in mongo_db["search_cache"].find({})] == ["q2"]
    assert "purged 2 deleted documents" in knm("purge", "deleted").stdout
    assert sorted(d["_id"] for d in mongo_db["numbers"].find({})) == [
        "+12125550020",
        "+14155550040",
    ]
    assert "purged 1 discovery" in knm("purge", "discovery").stdout
    assert list(mongo_db["search_cache"].find({})) == []
    assert "invalid value" in one_line_error(knm("purge", "in_service", code=2)).lower()


# ================================================================================ features
def test_feature_permissions_on_a_number(knm: Run, mongo_db: Database[Doc]) -> None:
    number = "+14155550050"
    _seed(mongo_db, [number_doc(number, "in_service", "knm_telnyx", assigned_to=ACCOUNT)])
    assert as_json(knm("features", "show", "4155550050", "--json")) == {
        "number": number,
        "allowed": [],
        "denied": [],
    }
    knm("features", "allow", "add", "cnam", number)
    knm("features", "allow", "add", "e911", number)
    knm("features", "allow", "add", "cnam", number)  # already there: unchanged
    knm("features", "deny", "add", "sms", number)
    shown = as_json(knm("features", "deny", "add", "mms", number, "--json"))
    assert shown == {"number": number, "allowed": ["cnam", "e911"], "denied": ["mms", "sms"]}
    shown = as_json(knm("features", "allow", "remove", "cnam", number, "--json"))
    assert shown["allowed"] == ["e911"]
    shown = as_json(knm("features", "deny", "remove", "sms", number, "--json"))
    assert shown["denied"] == ["mms"]
    doc = _doc(mongo_db, number)
    assert doc is not None
    assert (doc["pvt_features_allowed"], doc["pvt_features_denied"]) == (["e911"], ["mms"])
    table = knm("features", "show", number).stdout
    assert "e911" in table
    assert "mms" in table
    assert as_json(knm("features", "list", "--json")) == list(ALL_FEATURES)

    error = one_line_error(knm("features", "allow", "add", "teleport", number, code=2))
    assert "unknown feature 'teleport'" in error
    assert "carrier_name" in error, "the known features are listed"
    assert "not_found" in one_line_error(knm("features", "show", "+14155550059", code=1))
    missing = knm("features", "deny", "add", "sms", "+14155550059", code=1)
    assert "+14155550059: not_found" in one_line_error(missing)


# ================================================================================ repairs
def test_maintenance_delete(knm: Run, mongo_db: Database[Doc]) -> None:
    _seed(mongo_db, [number_doc("+14155550060", "in_service", "knm_telnyx", assigned_to=ACCOUNT)])
    assert knm("maintenance", "delete", "4155550060").stdout.strip() == "Removed +14155550060"
    assert _doc(mongo_db, "+14155550060") is None
    error = one_line_error(knm("maintenance", "delete", "+14155550060", code=1))
    assert "+14155550060: not_found" in error


def test_fix_used_by_from_csv_and_json(knm: Run, mongo_db: Database[Doc], tmp_path: Path) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(70, 74)]
    docs = [number_doc(n, "in_service", "knm_telnyx", assigned_to=ACCOUNT) for n in numbers]
    docs[3]["pvt_used_by"] = "trunkstore"
    _seed(mongo_db, docs)
    csv_file = tmp_path / "apps.csv"
    csv_file.write_text(
        "number,app\n"
        f"{numbers[0]},callflow\n"
        "4155550071,trunkstore\n"
        "\n"
        f"{numbers[3]},\n"  # empty app: clear
        "+14155550079,callflow\n"  # no such number
    )
    out = knm("maintenance", "fix-used-by", str(csv_file), "--json", code=1)
    result = as_json(out)
    assert sorted(result["succeeded"]) == [numbers[0], numbers[1], numbers[3]]
    assert result["failed"] == {"+14155550079": {"error": "not_found"}}
    used = {d["_id"]: d.get("pvt_used_by") for d in mongo_db["numbers"].find({})}
    assert used == {
        numbers[0]: "callflow",
        numbers[1]: "trunkstore",
        numbers[2]: None,
        numbers[3]: None,
    }

    json_file = tmp_path / "apps.json"
    json_file.write_text(json.dumps({numbers[2]: "callflow", numbers[0]: None}))
    text = knm("maintenance", "fix-used-by", str(json_file)).stdout
    assert "2 succeeded, 0 failed" in text
    used = {d["_id"]: d.get("pvt_used_by") for d in mongo_db["numbers"].find({})}
    assert (used[numbers[0]], used[numbers[2]]) == (None, "callflow")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"+14155550070": 5}', "must be a string or null"),
        ("{not json", "not JSON"),
        ("+14155550070,callflow,extra\n", "expected 'number,app'"),
        ("", "lists no numbers"),
    ],
)
def test_fix_used_by_bad_file(knm: Run, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / ("apps.json" if content.startswith("[") else "apps.txt")
    path.write_text(content)
    assert expected in one_line_error(knm("maintenance", "fix-used-by", str(path), code=2))
    missing = knm("maintenance", "fix-used-by", str(tmp_path / "nope.csv"), code=2)
    assert "cannot read" in one_line_error(missing)
