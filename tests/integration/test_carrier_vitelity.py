"""knm_vitelity against the sandbox over real HTTP: search, buy, release, and every failure path."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from carriers.sandbox import SandboxClient
from carriers.sandbox.vitelity import SANDBOX_ROUTESIP, tollfree_numbers
from knm.app import Knm
from knm.model import NumberState
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "a" * 32
MODULE = "knm_vitelity"
P = "vitelity"


def _account(knm: Knm) -> None:
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True)


def _discover(knm: Knm, prefix: str = "415886", quantity: int = 3) -> list[str]:
    results = knm.search(
        SearchQuery(prefix=prefix, quantity=quantity, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results, "the sandbox offers numbers for this prefix"
    assert {r.carrier_module for r in results} == {MODULE}
    assert {r.state for r in results} == {NumberState.DISCOVERY}
    return [r.number for r in results]


def _buy(knm: Knm, number: str, request_id: str | None = None) -> Any:
    options = Options(auth_by="system", request_id=request_id)
    return knm.numbers.move([number], ACCOUNT, options)


def _releases(sandbox: SandboxClient) -> dict[str, int]:
    return dict(sandbox.stats()["releases"].get(P, {}))


def _owned(sandbox: SandboxClient) -> list[str]:
    return list(sandbox.stats()["owned"].get(P, []))


def _ledger(knm: Knm, number: str) -> dict[str, Any]:
    doc = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert doc is not None
    return doc


def test_search_buy_release(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _discover(knm)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1415886") for n in numbers)
    assert sandbox.requests(P) == {"search": 1}

    batch = _buy(knm, numbers[0])
    assert batch.failed == {}
    pn = batch.succeeded[numbers[0]]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    assert pn.carrier_module == MODULE
    # KAZOO returns the number unchanged: the search's carrier data is what it keeps
    assert pn.carrier_data == {"number": numbers[0], "ratecenter": "SANDBOXVILLE", "state": "ZZ"}
    assert sandbox.purchases(P) == {numbers[0]: 1}
    assert sandbox.requests(P)["order"] == 1
    assert _ledger(knm, numbers[0])["status"] == "done"
    # every parameter travelled in the query string of a POST, routesip included
    order = [c for c in sandbox.calls() if c["endpoint"] == "order"][-1]
    assert order["method"] == "POST"
    assert order["body"] == ""
    assert order["query"] == {
        "cmd": "getlocaldid",
        "did": numbers[0][2:],
        "xml": "yes",
        "routesip": SANDBOX_ROUTESIP,
    }

    released = knm.numbers.release([numbers[0]], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[numbers[0]].assigned_to is None
    assert sandbox.requests(P)["release"] == 1
    assert _releases(sandbox) == {numbers[0]: 1}
    assert _owned(sandbox) == []
    ledger = _ledger(knm, numbers[0])
    assert (ledger["action"], ledger["status"]) == ("disconnect", "done")


def test_tollfree_search_and_order(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    wanted = tollfree_numbers(6)[4]  # an 888 number of the fake's stock
    numbers = _discover(knm, wanted, 5)
    assert numbers == ["+1" + wanted]  # listtollfree, filtered by the whole prefix
    assert sandbox.requests(P) == {"search_tollfree": 1}
    assert _buy(knm, numbers[0]).failed == {}
    assert sandbox.requests(P)["order_tollfree"] == 1
    assert sandbox.purchases(P) == {numbers[0]: 1}


def test_a_bare_tollfree_npa_goes_to_listnpa(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    # KAZOO: "800" classifies as unknown -> listnpa, which offers no toll-free numbers
    results = knm.search(
        SearchQuery(prefix="800", quantity=5, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    assert sandbox.requests(P) == {"search": 1}


def test_bought_number_is_no_longer_offered(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    first = _discover(knm, "212555", 5)
    assert _buy(knm, first[0]).failed == {}
    again = knm.search(
        SearchQuery(
            prefix="212555", quantity=5, account_id=ACCOUNT, carriers=[MODULE], query_id="q2"
        )
    )
    assert first[0] not in {r.number for r in again}


def test_503_then_200_is_one_purchase(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=P, match="order", status=503, retry_after=0)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests(P)["order"] == 2
    assert "listdids" not in sandbox.requests(P)  # a 503 cannot have taken effect
    assert sandbox.purchases(P) == {number: 1}


def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    # the sandbox takes the order, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider=P, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    assert batch.succeeded[number].state == NumberState.IN_SERVICE
    requests = sandbox.requests(P)
    assert requests["order"] == 1  # never sent twice
    assert requests["listdids"] == 1  # asked once whether the number is ours
    assert sandbox.purchases(P) == {number: 1}
    ledger = _ledger(knm, number)
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]][-1] == "reconciled"


def test_timeout_before_the_order_took_effect_orders_again_once(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_before", provider=P, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    requests = sandbox.requests(P)
    assert requests["order"] == 2
    assert requests["listdids"] == 1  # the account had no DIDs ("none"): not ours, order again
    assert sandbox.purchases(P) == {number: 1}


def test_timeout_after_the_release_was_accepted_is_reconciled(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number).failed == {}
    sandbox.fault("stall_after", provider=P, match="release", stall_s=2.5)
    released = knm.numbers.release([number], Options(auth_by="system"))
    assert released.failed == {}, released.failed
    requests = sandbox.requests(P)
    assert requests["release"] == 1
    assert requests["listdids"] == 1
    assert _releases(sandbox) == {number: 1}
    assert [e["what"] for e in _ledger(knm, number)["events"]][-1] == "reconciled"


def test_401_is_a_permanent_failure_without_retry(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=P, match="order", status=401, times=None)
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert "unauthenticated" in error["cause"]
    assert MODULE in error["cause"]
    assert sandbox.requests(P)["order"] == 1
    assert "listdids" not in sandbox.requests(P)
    assert sandbox.purchases(P) == {}
    assert knm.store.find_numbers([number]) == {}  # nothing saved
    assert _ledger(knm, number)["status"] == "failed"


def test_a_refused_order_carries_the_providers_message(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number).failed == {}
    knm.store.numbers.delete_one({"_id": number})  # knm forgot it; Vitelity did not
    knm.store.db["provisioning"].delete_many({})
    error = _buy(knm, number).failed[number].to_json()
    assert f"DID {number[2:]} is not available" in error["cause"]
    assert sandbox.purchases(P) == {number: 1}


def test_wrong_credentials_fail_the_search_and_never_leak(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from config.settings import reset_settings

    good = knm_on(mongo_db)
    _account(good)
    number = _discover(good)[0]  # discovered with the right password
    monkeypatch.setenv("KNM_CARRIERS__VITELITY__PASSWORD", "wrong-secret-value")
    reset_settings()
    caplog.set_level("DEBUG")
    # knm's logs are under test, not the fake provider's access log (it logs request lines)
    knm = knm_on(mongo_db)
    results = knm.search(
        SearchQuery(
            prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE], query_id="q2"
        )
    )
    assert results == []
    assert sandbox.requests(P) == {"search": 2}  # a refusal is not retried
    error = _buy(knm, number).failed[number].to_json()
    assert "invalid login" in error["cause"]
    assert sandbox.requests(P)["order"] == 1
    assert sandbox.purchases(P) == {}
    assert "api.php" in caplog.text  # the requests were logged...
    assert "wrong-secret-value" not in caplog.text  # ...without the password
    assert "wrong-secret-value" not in str(error)


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider=P, match="order")
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert "failed_decode_resp" in error["cause"]
    assert MODULE in error["cause"]
    assert knm.store.find_numbers([number]) == {}
    # the garbled answer may hide a purchase: the next attempt asks first, and does not re-buy
    assert sandbox.purchases(P) == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}
    requests = sandbox.requests(P)
    assert requests["order"] == 1
    assert requests["listdids"] == 1
    assert sandbox.purchases(P) == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider=P, match="search")
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []


def test_rerun_of_the_same_request_does_not_buy_again(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number, request_id="req-1").failed == {}
    # the number document is lost (say the worker died before saving): the rerun does not re-buy
    knm.store.numbers.delete_one({"_id": number})
    rerun = _buy(knm, number, request_id="req-1")
    assert rerun.failed == {}
    assert sandbox.requests(P)["order"] == 1
    assert sandbox.purchases(P) == {number: 1}


def test_no_provisioning_gates_and_routesip_required(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    from config.carrier_settings import CarriersSettings, VitelitySettings

    def knm_with(**vitelity: Any) -> Knm:
        config = VitelitySettings.model_validate(
            {
                "base_url": sandbox_env["KNM_CARRIERS__VITELITY__BASE_URL"],
                "login": sandbox_env["KNM_CARRIERS__VITELITY__LOGIN"],
                "password": sandbox_env["KNM_CARRIERS__VITELITY__PASSWORD"],
                "routesip": [SANDBOX_ROUTESIP],
                **vitelity,
            }
        )
        return knm_on(mongo_db, carriers=CarriersSettings(vitelity=config))

    # enable_provisioning=false changes nothing for Vitelity: the order is sent
    gated = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    _account(gated)
    number = _discover(gated)[0]
    assert _buy(gated, number).failed == {}
    assert sandbox.purchases(P) == {number: 1}

    unrouted = knm_with(routesip=[])
    other = _discover(unrouted, "646555")[0]
    error = _buy(unrouted, other).failed[other].to_json()
    assert error["message"] == "fault by carrier"
    assert "routesip_not_configured" in error["cause"]
    assert sandbox.requests(P)["order"] == 1  # nothing sent for the second number
    assert unrouted.store.find_numbers([other]) == {}
