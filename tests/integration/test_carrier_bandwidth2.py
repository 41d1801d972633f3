"""knm_bandwidth2 against the sandbox over real HTTP: search, buy with bounded order polling,
release (a no-op upstream), and every failure path, asserted on the sandbox's own counters."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from carriers.bandwidth2 import Bandwidth2Carrier
from carriers.base import CarrierContext
from carriers.sandbox import SandboxClient
from carriers.sandbox.bandwidth2 import COMPLETE_AFTER_POLLS
from config.settings import Settings, reset_settings
from knm.app import Knm
from knm.errors import KnmError
from knm.model import NumberState, PhoneNumber
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "b" * 32
MODULE = "knm_bandwidth2"
FAKE = "bandwidth2"


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


def _order_posts(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [c for c in sandbox.calls() if c["provider"] == FAKE and c["endpoint"] == "order"]


# ======================================================================== search
def test_search_by_npa_nxx_area_code_and_tollfree(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    local = _discover(knm, "415886", 5)
    assert local == sorted(local)
    assert all(n.startswith("+1415886") for n in local)
    area = _discover(knm, "973", 4, query_id="area")
    assert all(n.startswith("+1973") for n in area)
    # fixed QUIRK: 855 asks for "85*" (KAZOO's "55*" found nothing), detail format read
    tollfree = _discover(knm, "855", 4, query_id="tf")
    assert all(n.startswith("+1855") for n in tollfree)
    searches = [c for c in sandbox.calls() if c["endpoint"] == "search"]
    assert [c["query"] for c in searches] == [
        {"npaNxx": "415886", "enableTNDetail": "false", "quantity": "500"},
        {"areaCode": "973", "enableTNDetail": "false", "quantity": "500"},
        {"tollFreeWildCardPattern": "85*", "enableTNDetail": "true", "quantity": "500"},
    ]


def test_an_empty_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    results = knm.search(
        SearchQuery(prefix="041", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []  # KAZOO: an empty SearchResult is "Number not found"
    assert sandbox.requests(FAKE) == {"search": 1}


# ======================================================================== buy and release
def test_search_buy_polls_until_complete_then_release(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    assert pn.carrier_module == MODULE
    # QUIRK kept: order_id is the customer order id (here the acquiring account)
    assert pn.carrier_data["order_id"] == ACCOUNT
    assert pn.carrier_data["order_name"].startswith("Kazoo-6")
    assert pn.carrier_data["number"] == number
    assert sandbox.purchases(FAKE) == {number: 1}
    assert sandbox.requests(FAKE) == {
        "search": 1,
        "order": 1,
        "order_status": COMPLETE_AFTER_POLLS,  # RECEIVED first, COMPLETE on the last poll
    }
    (post,) = _order_posts(sandbox)
    assert f"<TelephoneNumber>{number[2:]}</TelephoneNumber>" in post["body"]
    assert "<SiteId>1337</SiteId><PeerId>13337</PeerId>" in post["body"]
    ledger = _ledger(knm, number)
    assert ledger["status"] == "done"
    assert ledger["refs"]["order_id"].startswith("dc")

    released = knm.numbers.release([number], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[number].assigned_to is None
    # disconnect is a no-op upstream (KAZOO): nothing was sent
    assert sum(sandbox.requests(FAKE).values()) == 1 + 1 + COMPLETE_AFTER_POLLS


def test_bought_number_is_no_longer_offered(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    first = _discover(knm, "212555", 5)
    assert _buy(knm, first[0]).failed == {}
    again = _discover(knm, "212555", 5, query_id="q2")
    assert first[0] not in again


# ======================================================================== failure paths
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
    # the sandbox takes the order, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider=FAKE, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.carrier_data["order_id"] == ACCOUNT
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 1  # never sent twice
    assert requests["order_lookup"] == 1  # found by number: the POST's answer was lost
    assert requests["order_status"] == COMPLETE_AFTER_POLLS
    assert sandbox.purchases(FAKE) == {number: 1}
    ledger = _ledger(knm, number)
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]][-1] == "reconciled"
    lookups = [c for c in sandbox.calls() if c["endpoint"] == "order_lookup"]
    assert lookups[0]["query"] == {"tn": number[2:]}


def test_order_left_received_at_the_poll_cap_is_followed_up_by_its_id(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__BANDWIDTH2__ORDER_POLL_MAX", "1")
    reset_settings()
    knm = knm_on(mongo_db)
    _account(knm)
    number = _discover(knm)[0]
    first = _buy(knm, number)
    cause = first.failed[number].to_json()["cause"]
    assert "still RECEIVED after 1 polls" in cause
    assert knm.store.find_numbers([number]) == {}  # nothing saved
    ledger = _ledger(knm, number)
    assert ledger["status"] == "pending"  # outcome unknown: the next attempt asks first
    order_id = ledger["refs"]["order_id"]
    assert sandbox.requests(FAKE)["order_status"] == 1

    again = _buy(knm, number)
    assert again.failed == {}, again.failed
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 1  # polled the noted order, never ordered again
    assert "order_lookup" not in requests  # the ledger had the order id
    assert requests["order_status"] == COMPLETE_AFTER_POLLS
    assert sandbox.purchases(FAKE) == {number: 1}
    assert _ledger(knm, number)["refs"]["order_id"] == order_id


def test_401_is_a_permanent_failure_without_retry(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=FAKE, match="order", status=401, times=None)
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert "Unable to acquire number: authentication" in error["cause"]
    assert MODULE in error["cause"]
    assert sandbox.requests(FAKE)["order"] == 1
    assert sandbox.purchases(FAKE) == {}
    assert knm.store.find_numbers([number]) == {}
    assert _ledger(knm, number)["status"] == "failed"


def test_wrong_credentials_fail_the_search_and_never_leak(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__BANDWIDTH2__API_PASSWORD", "wrong-secret-value")
    reset_settings()
    caplog.set_level("DEBUG")
    knm = knm_on(mongo_db)
    _account(knm)
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    assert sandbox.requests(FAKE) == {"search": 1}  # a 401 is not retried
    assert "authentication" in caplog.text
    assert "wrong-secret-value" not in caplog.text


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider=FAKE, match="order")
    batch = _buy(knm, number)
    cause = batch.failed[number].to_json()["cause"]
    assert "Unable to acquire number: empty_response: malformed XML" in cause
    assert knm.store.find_numbers([number]) == {}
    # the garbled answer hid an accepted order: the next attempt finds it, and does not re-buy
    assert sandbox.purchases(FAKE) == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}, retry.failed
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 1
    assert requests["order_lookup"] == 1
    assert sandbox.purchases(FAKE) == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider=FAKE, match="search")
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []


def test_a_failed_order_is_refused_with_the_status(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    carrier = Bandwidth2Carrier(CarrierContext(mongo_db, Settings()))
    pn = PhoneNumber.new("+12121234567", MODULE)  # NXX 123: the sandbox cannot sell it
    pn.assigned_to = ACCOUNT
    with pytest.raises(KnmError) as caught:
        carrier.acquire(pn, "req-failed")
    cause = caught.value.to_json()["cause"]
    assert "Unable to acquire number: FAILED" in cause
    assert "unavailable for ordering" in cause
    assert sandbox.purchases(FAKE) == {}
    assert sandbox.requests(FAKE) == {"order": 1, "order_status": COMPLETE_AFTER_POLLS}
    doc = mongo_db["provisioning"].find_one({"_id": f"{MODULE}:{pn.number}"})
    assert doc is not None
    assert doc["status"] == "failed"


def test_rerun_of_the_same_request_does_not_buy_again(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number, request_id="req-1").failed == {}
    knm.store.numbers.delete_one({"_id": number})
    rerun = _buy(knm, number, request_id="req-1")
    assert rerun.failed == {}
    assert rerun.succeeded[number].carrier_data["order_id"] == ACCOUNT
    assert sandbox.requests(FAKE)["order"] == 1
    assert sandbox.purchases(FAKE) == {number: 1}


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    from config.carrier_settings import Bandwidth2Settings, CarriersSettings

    def knm_with(**bandwidth2: Any) -> Knm:
        base = Settings().carriers.bandwidth2
        assert isinstance(base, Bandwidth2Settings)
        return knm_on(
            mongo_db, carriers=CarriersSettings(bandwidth2=base.model_copy(update=bandwidth2))
        )

    pretend = knm_with(enable_provisioning=False)  # sandbox_provisioning defaults to true
    _account(pretend)
    number = _discover(pretend)[0]
    assert _buy(pretend, number).failed == {}
    assert "order" not in sandbox.requests(FAKE)  # sandbox_provisioning: no HTTP

    refuse = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    other = _discover(refuse, "646555", query_id="gates")[0]
    error = _buy(refuse, other).failed[other].to_json()
    assert error["message"] == "provisioning_disabled"
