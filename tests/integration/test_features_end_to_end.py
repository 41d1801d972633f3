"""Features end to end: the CLI an operator uses, the seed's local-number defaults made visible,
and upstream E911 through the Telnyx sandbox, de-provisioned on release.

``knm`` runs in process (typer's runner) against this test's database; the sandbox serves
Telnyx over real HTTP on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner, Result

from carriers.sandbox import SandboxClient
from knm.cli.root import cli
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
Run = Callable[..., Result]
RESELLER = "5e" * 16
ACCOUNT = "a1" * 16
LOCAL = "+14155550160"
ADDRESS = {
    "street_address": "301 Marina Blvd.",
    "locality": "San Francisco",
    "region": "CA",
    "postal_code": "94123",
}


@pytest.fixture
def run(mongo_url: str, mongo_db: Database[Doc], sandbox_env: dict[str, str]) -> Run:
    runner = CliRunner()
    env = {**sandbox_env, "KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def invoke(*args: str, code: int = 0, **extra: str) -> Result:
        result = runner.invoke(cli, list(args), env={**env, **extra})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    return invoke


@pytest.fixture
def knm(mongo_db: Database[Doc], sandbox_env: dict[str, str]) -> Knm:
    knm = knm_on(mongo_db)
    knm.create_account(RESELLER, "Reseller", allow_additions=True, reseller=True)
    knm.create_account(ACCOUNT, "Acme Corp", parent=RESELLER)
    return knm


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def _local_number(knm: Knm) -> None:
    batch = knm.numbers.create([LOCAL], Options(auth_by="system", assign_to=ACCOUNT))
    assert batch.failed == {}


def _telnyx_number(knm: Knm) -> str:
    found = knm.search(
        SearchQuery(prefix="415886", quantity=1, account_id=ACCOUNT, carriers=["knm_telnyx"])
    )
    number = found[0].number
    assert knm.numbers.move([number], ACCOUNT, Options(auth_by="system")).failed == {}
    return number


def test_a_local_number_is_flagged_local_forced_outbound_and_not_billed(knm: Knm, run: Run) -> None:
    _local_number(knm)
    number = _telnyx_number(knm)
    lookup = _json(run("numbers", "lookup", LOCAL, "--json"))
    assert lookup["account_id"] == ACCOUNT
    assert lookup["local"] is True  # no call authorization for local numbers
    assert lookup["force_outbound"] is True  # force_local_outbound: calls leave the cluster
    assert lookup["pending_port"] is False
    assert lookup["inbound_cnam"] is False
    remote = _json(run("numbers", "lookup", number, "--json"))
    assert remote["local"] is False
    assert remote["force_outbound"] is False
    quantities = _json(run("billing", "quantities", ACCOUNT, "--json"))
    assert quantities["phone_numbers"] == {"did_us": 1}  # the Telnyx number only
    assert quantities["billable"] == 1
    assert quantities["number_carriers"] == {"knm_local": 1, "knm_telnyx": 1}
    assert quantities["number_services"]["local"] == 1


def test_paid_features_are_refused_on_local_numbers_unless_overridden(
    knm: Knm, run: Run, mongo_db: Database[Doc], sandbox: SandboxClient
) -> None:
    _local_number(knm)
    before = mongo_db["numbers"].find_one({"_id": LOCAL})
    refused = run(
        "numbers", "update", LOCAL, "--merge", json.dumps({"e911": ADDRESS}), "--json", code=1
    )
    error = _json(refused)["failed"][LOCAL]
    assert (error["error"], error["code"]) == ("forbidden", 403)
    assert mongo_db["numbers"].find_one({"_id": LOCAL}) == before  # unchanged
    # with the override the request is accepted; knm_local has no E911 provider of its own,
    # so the address is kept and nothing is provisioned (no provider configured)
    accepted = _json(
        run(
            "numbers",
            "update",
            LOCAL,
            "--merge",
            json.dumps({"e911": ADDRESS}),
            "--json",
            KNM_LOCAL_FEATURE_OVERRIDE="true",
        )
    )
    doc = accepted["succeeded"][LOCAL]
    assert doc["e911"] == ADDRESS
    assert "e911" not in doc["pvt_features"]
    # an operator names an E911 provider for the system; Telnyx in sandbox mode activates the
    # feature without calling the provider (KAZOO's sandbox_provisioning)
    run("features", "system", "provider", "e911", "knm_telnyx_e911")
    activated = _json(
        run(
            "numbers",
            "update",
            LOCAL,
            "--merge",
            json.dumps({"e911": {**ADDRESS, "caller_name": "Acme"}}),
            "--json",
            KNM_LOCAL_FEATURE_OVERRIDE="true",
            KNM_CARRIERS__TELNYX__SANDBOX_PROVISIONING="true",
        )
    )
    assert activated["succeeded"][LOCAL]["pvt_features"]["e911"] == {
        **ADDRESS,
        "caller_name": "Acme",
    }
    assert "e911_create" not in sandbox.requests("telnyx")


def test_release_removes_the_e911_address_upstream_then_the_number_goes_on(
    knm: Knm, run: Run, mongo_db: Database[Doc], sandbox: SandboxClient
) -> None:
    number = _telnyx_number(knm)
    updated = _json(
        run("numbers", "update", number, "--merge", json.dumps({"e911": ADDRESS}), "--json")
    )
    doc = updated["succeeded"][number]
    assert doc["pvt_features"]["e911"] == ADDRESS
    address_id = doc["pvt_carrier_data"]["address_id"]
    assert address_id
    requests = sandbox.requests("telnyx")
    assert (requests["e911_create"], requests["e911_settings"]) == (1, 1)
    # saving the same address again calls nothing upstream
    run("numbers", "update", number, "--merge", json.dumps({"e911": ADDRESS}), "--json")
    assert sandbox.requests("telnyx") == requests

    released = _json(run("numbers", "release", number, "--json"))
    after = released["succeeded"][number]
    assert after["pvt_state"] == "available"  # released_state: the lifecycle goes on
    assert after.get("pvt_assigned_to") is None
    assert "e911" not in after.get("pvt_features", {})
    calls = [
        c for c in sandbox.calls() if c["provider"] == "telnyx" and c["endpoint"] == "e911_settings"
    ]
    assert len(calls) == 2  # assigned, then unassigned on release
    assert json.loads(calls[-1]["body"]) == {"e911_enabled": False, "e911_address_id": None}
    assert any(c["endpoint"] == "e911_delete" and address_id in c["path"] for c in sandbox.calls())


def test_dry_run_calls_nothing_upstream(knm: Knm, run: Run, sandbox: SandboxClient) -> None:
    number = _telnyx_number(knm)
    before = sandbox.requests("telnyx")
    result = _json(
        run(
            "numbers",
            "update",
            number,
            "--merge",
            json.dumps({"e911": ADDRESS}),
            "--dry-run",
            "--json",
        )
    )
    assert result["succeeded"][number]["pvt_features"]["e911"] == ADDRESS  # what would be
    assert sandbox.requests("telnyx") == before


def test_system_and_reseller_feature_lists(knm: Knm, run: Run) -> None:
    number = _telnyx_number(knm)
    shown = _json(run("features", "system", "show", "--json"))
    assert shown["features"] == {"allow": None, "deny": None}
    run("features", "system", "deny", "add", "prepend")
    denied = run(
        "numbers",
        "update",
        number,
        "--merge",
        json.dumps({"prepend": {"enabled": True, "name": "Sales"}}),
        "--json",
        code=1,
    )
    assert _json(denied)["failed"][number]["error"] == "forbidden"
    run("features", "system", "deny", "reset")
    run("features", "reseller", "allow", "add", RESELLER, "prepend")
    shown = _json(run("features", "reseller", "show", RESELLER, "--json"))
    assert shown["features"]["allow"] == ["prepend"]
    allowed = _json(
        run(
            "numbers",
            "update",
            number,
            "--merge",
            json.dumps({"prepend": {"enabled": True, "name": "Sales"}}),
            "--json",
        )
    )
    assert allowed["succeeded"][number]["pvt_features"]["prepend"] == {
        "enabled": True,
        "name": "Sales",
    }
    bad = run("features", "system", "deny", "add", "teleport", code=2)
    assert "unknown feature 'teleport'" in bad.stderr
