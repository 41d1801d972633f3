"""knm_vitelity against the sandbox over real HTTP: what only Vitelity does (the order in a query
string, toll-free, refusals, credentials in the URL, routesip). The scenarios every carrier shares
(search, buy, release and the failure paths) are in test_carrier_contract.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database

from carriers.sandbox import SandboxClient
from carriers.sandbox.vitelity import SANDBOX_ROUTESIP, tollfree_numbers
from config.settings import Settings
from knm.services.facade import Knm
from tests.carriers_rig import (
    WRONG_SECRET,
    bought,
    buy,
    discover,
    knm_with_carrier,
    open_account,
    search_numbers,
)

pytestmark = pytest.mark.integration

MODULE = "knm_vitelity"
P = "vitelity"


def test_the_order_travels_in_the_query_string_and_keeps_the_search_data(
    knm: Knm, sandbox: SandboxClient
) -> None:
    pn = bought(knm, MODULE)
    number = pn.number
    # KAZOO returns the number unchanged: the search's carrier data is what it keeps
    assert pn.carrier_data == {"number": number, "ratecenter": "SANDBOXVILLE", "state": "ZZ"}
    # every parameter travelled in the query string of a POST, routesip included
    order = [c for c in sandbox.calls() if c["endpoint"] == "order"][-1]
    assert order["method"] == "POST"
    assert order["body"] == ""
    assert order["query"] == {
        "cmd": "getlocaldid",
        "did": number[2:],
        "xml": "yes",
        "routesip": SANDBOX_ROUTESIP,
    }


def test_tollfree_search_and_order(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    wanted = tollfree_numbers(6)[4]  # an 888 number of the fake's stock
    numbers = discover(knm, MODULE, wanted, 5)
    assert numbers == ["+1" + wanted]  # listtollfree, filtered by the whole prefix
    assert sandbox.requests(P) == {"search_tollfree": 1}
    assert buy(knm, numbers[0]).failed == {}
    assert sandbox.requests(P)["order_tollfree"] == 1
    assert sandbox.purchases(P) == {numbers[0]: 1}


def test_a_bare_tollfree_npa_goes_to_listnpa(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    # KAZOO: "800" classifies as unknown -> listnpa, which offers no toll-free numbers
    assert search_numbers(knm, MODULE, "800", 5) == []
    assert sandbox.requests(P) == {"search": 1}


def test_a_refused_order_carries_the_providers_message(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    number = discover(knm, MODULE)[0]
    assert buy(knm, number).failed == {}
    knm.store.numbers.delete_one({"_id": number})  # knm forgot it; Vitelity did not
    knm.store.db["provisioning"].delete_many({})
    error = buy(knm, number).failed[number].to_json()
    assert f"DID {number[2:]} is not available" in error["cause"]
    assert sandbox.purchases(P) == {number: 1}


def test_wrong_credentials_fail_the_search_and_never_leak(
    knm: Knm,
    wrong_secret: Callable[[str], Knm],
    sandbox: SandboxClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = knm
    open_account(good)
    number = discover(good, MODULE)[0]  # discovered with the right password
    # knm's logs are under test, not the fake provider's access log (it logs request lines)
    knm = wrong_secret("KNM_CARRIERS__VITELITY__PASSWORD")
    assert search_numbers(knm, MODULE, query_id="q2") == []
    assert sandbox.requests(P) == {"search": 2}  # a refusal is not retried
    error = buy(knm, number).failed[number].to_json()
    assert "invalid login" in error["cause"]
    assert sandbox.requests(P)["order"] == 1
    assert sandbox.purchases(P) == {}
    assert "api.php" in caplog.text  # the requests were logged...
    assert WRONG_SECRET not in caplog.text  # ...without the password
    assert WRONG_SECRET not in str(error)


def test_no_provisioning_gates_and_routesip_required(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    def knm_with(**vitelity: Any) -> Knm:
        return knm_with_carrier(mongo_db, "vitelity", **vitelity)

    assert Settings().carriers.vitelity.routesip == [SANDBOX_ROUTESIP]
    # enable_provisioning=false changes nothing for Vitelity: the order is sent
    gated = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    open_account(gated)
    number = discover(gated, MODULE)[0]
    assert buy(gated, number).failed == {}
    assert sandbox.purchases(P) == {number: 1}

    unrouted = knm_with(routesip=[])
    other = discover(unrouted, MODULE, "646555")[0]
    error = buy(unrouted, other).failed[other].to_json()
    assert error["message"] == "fault by carrier"
    assert "routesip_not_configured" in error["cause"]
    assert sandbox.requests(P)["order"] == 1  # nothing sent for the second number
    assert unrouted.store.find_numbers([other]) == {}
