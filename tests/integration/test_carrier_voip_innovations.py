"""knm_voip_innovations against the sandbox over real HTTP: what only VoIP Innovations does (the
SOAP endpoint and endpoint group, NPA searches, refused releases, the sandbox URL gate). The
scenarios every carrier shares (search, buy, release and the failure paths, reconciled with
``queryDID``) are in test_carrier_contract.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pymongo.database import Database

from carriers import voip_innovations as vi
from carriers.sandbox import SandboxClient
from knm.domain.number import NumberState
from knm.services.facade import Knm
from tests.carriers_rig import (
    ACCOUNT,
    WRONG_SECRET,
    bought,
    buy,
    discover,
    knm_with_carrier,
    open_account,
    release,
    search_numbers,
)

pytestmark = pytest.mark.integration

MODULE = "knm_voip_innovations"
P = "voip_innovations"


def test_the_order_goes_to_the_production_endpoint_with_the_endpoint_group(
    knm: Knm, sandbox: SandboxClient
) -> None:
    pn = bought(knm, MODULE)
    number = pn.number
    # KAZOO stores nothing new on acquire: the search's carrier data stays
    assert pn.carrier_data["e164"] == number
    assert pn.carrier_data["rate_center"] == "SANDBOX"
    calls = [c for c in sandbox.calls() if c["provider"] == P]
    assert {c["path"] for c in calls} == {"/Services/APIService.asmx"}
    order = next(c for c in calls if c["endpoint"] == "order")
    assert "<tns:tn>" + number[2:] + "</tns:tn><tns:epg>8674</tns:epg>" in order["body"]


def test_npa_search_and_prefixes_without_a_clause(knm: Knm, sandbox: SandboxClient) -> None:
    open_account(knm)
    numbers = search_numbers(knm, MODULE, "435", 50)
    assert len(numbers) == 40  # the whole stock (KAZOO asks with maximum_search_quantity)
    assert all(n.startswith("+1435") for n in numbers)
    assert sandbox.requests(P) == {"search": 1}
    # QUIRK: 1-2 or 4-5 characters after the +/1 strip: no results, nothing sent
    assert search_numbers(knm, MODULE, "4358", query_id="q4") == []
    assert search_numbers(knm, MODULE, "43520", query_id="q5") == []
    assert search_numbers(knm, MODULE, "4", query_id="q1") == []
    assert sandbox.requests(P) == {"search": 1}


def test_release_refused_by_the_provider_keeps_the_number(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    open_account(knm)
    number = discover(knm, MODULE)[0]
    assert buy(knm, number).failed == {}
    # someone releases it behind knm's back: the provider now says it is available
    body = vi.envelope(
        "releaseDID",
        vi.release_body([number[2:]]),
        sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__LOGIN"],
        sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__PASSWORD"],
    )
    httpx.post(
        sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__BASE_URL"],
        content=body.encode(),
        headers=vi.soap_headers("releaseDID"),
    ).raise_for_status()
    released = release(knm, number)
    error = released.failed[number].to_json()
    assert error["message"] == "fault by carrier"
    assert "Number currently available" in error["cause"]
    doc = knm.store.find_numbers([number])[number]
    assert doc["pvt_assigned_to"] == ACCOUNT
    assert doc["pvt_state"] == NumberState.IN_SERVICE.value


def test_wrong_credentials_fail_the_search_and_never_leak(
    wrong_secret: Callable[[str], Knm], sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    knm = wrong_secret("KNM_CARRIERS__VOIP_INNOVATIONS__PASSWORD")
    open_account(knm)
    assert search_numbers(knm, MODULE) == []
    assert sandbox.requests(P) == {"search": 1}  # the refusal is not retried
    assert WRONG_SECRET not in caplog.text


def test_provisioning_gates_and_the_sandbox_url(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    def knm_with(**changes: Any) -> Knm:
        return knm_with_carrier(mongo_db, "voip_innovations", **changes)

    def paths() -> set[str]:
        return {c["path"] for c in sandbox.calls() if c["provider"] == P}

    # enabled + sandbox flag: real calls, every one of them to the sandbox endpoint (KAZOO)
    both = knm_with(enable_provisioning=True, sandbox_provisioning=True)
    open_account(both)
    number = discover(both, MODULE)[0]
    assert buy(both, number).failed == {}
    assert sandbox.purchases(P) == {number: 1}
    assert paths() == {"/VOIP/Services/APIService.asmx"}

    # disabled + sandbox flag: pretend, no order sent
    pretend = knm_with(enable_provisioning=False, sandbox_provisioning=True)
    other = discover(pretend, MODULE, "646555")[0]
    assert buy(pretend, other).failed == {}
    assert sandbox.requests(P)["order"] == 1
    assert sandbox.purchases(P) == {number: 1}

    # disabled, no sandbox: refused before anything is sent, and release is gated too
    refuse = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    third = discover(refuse, MODULE, "718555")[0]
    error = buy(refuse, third).failed[third].to_json()
    assert error["message"] == "provisioning_disabled"
    released = release(refuse, number)
    assert released.failed[number].to_json()["message"] == "provisioning_disabled"
    assert "release" not in sandbox.requests(P)
