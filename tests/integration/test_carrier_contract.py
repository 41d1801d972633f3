"""The scenarios every HTTP carrier integration shares, against the sandbox over real HTTP.

Each test runs once per ``CarrierCase`` (``tests/carriers_rig.py``; ids are the module names) and
asserts on the sandbox's own counters: what was searched, ordered, asked and released, and how
many numbers were really bought. Where carriers legitimately differ (endpoint names, polling,
error wording, carrier data), the difference lives in the case, not in the test. What only one
carrier does (wire format, gates, quirks, credentials, polling caps, blocks) stays in its module.
"""

from __future__ import annotations

from typing import Any

import pytest

from carriers.sandbox import SandboxClient
from knm.domain.number import NumberState
from knm.services.facade import Knm
from tests.carriers_rig import (
    ACCOUNT,
    CASES,
    CarrierCase,
    buy,
    discover,
    last_event,
    ledger,
    open_account,
    owned,
    release,
    releases,
    search_numbers,
)

pytestmark = pytest.mark.integration

every_carrier = pytest.mark.parametrize("case", CASES, ids=lambda case: case.module)
releasing = pytest.mark.parametrize(
    "case", [case for case in CASES if case.release], ids=lambda case: case.module
)


def _contains(actual: Any, expected: Any) -> bool:
    """``expected``'s entries are in ``actual`` (nested dicts compared as subsets)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)


def _assert_order_ref(case: CarrierCase, data: dict[str, Any]) -> None:
    """The carrier data names the order, where the carrier records one (with its fixed value)."""
    if case.order_key is None:
        return
    assert data[case.order_key]
    if case.order_value is not None:
        assert data[case.order_key] == case.order_value


def _discover_one(knm: Knm, case: CarrierCase) -> str:
    open_account(knm)
    return discover(knm, case.module, case.prefix)[0]


# ======================================================================== the happy path
@every_carrier
def test_search_buy_release(knm: Knm, sandbox: SandboxClient, case: CarrierCase) -> None:
    open_account(knm)
    numbers = discover(knm, case.module, case.prefix)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1" + case.prefix) for n in numbers)
    assert sandbox.requests(case.provider) == {"search": 1}
    number = numbers[0]

    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    assert pn.carrier_module == case.module
    _assert_order_ref(case, pn.carrier_data)
    assert sandbox.purchases(case.provider) == {number: 1}
    assert sandbox.requests(case.provider) == case.requests()
    bought = ledger(knm, case.module, number)
    assert (bought["action"], bought["status"]) == ("acquire", "done")

    released = release(knm, number)
    assert released.failed == {}, released.failed
    assert released.succeeded[number].assigned_to is None
    if case.release is None:
        # disconnect is a no-op upstream (KAZOO): nothing was sent, the ledger keeps the purchase
        assert sandbox.requests(case.provider) == case.requests()
        assert releases(sandbox, case.provider) == {}
        assert owned(sandbox, case.provider) == [number]
        after = ledger(knm, case.module, number)
        assert (after["action"], after["status"]) == ("acquire", "done")
    else:
        assert sandbox.requests(case.provider) == case.requests(releases=1)
        assert releases(sandbox, case.provider) == {number: 1}
        assert owned(sandbox, case.provider) == []
        after = ledger(knm, case.module, number)
        assert (after["action"], after["status"]) == ("disconnect", "done")


@every_carrier
def test_bought_number_is_no_longer_offered(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    open_account(knm)
    first = discover(knm, case.module, "212555", 5)
    assert buy(knm, first[0]).failed == {}
    again = discover(knm, case.module, "212555", 5, query_id="q2")
    assert first[0] not in again


@every_carrier
def test_malformed_search_answer_gives_no_results(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    open_account(knm)
    sandbox.fault("malformed", provider=case.provider, match="search")
    assert search_numbers(knm, case.module, case.prefix) == []
    assert sandbox.requests(case.provider) == {"search": 1}  # a garbled answer is not retried


# ======================================================================== the order fails
@every_carrier
def test_503_then_200_is_one_purchase(knm: Knm, sandbox: SandboxClient, case: CarrierCase) -> None:
    number = _discover_one(knm, case)
    sandbox.fault("status", provider=case.provider, match=case.order, status=503, retry_after=0)
    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    # ordered again, and never asked: a 503 cannot have taken effect
    assert sandbox.requests(case.provider) == case.requests(orders=2)
    assert sandbox.purchases(case.provider) == {number: 1}


@every_carrier
def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    # the sandbox takes the order, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider=case.provider, match=case.order, stall_s=2.5)
    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert _contains(pn.carrier_data, case.reconciled_data(number)), pn.carrier_data
    # never ordered twice; asked once whether the number is ours
    assert sandbox.requests(case.provider) == case.requests(asks=1)
    assert sandbox.purchases(case.provider) == {number: 1}
    doc = ledger(knm, case.module, number)
    assert doc["status"] == "done"
    assert last_event(doc) == "reconciled"
    if case.ask_query is not None:
        calls = sandbox.calls()
        asked = [c for c in calls if (c["provider"], c["endpoint"]) == (case.provider, case.ask)]
        assert asked[0]["query"] == case.ask_query(number)


@every_carrier
def test_timeout_before_the_order_took_effect_orders_again_once(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    sandbox.fault("stall_before", provider=case.provider, match=case.order, stall_s=2.5)
    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    # asked once: not ours, so ordered again
    assert sandbox.requests(case.provider) == case.requests(orders=2, asks=1)
    assert sandbox.purchases(case.provider) == {number: 1}
    assert ledger(knm, case.module, number)["status"] == "done"


@every_carrier
def test_401_is_a_permanent_failure_without_retry(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    sandbox.fault("status", provider=case.provider, match=case.order, status=401, times=None)
    batch = buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert case.auth_cause in error["cause"]
    assert case.module in error["cause"]
    # one order, no retry and no question: a 401 took no effect
    assert sandbox.requests(case.provider) == case.requests(bought=False)
    assert sandbox.purchases(case.provider) == {}
    assert knm.store.find_numbers([number]) == {}  # nothing saved
    assert ledger(knm, case.module, number)["status"] == "failed"


@every_carrier
def test_malformed_answer_after_the_order_took_effect_is_reconciled_bought_once(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    # the sandbox takes the order, then answers garbage: the order was sent, its effect unknown
    sandbox.fault("malformed", provider=case.provider, match=case.order)
    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert _contains(pn.carrier_data, case.reconciled_data(number)), pn.carrier_data
    # asked before anything was reported, found bought: never ordered twice
    assert sandbox.requests(case.provider) == case.requests(asks=1)
    assert sandbox.purchases(case.provider) == {number: 1}
    doc = ledger(knm, case.module, number)
    assert doc["status"] == "done"
    assert last_event(doc) == "reconciled"


@every_carrier
def test_malformed_order_answer_that_cannot_be_reconciled_yet_is_retryable_then_reconciled(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    sandbox.fault("malformed", provider=case.provider, match=case.order)
    # every attempt of the ownership question fails (4 in-call attempts, FAST_HTTP)
    sandbox.fault("status", provider=case.provider, match=case.ask, status=500, times=4)
    batch = buy(knm, number)
    error = batch.failed[number]
    assert error.retryable  # the task layer re-queues it (or dead-letters it when used up)
    cause = error.to_json()["cause"]
    assert "cannot tell whether an earlier attempt took effect" in cause
    assert case.malformed_cause in cause  # what the order was answered
    assert case.module in cause
    assert knm.store.find_numbers([number]) == {}
    assert sandbox.purchases(case.provider) == {number: 1}
    assert ledger(knm, case.module, number)["status"] == "pending"  # outcome unknown, not failed
    retry = buy(knm, number)  # the next attempt asks first, and does not re-buy
    assert retry.failed == {}, retry.failed
    assert sandbox.requests(case.provider) == case.requests(asks=5)
    assert sandbox.purchases(case.provider) == {number: 1}
    assert last_event(ledger(knm, case.module, number)) == "reconciled"


@every_carrier
def test_rerun_of_the_same_request_does_not_buy_again(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    number = _discover_one(knm, case)
    first = buy(knm, number, request_id="req-1")
    assert first.failed == {}, first.failed
    # the number document is lost (say the worker died before saving): the rerun does not re-buy
    knm.store.numbers.delete_one({"_id": number})
    rerun = buy(knm, number, request_id="req-1")
    assert rerun.failed == {}, rerun.failed
    data = rerun.succeeded[number].carrier_data
    assert data == first.succeeded[number].carrier_data  # what the purchase recorded
    _assert_order_ref(case, data)
    assert sandbox.requests(case.provider) == case.requests()
    assert sandbox.purchases(case.provider) == {number: 1}


# ======================================================================== the release fails
@releasing
def test_timeout_after_the_release_took_effect_is_reconciled(
    knm: Knm, sandbox: SandboxClient, case: CarrierCase
) -> None:
    assert case.release is not None
    number = _discover_one(knm, case)
    assert buy(knm, number).failed == {}
    sandbox.fault("stall_after", provider=case.provider, match=case.release, stall_s=2.5)
    released = release(knm, number)
    assert released.failed == {}, released.failed
    assert released.succeeded[number].assigned_to is None
    # released once, then asked once whether the number is still ours
    assert sandbox.requests(case.provider) == case.requests(releases=1, asks=1)
    assert releases(sandbox, case.provider) == {number: 1}
    assert owned(sandbox, case.provider) == []
    doc = ledger(knm, case.module, number)
    assert (doc["action"], doc["status"]) == ("disconnect", "done")
    assert last_event(doc) == "reconciled"
