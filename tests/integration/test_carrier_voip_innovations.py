"""knm_voip_innovations against the sandbox over real HTTP: search, buy, release, and every
failure path (the reconciliation call is ``queryDID``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pymongo.database import Database

from carriers import voip_innovations as vi
from carriers.sandbox import SandboxClient
from knm.app import Knm
from knm.model import NumberState
from knm.options import Options
from knm.search import SearchQuery
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

ACCOUNT = "a" * 32
MODULE = "knm_voip_innovations"
P = "voip_innovations"


def _account(knm: Knm) -> None:
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True)


def _search(knm: Knm, prefix: str, quantity: int = 3, query_id: str = "") -> list[str]:
    results = knm.search(
        SearchQuery(
            prefix=prefix,
            quantity=quantity,
            account_id=ACCOUNT,
            carriers=[MODULE],
            query_id=query_id,
        )
    )
    assert {r.carrier_module for r in results} <= {MODULE}
    assert {r.state for r in results} <= {NumberState.DISCOVERY}
    return [r.number for r in results]


def _discover(knm: Knm, prefix: str = "415886", quantity: int = 3) -> list[str]:
    numbers = _search(knm, prefix, quantity)
    assert numbers, "the sandbox offers numbers for this prefix"
    return numbers


def _buy(knm: Knm, number: str, request_id: str | None = None) -> Any:
    options = Options(auth_by="system", request_id=request_id)
    return knm.numbers.move([number], ACCOUNT, options)


def _ledger(knm: Knm, number: str) -> dict[str, Any]:
    doc = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert doc is not None
    return doc


def _releases(sandbox: SandboxClient) -> dict[str, int]:
    return dict(sandbox.stats()["releases"].get(P, {}))


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
    # KAZOO stores nothing new on acquire: the search's carrier data stays
    assert pn.carrier_data["e164"] == numbers[0]
    assert pn.carrier_data["rate_center"] == "SANDBOX"
    assert sandbox.purchases(P) == {numbers[0]: 1}
    assert _ledger(knm, numbers[0])["status"] == "done"
    # the production endpoint, with the configured endpoint group
    calls = [c for c in sandbox.calls() if c["provider"] == P]
    assert {c["path"] for c in calls} == {"/Services/APIService.asmx"}
    order = next(c for c in calls if c["endpoint"] == "order")
    assert "<tns:tn>" + numbers[0][2:] + "</tns:tn><tns:epg>8674</tns:epg>" in order["body"]

    released = knm.numbers.release([numbers[0]], Options(auth_by="system"))
    assert released.failed == {}
    assert released.succeeded[numbers[0]].assigned_to is None
    assert sandbox.requests(P)["release"] == 1
    assert _releases(sandbox) == {numbers[0]: 1}
    ledger = _ledger(knm, numbers[0])
    assert (ledger["action"], ledger["status"]) == ("disconnect", "done")


def test_npa_search_and_prefixes_without_a_clause(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    numbers = _search(knm, "435", 50)
    assert len(numbers) == 40  # the whole stock (KAZOO asks with maximum_search_quantity)
    assert all(n.startswith("+1435") for n in numbers)
    assert sandbox.requests(P) == {"search": 1}
    # QUIRK: 1-2 or 4-5 characters after the +/1 strip: no results, nothing sent
    assert _search(knm, "4358", query_id="q4") == []
    assert _search(knm, "43520", query_id="q5") == []
    assert _search(knm, "4", query_id="q1") == []
    assert sandbox.requests(P) == {"search": 1}


def test_bought_number_is_no_longer_offered(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    first = _discover(knm, "212555", 5)
    assert _buy(knm, first[0]).failed == {}
    again = _search(knm, "212555", 5, query_id="q2")
    assert again
    assert first[0] not in again


def test_503_then_200_is_one_purchase(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("status", provider=P, match="order", status=503, retry_after=0)
    batch = _buy(knm, number)
    assert batch.failed == {}
    assert sandbox.requests(P)["order"] == 2
    assert sandbox.purchases(P) == {number: 1}


def test_timeout_after_the_order_was_accepted_is_reconciled_not_reordered(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    # the sandbox assigns the number, then answers after the client's 1 s timeout
    sandbox.fault("stall_after", provider=P, match="order", stall_s=2.5)
    batch = _buy(knm, number)
    assert batch.failed == {}, batch.failed
    assert batch.succeeded[number].state == NumberState.IN_SERVICE
    requests = sandbox.requests(P)
    assert requests["order"] == 1  # never sent twice
    assert requests["query"] == 1  # asked once (queryDID) whether the number is ours
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
    assert batch.failed == {}
    requests = sandbox.requests(P)
    assert requests["order"] == 2
    assert requests["query"] == 1  # queryDID said "Available": ordered again
    assert sandbox.purchases(P) == {number: 1}


def test_timeout_after_the_release_took_effect_is_reconciled(
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
    assert requests["query"] == 1
    assert _releases(sandbox) == {number: 1}
    assert [e["what"] for e in _ledger(knm, number)["events"]][-1] == "reconciled"


def test_release_refused_by_the_provider_keeps_the_number(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    assert _buy(knm, number).failed == {}
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
    released = knm.numbers.release([number], Options(auth_by="system"))
    error = released.failed[number].to_json()
    assert error["message"] == "fault by carrier"
    assert "Number currently available" in error["cause"]
    doc = knm.store.find_numbers([number])[number]
    assert doc["pvt_assigned_to"] == ACCOUNT
    assert doc["pvt_state"] == NumberState.IN_SERVICE.value


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
    assert sandbox.purchases(P) == {}
    assert knm.store.find_numbers([number]) == {}  # nothing saved


def test_wrong_credentials_fail_the_search_and_never_leak(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KNM_CARRIERS__VOIP_INNOVATIONS__PASSWORD", "wrong-secret-value")
    from config.settings import reset_settings

    reset_settings()
    caplog.set_level("DEBUG")
    knm = knm_on(mongo_db)
    _account(knm)
    assert _search(knm, "415886") == []
    assert sandbox.requests(P) == {"search": 1}  # the refusal is not retried
    assert "wrong-secret-value" not in caplog.text


def test_malformed_order_answer_is_a_clear_error_and_the_number_unchanged(
    knm: Knm, sandbox: SandboxClient
) -> None:
    _account(knm)
    number = _discover(knm)[0]
    sandbox.fault("malformed", provider=P, match="order")
    batch = _buy(knm, number)
    error = batch.failed[number].to_json()
    assert "empty_response: malformed XML" in error["cause"]
    assert knm.store.find_numbers([number]) == {}
    # the garbled answer may hide a purchase: the next attempt asks first, and does not re-buy
    assert sandbox.purchases(P) == {number: 1}
    retry = _buy(knm, number)
    assert retry.failed == {}
    requests = sandbox.requests(P)
    assert requests["order"] == 1
    assert requests["query"] == 1
    assert sandbox.purchases(P) == {number: 1}


def test_malformed_search_answer_gives_no_results(knm: Knm, sandbox: SandboxClient) -> None:
    _account(knm)
    sandbox.fault("malformed", provider=P, match="search")
    assert _search(knm, "415886") == []


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


def test_provisioning_gates_and_the_sandbox_url(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    from config.carrier_settings import CarriersSettings, VoipInnovationsSettings

    def knm_with(**changes: Any) -> Knm:
        base = VoipInnovationsSettings(
            base_url=sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__BASE_URL"],
            sandbox_url=sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__SANDBOX_URL"],
            login=sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__LOGIN"],
            password=sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__PASSWORD"],
            endpoint_group=sandbox_env["KNM_CARRIERS__VOIP_INNOVATIONS__ENDPOINT_GROUP"],
        )
        return knm_on(
            mongo_db, carriers=CarriersSettings(voip_innovations=base.model_copy(update=changes))
        )

    def paths() -> set[str]:
        return {c["path"] for c in sandbox.calls() if c["provider"] == P}

    # enabled + sandbox flag: real calls, every one of them to the sandbox endpoint (KAZOO)
    both = knm_with(enable_provisioning=True, sandbox_provisioning=True)
    _account(both)
    number = _discover(both)[0]
    assert _buy(both, number).failed == {}
    assert sandbox.purchases(P) == {number: 1}
    assert paths() == {"/VOIP/Services/APIService.asmx"}

    # disabled + sandbox flag: pretend, no order sent
    pretend = knm_with(enable_provisioning=False, sandbox_provisioning=True)
    other = _discover(pretend, "646555")[0]
    assert _buy(pretend, other).failed == {}
    assert sandbox.requests(P)["order"] == 1
    assert sandbox.purchases(P) == {number: 1}

    # disabled, no sandbox: refused before anything is sent, and release is gated too
    refuse = knm_with(enable_provisioning=False, sandbox_provisioning=False)
    third = _discover(refuse, "718555")[0]
    error = _buy(refuse, third).failed[third].to_json()
    assert error["message"] == "provisioning_disabled"
    released = refuse.numbers.release([number], Options(auth_by="system"))
    assert released.failed[number].to_json()["message"] == "provisioning_disabled"
    assert "release" not in sandbox.requests(P)
