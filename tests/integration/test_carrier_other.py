"""knm_other against the sandbox's phonebook peer over real HTTP: what only knm_other does (the
encoded prefix, blocks, status checks, the peer's refusals, no gates, no URL). The scenarios every
carrier shares (search, buy, release as a no-op upstream, and the failure paths) are in
test_carrier_contract.py."""

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
from knm.domain.number import NumberState
from knm.services.facade import Knm
from tests.carriers_rig import buy, discover, knm_on, ledger, open_account, search_numbers

pytestmark = pytest.mark.integration

MODULE = "knm_other"
PEER = "other"


def _carrier(knm: Knm) -> OtherCarrier:
    carrier = knm.numbers.carriers.get(MODULE, knm.numbers.carrier_ctx)
    assert isinstance(carrier, OtherCarrier)
    return carrier


def test_search_sends_the_prefix_encoded(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    numbers = discover(knm, MODULE)
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


def test_the_order_and_the_status_check_on_the_wire(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    numbers = discover(knm, MODULE)
    batch = buy(knm, numbers[0])
    assert batch.failed == {}, batch.failed
    data = batch.succeeded[numbers[0]].carrier_data
    # the peer's opaque replaces the search data; locality is kept beside it
    assert data == {
        "order_id": data["order_id"],
        "gateways": [SANDBOX_GATEWAY],
        "locality": {"city": "SANDBOX CITY", "state": "ZZ", "country": "US"},
    }
    assert data["order_id"].startswith("pb-")
    order = [c for c in sandbox.calls() if c["endpoint"] == "order"]
    assert order[0]["method"] == "PUT"
    assert order[0]["path"] == "/numbers/US/order"
    assert order[0]["body"] == (
        f'{{"data":{{"numbers":["{numbers[0]}"],"gateways":["{SANDBOX_GATEWAY}"]}}}}'
    )

    checked = _carrier(knm).check_numbers([numbers[0], numbers[1], "+15"])
    assert checked == {numbers[0]: "in_service", numbers[1]: "available", "+15": "not_found"}
    status = [c for c in sandbox.calls() if c["endpoint"] == "status"]
    assert status[-1]["body"] == f'{{"data":["{numbers[0][2:]}","{numbers[1][2:]}","+15"]}}'
    assert sandbox.requests(PEER) == {"search": 1, "order": 1, "status": 1}


def test_the_peers_refusal_is_lookup_resp_error(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    number = discover(knm, MODULE)[0]
    # someone else takes the number at the peer between search and order
    httpx.put(
        f"{knm.settings.carriers.other.base_url}/numbers/US/order",
        content=f'{{"data":{{"numbers":["{number}"]}}}}',
    ).raise_for_status()
    batch = buy(knm, number)
    error = batch.failed[number].to_json()
    assert "lookup_resp_error: status 'error'" in error["cause"]
    assert "is not available" in error["cause"]
    assert sandbox.requests(PEER)["order"] == 2
    assert knm.store.find_numbers([number]) == {}


def test_a_search_error_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    sandbox.fault("status", provider=PEER, match="search", status=404)
    assert search_numbers(knm, MODULE) == []
    assert sandbox.requests(PEER) == {"search": 1}  # a 404 is not retried


def test_unanswered_status_question_leaves_the_order_for_reconciliation(
    knm: Knm, sandbox: SandboxClient
) -> None:
    open_account(knm)
    number = discover(knm, MODULE)[0]
    sandbox.fault("stall_after", provider=PEER, match="order", stall_s=2.5)
    sandbox.fault("status", provider=PEER, match="status", status=404)
    batch = buy(knm, number)
    assert "ownership unknown: resp_error: HTTP 404" in batch.failed[number].to_json()["cause"]
    # not "failed": the next attempt asks again
    assert ledger(knm, MODULE, number)["status"] == "pending"
    assert knm.store.find_numbers([number]) == {}
    # the next attempt asks first and finds the earlier order took effect: no second order
    retry = buy(knm, number)
    assert retry.failed == {}
    requests = sandbox.requests(PEER)
    assert requests["order"] == 1
    assert requests["status"] == 2
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
    open_account(knm)
    number = discover(knm, MODULE)[0]
    assert buy(knm, number).failed == {}  # KAZOO's knm_other has no provisioning gates
    assert sandbox.purchases(PEER) == {number: 1}


def test_without_a_url_search_is_empty_and_acquire_fails(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    knm = knm_on(mongo_db, carriers=CarriersSettings(other=OtherSettings(base_url=None)))
    open_account(knm)
    assert search_numbers(knm, MODULE) == []
    carrier = _carrier(knm)
    with pytest.raises(PermanentCallError, match="not_available"):
        carrier.check_numbers(["+14158860000"])
    # a number discovered through a configured peer, bought while the URL is unset
    configured = knm_on(mongo_db)
    number = discover(configured, MODULE)[0]
    error = buy(knm, number).failed[number].to_json()
    assert error["error"] == "unspecified_fault"
    assert error["message"] == "missing_provider_url"
    assert error["cause"] == number
    assert sandbox.requests(PEER) == {"search": 1}
    assert knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"}) is None
