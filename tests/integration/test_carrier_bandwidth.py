"""knm_bandwidth (deprecated) against the sandbox over real HTTP: search, buy, release (a no-op
upstream), and every failure path, asserted on the sandbox's own counters."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from carriers.bandwidth import BandwidthCarrier
from carriers.base import CarrierContext
from carriers.sandbox import SandboxClient
from carriers.sandbox.bandwidth import number_id
from config.settings import Settings, reset_settings
from knm.app import Knm
from knm.errors import KnmError
from knm.model import NumberState, PhoneNumber
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "c" * 32
MODULE = "knm_bandwidth"
FAKE = "bandwidth"


def _account(knm: Knm) -> None:
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True)


def _discover(
    knm: Knm, prefix: str = "415886", quantity: int = 3, query_id: str | None = None
) -> list[str]:
    results = knm.search(
        SearchQuery(
            prefix=prefix,
            quantity=quantity,
            account_id=ACCOUNT,
            carriers=[MODULE],
            query_id=query_id,
        )
    )
    assert results, "the sandbox offers numbers for this prefix"
    assert {r.carrier_module for r in results} == {MODULE}
    assert {r.state for r in results} == {NumberState.DISCOVERY}
    return [r.number for r in results]


def _buy(knm: Knm, number: str, request_id: str | None = None) -> Any:
    return knm.numbers.move([number], ACCOUNT, Options(auth_by="system", request_id=request_id))


def _ledger(knm: Knm, number: str) -> dict[str, Any]:
    doc = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert doc is not None
    return doc


def test_search_by_npa_nxx_and_area_code(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _discover(knm, "415886", 4)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1415886") for n in numbers)
    area = _discover(knm, "973", 3, query_id="area")
    assert all(n.startswith("+1973") for n in area)
    verbs = [c["body"] for c in sandbox.calls() if c["endpoint"] == "search"]
    assert "<npaNxxNumberSearch " in verbs[0]
    assert "<npaNxx>415886</npaNxx><maxQuantity>500</maxQuantity>" in verbs[0]
    assert "<areaCodeNumberSearch " in verbs[1]


def test_search_buy_release(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    data = pn.carrier_data
    assert data["order_name"].startswith("Kazoo-6")
    assert data["ext_ref_id"] == ACCOUNT
    assert data["accountID"] == "9900012"
    assert data["number"]["e164"] == number
    assert data["number"]["number_id"] == number_id(number[2:])
    assert "npa_nxx" not in data  # the order's answer replaced the search data
    assert sandbox.purchases(FAKE) == {number: 1}
    assert sandbox.requests(FAKE) == {"search": 1, "order": 1}
    (order,) = [c for c in sandbox.calls() if c["endpoint"] == "order"]
    assert f"<numberIDs><id>{number_id(number[2:])}</id></numberIDs>" in order["body"]
    assert f"<subscriber>{ACCOUNT}</subscriber>" in order["body"]
    assert _ledger(knm, number)["status"] == "done"

    released = knm.numbers.release([number], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[number].assigned_to is None
    assert sandbox.requests(FAKE) == {"search": 1, "order": 1}  # disconnect: nothing sent


def test_503_then_200_is_one_purchase(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=FAKE, match="order", status=503, retry_after=0)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests(FAKE)["order"] == 2
    assert sandbox.purchases(FAKE) == {number: 1}


def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_after", provider=FAKE, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.carrier_data["number"]["e164"] == number
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 1  # never sent twice
    assert requests["number"] == 1  # asked once (getTelephoneNumber) whether it is ours
    assert sandbox.purchases(FAKE) == {number: 1}
    ledger = _ledger(knm, number)
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]][-1] == "reconciled"


def test_timeout_before_the_order_took_effect_orders_again_once(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_before", provider=FAKE, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 2
    assert requests["number"] == 1  # asked first: not ours, so ordered again
    assert sandbox.purchases(FAKE) == {number: 1}


def test_401_is_a_permanent_failure_without_retry(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=FAKE, match="order", status=401, times=None)
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert "authentication" in error["cause"]
    assert MODULE in error["cause"]
    assert sandbox.requests(FAKE)["order"] == 1
    assert sandbox.purchases(FAKE) == {}
    assert knm.store.find_numbers([number]) == {}


def test_wrong_developer_key_fails_the_search_and_never_leaks(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__BANDWIDTH__DEVELOPER_KEY", "wrong-secret-value")
    reset_settings()
    caplog.set_level("DEBUG")
    knm = knm_on(mongo_db)
    _account(knm)
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    assert sandbox.requests(FAKE) == {"search": 1}
    assert "authentication: Invalid developer key" in caplog.text
    assert "wrong-secret-value" not in caplog.text


def test_refused_order_keeps_the_providers_message(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    carrier = BandwidthCarrier(CarrierContext(mongo_db, Settings()))
    pn = PhoneNumber.new("+12121234567", MODULE)  # NXX 123: the sandbox cannot sell it
    pn.carrier_data = {"number_id": number_id("2121234567")}
    with pytest.raises(KnmError) as caught:
        carrier.acquire(pn, "req-refused")
    cause = caught.value.to_json()["cause"]
    assert f"Number ID {number_id('2121234567')} is not valid" in cause
    assert sandbox.requests(FAKE) == {"order": 1}
    assert sandbox.purchases(FAKE) == {}
    doc = mongo_db["provisioning"].find_one({"_id": f"{MODULE}:{pn.number}"})
    assert doc is not None
    assert doc["status"] == "failed"


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider=FAKE, match="order")
    batch = _buy(knm, number)
    cause = batch.failed[number].to_json()["cause"]
    assert "empty_response: malformed XML" in cause
    assert knm.store.find_numbers([number]) == {}
    assert sandbox.purchases(FAKE) == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}, retry.failed
    assert sandbox.requests(FAKE)["order"] == 1
    assert sandbox.requests(FAKE)["number"] == 1
    assert sandbox.purchases(FAKE) == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider=FAKE, match="search")
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    from config.carrier_settings import BandwidthSettings, CarriersSettings

    def knm_with(**bandwidth: Any) -> Knm:
        base = Settings().carriers.bandwidth
        assert isinstance(base, BandwidthSettings)
        return knm_on(
            mongo_db, carriers=CarriersSettings(bandwidth=base.model_copy(update=bandwidth))
        )

    pretend = knm_with(enable_provisioning=False)  # sandbox_provisioning defaults to true
    _account(pretend)
    number = _discover(pretend)[0]
    assert _buy(pretend, number).failed == {}
    assert "order" not in sandbox.requests(FAKE)

    refuse = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    other = _discover(refuse, "646555", query_id="gates")[0]
    error = _buy(refuse, other).failed[other].to_json()
    assert error["message"] == "provisioning_disabled"
