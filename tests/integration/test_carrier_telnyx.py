"""knm_telnyx against the sandbox over real HTTP: search, buy, release, and every failure path."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from carriers.sandbox import SandboxClient
from knm.app import Knm
from knm.model import NumberState
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "a" * 32
MODULE = "knm_telnyx"


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


def test_search_buy_release(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _discover(knm)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1415886") for n in numbers)

    batch = _buy(knm, numbers[0])
    assert batch.failed == {}
    pn = batch.succeeded[numbers[0]]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    assert pn.carrier_module == MODULE
    assert pn.carrier_data["order_id"]
    assert pn.carrier_data["number_e164"] == numbers[0]  # search data kept (existing keys win)
    assert sandbox.purchases("telnyx") == {numbers[0]: 1}
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{numbers[0]}"})
    assert ledger is not None
    assert ledger["status"] == "done"
    assert ledger["action"] == "acquire"

    released = knm.numbers.release([numbers[0]], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[numbers[0]].assigned_to is None
    # Telnyx has no release call (KAZOO): nothing was sent
    assert "release" not in sandbox.requests("telnyx")


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
    sandbox.fault("status", provider="telnyx", match="order", status=503, retry_after=0)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests("telnyx")["order"] == 2
    assert sandbox.purchases("telnyx") == {number: 1}


def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    # the sandbox takes the order, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider="telnyx", match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    assert batch.succeeded[number].state == NumberState.IN_SERVICE
    requests = sandbox.requests("telnyx")
    assert requests["order"] == 1  # never sent twice
    assert requests["number"] == 1  # asked once whether the number is ours
    assert sandbox.purchases("telnyx") == {number: 1}
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert ledger is not None
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]][-1] == "reconciled"


def test_timeout_before_the_order_took_effect_orders_again_once(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_before", provider="telnyx", match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests("telnyx")["order"] == 2
    assert sandbox.purchases("telnyx") == {number: 1}


def test_401_is_a_permanent_failure_without_retry(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider="telnyx", match="order", status=401, times=None)
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert "unauthenticated" in error["cause"]
    assert MODULE in error["cause"]
    assert sandbox.requests("telnyx")["order"] == 1
    assert sandbox.purchases("telnyx") == {}
    assert knm.store.find_numbers([number]) == {}  # nothing saved


def test_wrong_credentials_fail_the_search_and_never_leak(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__TELNYX__TOKEN", "wrong-secret-value")
    from config.settings import reset_settings

    reset_settings()
    caplog.set_level("DEBUG")
    knm = knm_on(mongo_db)
    _account(knm)
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    assert sandbox.requests("telnyx") == {"search": 1}  # a 401 is not retried
    assert "wrong-secret-value" not in caplog.text


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider="telnyx", match="order")
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert "malformed JSON" in error["cause"]
    assert knm.store.find_numbers([number]) == {}
    # the garbled answer may hide a purchase: the next attempt asks first, and does not re-buy
    assert sandbox.purchases("telnyx") == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}
    assert sandbox.requests("telnyx")["order"] == 1
    assert sandbox.purchases("telnyx") == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider="telnyx", match="search")
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
    assert rerun.succeeded[number].carrier_data["order_id"]
    assert sandbox.requests("telnyx")["order"] == 1
    assert sandbox.purchases("telnyx") == {number: 1}


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    from config.carrier_settings import CarriersSettings, TelnyxSettings

    def knm_with(**telnyx: Any) -> Knm:
        base = TelnyxSettings(
            base_url=sandbox_env["KNM_CARRIERS__TELNYX__BASE_URL"],
            user=sandbox_env["KNM_CARRIERS__TELNYX__USER"],
            token=sandbox_env["KNM_CARRIERS__TELNYX__TOKEN"],
        )
        return knm_on(mongo_db, carriers=CarriersSettings(telnyx=base.model_copy(update=telnyx)))

    pretend = knm_with(enable_provisioning=False, sandbox_provisioning=True)
    _account(pretend)
    number = _discover(pretend)[0]
    assert _buy(pretend, number).failed == {}
    assert "order" not in sandbox.requests("telnyx")  # sandbox_provisioning: no HTTP

    refuse = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    other = _discover(refuse, "646555")[0]
    error = _buy(refuse, other).failed[other].to_json()
    assert error["message"] == "provisioning_disabled"
