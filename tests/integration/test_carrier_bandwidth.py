"""knm_bandwidth (deprecated) against the sandbox over real HTTP: what only Bandwidth does (its
search verbs, the order's answer as carrier data, the developer key, refusals, gates). The
scenarios every carrier shares (search, buy, release as a no-op upstream, and the failure paths)
are in test_carrier_contract.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database

from carriers.bandwidth import BandwidthCarrier
from carriers.base import CarrierContext
from carriers.sandbox import SandboxClient
from carriers.sandbox.bandwidth import number_id
from config.settings import Settings
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber
from knm.services.facade import Knm
from tests.carriers_rig import (
    ACCOUNT,
    WRONG_SECRET,
    assert_provisioning_gates,
    bought,
    case_of,
    discover,
    ledger,
    open_account,
    search_numbers,
)
from tests.fixtures_kazoo import MODULES

pytestmark = pytest.mark.integration

MODULE = "knm_bandwidth"
FAKE = "bandwidth"


def test_search_by_npa_nxx_and_area_code(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    numbers = discover(knm, MODULE, "415886", 4)
    assert numbers == sorted(numbers)
    assert all(n.startswith("+1415886") for n in numbers)
    area = discover(knm, MODULE, "973", 3, query_id="area")
    assert all(n.startswith("+1973") for n in area)
    verbs = [c["body"] for c in sandbox.calls() if c["endpoint"] == "search"]
    assert "<npaNxxNumberSearch " in verbs[0]
    assert "<npaNxx>415886</npaNxx><maxQuantity>500</maxQuantity>" in verbs[0]
    assert "<areaCodeNumberSearch " in verbs[1]


def test_the_orders_answer_replaces_the_search_data(knm: Knm, sandbox: SandboxClient) -> None:
    pn = bought(knm, MODULE)
    number, data = pn.number, pn.carrier_data
    assert data["order_name"].startswith("Kazoo-6")
    assert data["ext_ref_id"] == ACCOUNT
    assert data["accountID"] == "9900012"
    assert data["number"]["e164"] == number
    assert data["number"]["number_id"] == number_id(number[2:])
    assert "npa_nxx" not in data  # the order's answer replaced the search data
    (order,) = [c for c in sandbox.calls() if c["endpoint"] == "order"]
    assert f"<numberIDs><id>{number_id(number[2:])}</id></numberIDs>" in order["body"]
    assert f"<subscriber>{ACCOUNT}</subscriber>" in order["body"]


def test_wrong_developer_key_fails_the_search_and_never_leaks(
    wrong_secret: Callable[[str], Knm], sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    knm = wrong_secret("KNM_CARRIERS__BANDWIDTH__DEVELOPER_KEY")
    open_account(knm)
    assert search_numbers(knm, MODULE) == []
    assert sandbox.requests(FAKE) == {"search": 1}
    assert "authentication: Invalid developer key" in caplog.text
    assert WRONG_SECRET not in caplog.text


def test_refused_order_keeps_the_providers_message(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    carrier = BandwidthCarrier(CarrierContext(mongo_db, Settings()))
    # NXX 123: the sandbox cannot sell it
    pn = PhoneNumber.new("+12121234567", MODULE, modules=MODULES)
    pn.carrier_data = {"number_id": number_id("2121234567")}
    with pytest.raises(KnmError) as caught:
        carrier.acquire(pn, "req-refused")
    cause = caught.value.to_json()["cause"]
    assert f"Number ID {number_id('2121234567')} is not valid" in cause
    assert sandbox.requests(FAKE) == {"order": 1}
    assert sandbox.purchases(FAKE) == {}
    assert ledger(mongo_db, MODULE, pn.number)["status"] == "failed"


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    # sandbox_provisioning defaults to true: enable_provisioning=false alone pretends
    assert_provisioning_gates(mongo_db, sandbox, case_of(MODULE))
