"""knm_bandwidth2 against the sandbox over real HTTP: what only Bandwidth2 does (its searches, the
order on the wire, bounded order polling, failed orders, credentials, gates). The scenarios every
carrier shares (search, buy with polling, release as a no-op upstream, and the failure paths) are
in test_carrier_contract.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database

from carriers.bandwidth2 import Bandwidth2Carrier
from carriers.base import CarrierContext
from carriers.sandbox import SandboxClient
from carriers.sandbox.bandwidth2 import COMPLETE_AFTER_POLLS
from config.settings import Settings, reset_settings
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber
from knm.services.facade import Knm
from tests.carriers_rig import (
    ACCOUNT,
    WRONG_SECRET,
    assert_provisioning_gates,
    bought,
    buy,
    case_of,
    discover,
    knm_on,
    ledger,
    open_account,
    search_numbers,
)
from tests.fixtures_kazoo import MODULES

pytestmark = pytest.mark.integration

MODULE = "knm_bandwidth2"
FAKE = "bandwidth2"


def _order_posts(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [c for c in sandbox.calls() if c["provider"] == FAKE and c["endpoint"] == "order"]


# ======================================================================== search
def test_search_by_npa_nxx_area_code_and_tollfree(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    local = discover(knm, MODULE, "415886", 5)
    assert local == sorted(local)
    assert all(n.startswith("+1415886") for n in local)
    area = discover(knm, MODULE, "973", 4, query_id="area")
    assert all(n.startswith("+1973") for n in area)
    # fixed QUIRK: 855 asks for "85*" (KAZOO's "55*" found nothing), detail format read
    tollfree = discover(knm, MODULE, "855", 4, query_id="tf")
    assert all(n.startswith("+1855") for n in tollfree)
    searches = [c for c in sandbox.calls() if c["endpoint"] == "search"]
    assert [c["query"] for c in searches] == [
        {"npaNxx": "415886", "enableTNDetail": "false", "quantity": "500"},
        {"areaCode": "973", "enableTNDetail": "false", "quantity": "500"},
        {"tollFreeWildCardPattern": "85*", "enableTNDetail": "true", "quantity": "500"},
    ]


def test_an_empty_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    # KAZOO: an empty SearchResult is "Number not found"
    assert search_numbers(knm, MODULE, "041") == []
    assert sandbox.requests(FAKE) == {"search": 1}


# ======================================================================== buy
def test_the_order_on_the_wire_and_in_the_ledger(knm: Knm, sandbox: SandboxClient) -> None:
    pn = bought(knm, MODULE)
    number, data = pn.number, pn.carrier_data
    assert data["order_name"].startswith("Kazoo-6")
    assert data["number"] == number
    (post,) = _order_posts(sandbox)
    assert f"<TelephoneNumber>{number[2:]}</TelephoneNumber>" in post["body"]
    assert "<SiteId>1337</SiteId><PeerId>13337</PeerId>" in post["body"]
    assert ledger(knm, MODULE, number)["refs"]["order_id"].startswith("dc")


def test_order_left_received_at_the_poll_cap_is_followed_up_by_its_id(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__BANDWIDTH2__ORDER_POLL_MAX", "1")
    reset_settings()
    knm = knm_on(mongo_db)
    open_account(knm)
    number = discover(knm, MODULE)[0]
    first = buy(knm, number)
    cause = first.failed[number].to_json()["cause"]
    assert "still RECEIVED after 1 polls" in cause
    assert knm.store.find_numbers([number]) == {}  # nothing saved
    doc = ledger(knm, MODULE, number)
    assert doc["status"] == "pending"  # outcome unknown: the next attempt asks first
    order_id = doc["refs"]["order_id"]
    assert sandbox.requests(FAKE)["order_status"] == 1

    again = buy(knm, number)
    assert again.failed == {}, again.failed
    requests = sandbox.requests(FAKE)
    assert requests["order"] == 1  # polled the noted order, never ordered again
    assert "order_lookup" not in requests  # the ledger had the order id
    assert requests["order_status"] == COMPLETE_AFTER_POLLS
    assert sandbox.purchases(FAKE) == {number: 1}
    assert ledger(knm, MODULE, number)["refs"]["order_id"] == order_id


# ======================================================================== failure paths
def test_wrong_credentials_fail_the_search_and_never_leak(
    wrong_secret: Callable[[str], Knm], sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    knm = wrong_secret("KNM_CARRIERS__BANDWIDTH2__API_PASSWORD")
    open_account(knm)
    assert search_numbers(knm, MODULE) == []
    assert sandbox.requests(FAKE) == {"search": 1}  # a 401 is not retried
    assert "authentication" in caplog.text
    assert WRONG_SECRET not in caplog.text


def test_a_failed_order_is_refused_with_the_status(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    carrier = Bandwidth2Carrier(CarrierContext(mongo_db, Settings()))
    # NXX 123: the sandbox cannot sell it
    pn = PhoneNumber.new("+12121234567", MODULE, modules=MODULES)
    pn.assigned_to = ACCOUNT
    with pytest.raises(KnmError) as caught:
        carrier.acquire(pn, "req-failed")
    cause = caught.value.to_json()["cause"]
    assert "Unable to acquire number: FAILED" in cause
    assert "unavailable for ordering" in cause
    assert sandbox.purchases(FAKE) == {}
    assert sandbox.requests(FAKE) == {"order": 1, "order_status": COMPLETE_AFTER_POLLS}
    assert ledger(mongo_db, MODULE, pn.number)["status"] == "failed"


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    # sandbox_provisioning defaults to true: enable_provisioning=false alone pretends
    assert_provisioning_gates(mongo_db, sandbox, case_of(MODULE))
