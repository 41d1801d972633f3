"""knm_other against the sandbox's phonebook peer over real HTTP: search (numbers and blocks),
status checks, buy, release, and every failure path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.database import Database

from carriers.base import SearchRequest
from carriers.http import PermanentCallError
from carriers.other import OtherCarrier
from carriers.sandbox import SandboxClient
from carriers.sandbox.other import SANDBOX_GATEWAY
from config.carrier_settings import CarriersSettings, OtherSettings
from knm.app import Knm
from knm.model import NumberState
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "a" * 32
MODULE = "knm_other"
PEER = "other"


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


def _carrier(knm: Knm) -> OtherCarrier:
    carrier = knm.numbers.carriers.get(MODULE, knm.numbers.carrier_ctx)
    assert isinstance(carrier, OtherCarrier)
    return carrier


def test_search_sends_the_prefix_encoded(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _discover(knm)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1415886") for n in numbers)
    calls = [c for c in sandbox.calls() if c["provider"] == PEER]
    assert [(c["method"], c["path"]) for c in calls] == [("GET", "/numbers/US/search")]
    # %2B decodes to "+" on the peer (a literal "+" would have arrived as a space)
    assert calls[0]["query"] == {"prefix": "+1415886", "limit": "500", "offset": "0"}
    assert sandbox.requests(PEER) == {"search": 1}


def test_the_peer_accepts_kazoos_literal_plus(knm: Knm, sandbox: SandboxClient) -> None:
    base = knm.settings.carriers.other.base_url
    assert base is not None
    answer = httpx.get(f"{base}/numbers/US/search?prefix=+1415886&limit=2&offset=0")
    assert answer.status_code == 200
    numbers = list(answer.json()["data"])
    assert len(numbers) == 2
    assert all(n.startswith("+1415886") for n in numbers)


def test_block_search_returns_start_and_end_of_each_block(knm: Knm, sandbox: SandboxClient) -> None:
    request = SearchRequest(prefix="+1415886", quantity=100, blocks=2, query_id="q")
    results = _carrier(knm).find_numbers(request)
    assert [r.number for r in results] == [
        "+14158860000",
        "+14158860099",
        "+14158860100",
        "+14158860199",
    ]
    assert results[0].carrier_data == results[1].carrier_data
    assert results[0].carrier_data["start_number"] == "+14158860000"
    assert results[0].carrier_data["end_number"] == "+14158860099"
    assert {r.state for r in results} == {NumberState.DISCOVERY}
    calls = [c for c in sandbox.calls() if c["provider"] == PEER]
    assert calls[-1]["path"] == "/blocks/US/search"
    assert calls[-1]["query"] == {"prefix": "+1415886", "size": "100", "offset": "0", "limit": "2"}
    assert sandbox.requests(PEER) == {"blocks": 1}


def test_search_buy_check_release(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _discover(knm)

    batch = _buy(knm, numbers[0])
    assert batch.failed == {}
    pn = batch.succeeded[numbers[0]]
    assert pn.state == NumberState.IN_SERVICE
    assert pn.assigned_to == ACCOUNT
    assert pn.carrier_module == MODULE
    # the peer's opaque replaces the search data; locality is kept beside it
    assert pn.carrier_data == {
        "order_id": pn.carrier_data["order_id"],
        "gateways": [SANDBOX_GATEWAY],
        "locality": {"city": "SANDBOX CITY", "state": "ZZ", "country": "US"},
    }
    assert pn.carrier_data["order_id"].startswith("pb-")
    assert sandbox.purchases(PEER) == {numbers[0]: 1}
    order = [c for c in sandbox.calls() if c["endpoint"] == "order"]
    assert order[0]["method"] == "PUT"
    assert order[0]["path"] == "/numbers/US/order"
    assert order[0]["body"] == (
        f'{{"data":{{"numbers":["{numbers[0]}"],"gateways":["{SANDBOX_GATEWAY}"]}}}}'
    )
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{numbers[0]}"})
    assert ledger is not None
    assert ledger["status"] == "done"

    checked = _carrier(knm).check_numbers([numbers[0], numbers[1], "+15"])
    assert checked == {numbers[0]: "in_service", numbers[1]: "available", "+15": "not_found"}
    status = [c for c in sandbox.calls() if c["endpoint"] == "status"]
    assert status[-1]["body"] == f'{{"data":["{numbers[0][2:]}","{numbers[1][2:]}","+15"]}}'

    released = knm.numbers.release([numbers[0]], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[numbers[0]].assigned_to is None
    # knm_other's disconnect sends nothing to the peer (KAZOO)
    assert sandbox.requests(PEER) == {"search": 1, "order": 1, "status": 1}


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
    sandbox.fault("status", provider=PEER, match="order", status=503, retry_after=0)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests(PEER)["order"] == 2
    assert sandbox.purchases(PEER) == {number: 1}


def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    # the peer takes the order, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider=PEER, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    pn = batch.succeeded[number]
    assert pn.state == NumberState.IN_SERVICE
    requests = sandbox.requests(PEER)
    assert requests["order"] == 1  # never sent twice
    assert requests["status"] == 1  # asked once whether the number is ours
    assert sandbox.purchases(PEER) == {number: 1}
    assert pn.carrier_data["rate_center"] == "SANDBOX"  # the lost answer's opaque is unknown
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert ledger is not None
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]][-1] == "reconciled"


def test_timeout_before_the_order_took_effect_orders_again_once(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_before", provider=PEER, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}
    requests = sandbox.requests(PEER)
    assert requests["order"] == 2
    assert requests["status"] == 1  # "not ours": ordered again
    assert sandbox.purchases(PEER) == {number: 1}


def test_401_is_a_permanent_failure_without_retry(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=PEER, match="order", status=401, times=None)
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "fault by carrier"
    assert "lookup_failed: HTTP 401" in error["cause"]
    assert MODULE in error["cause"]
    assert sandbox.requests(PEER)["order"] == 1
    assert "status" not in sandbox.requests(PEER)
    assert sandbox.purchases(PEER) == {}
    assert knm.store.find_numbers([number]) == {}  # nothing saved


def test_the_peers_refusal_is_lookup_resp_error(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    # someone else takes the number at the peer between search and order
    httpx.put(
        f"{knm.settings.carriers.other.base_url}/numbers/US/order",
        content=f'{{"data":{{"numbers":["{number}"]}}}}',
    ).raise_for_status()
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert "lookup_resp_error: status 'error'" in error["cause"]
    assert "is not available" in error["cause"]
    assert sandbox.requests(PEER)["order"] == 2
    assert knm.store.find_numbers([number]) == {}


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider=PEER, match="order")
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert "lookup_resp_error: malformed JSON" in error["cause"]
    assert knm.store.find_numbers([number]) == {}
    # the garbled answer may hide a purchase: the next attempt asks first, and does not re-buy
    assert sandbox.purchases(PEER) == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}
    requests = sandbox.requests(PEER)
    assert requests["order"] == 1
    assert requests["status"] == 1
    assert sandbox.purchases(PEER) == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider=PEER, match="search")
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []


def test_a_search_error_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("status", provider=PEER, match="search", status=404)
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    assert sandbox.requests(PEER) == {"search": 1}  # a 404 is not retried


def test_unanswered_status_question_leaves_the_order_for_reconciliation(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("stall_after", provider=PEER, match="order", stall_s=2.5)
    sandbox.fault("status", provider=PEER, match="status", status=404)
    batch = _buy(knm, number)
    assert "ownership unknown: resp_error: HTTP 404" in batch.failed[number].to_json()["cause"]
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert ledger is not None
    assert ledger["status"] == "pending"  # not "failed": the next attempt asks again
    assert knm.store.find_numbers([number]) == {}
    # the next attempt asks first and finds the earlier order took effect: no second order
    retry = _buy(knm, number)
    assert retry.failed == {}
    requests = sandbox.requests(PEER)
    assert requests["order"] == 1
    assert requests["status"] == 2
    assert sandbox.purchases(PEER) == {number: 1}


def test_rerun_of_the_same_request_does_not_buy_again(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number, request_id="req-1").failed == {}
    knm.store.numbers.delete_one({"_id": number})
    rerun = _buy(knm, number, request_id="req-1")
    assert rerun.failed == {}
    assert rerun.succeeded[number].carrier_data["order_id"]
    assert sandbox.requests(PEER)["order"] == 1
    assert sandbox.purchases(PEER) == {number: 1}


def test_provisioning_is_not_gated(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    base = OtherSettings(
        base_url=sandbox_env["KNM_CARRIERS__OTHER__BASE_URL"],
        enable_provisioning=False,
        sandbox_provisioning=False,
    )
    knm = knm_on(mongo_db, carriers=CarriersSettings(other=base))
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number).failed == {}  # KAZOO's knm_other has no provisioning gates
    assert sandbox.purchases(PEER) == {number: 1}


def test_without_a_url_search_is_empty_and_acquire_fails(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    knm = knm_on(mongo_db, carriers=CarriersSettings(other=OtherSettings(base_url=None)))
    _account(knm)
    results = knm.search(
        SearchQuery(prefix="415886", quantity=3, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert results == []
    carrier = _carrier(knm)
    with pytest.raises(PermanentCallError, match="not_available"):
        carrier.check_numbers(["+14158860000"])
    # a number discovered through a configured peer, bought while the URL is unset
    configured = knm_on(mongo_db)
    number = _discover(configured)[0]
    error = _buy(knm, number).failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "missing_provider_url"
    assert error["cause"] == number
    assert sandbox.requests(PEER) == {"search": 1}
    assert knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"}) is None
