"""The upstream feature providers (Telnyx and Vitelity E911/CNAM) against the sandbox over real
HTTP: a number bought through knm (so the fake provider holds it), in ``in_service``, with its
public ``e911``/``cnam`` fields set, handed to the provider directly (as ``knm.features`` will).

Every assertion about what happened upstream reads the fake provider itself: its request
counters, its call log, and what it answers about the number (``GET numbers/<n>``,
``GET e911_addresses``, ``cmd=e911getinfo``).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pymongo.database import Database

from carriers.base import CarrierContext
from carriers.features import FeatureContext, FeatureProvider
from carriers.sandbox import SandboxClient
from carriers.sandbox.core import SANDBOX_SECRET, SANDBOX_USER
from carriers.telnyx_features import TelnyxCnamProvider, TelnyxE911Provider
from carriers.vitelity_features import VitelityCnamProvider, VitelityE911Provider
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.services.facade import Knm
from tests.carriers_rig import bought, knm_with_carrier, ledger
from tests.fixtures_kazoo import MODULES

pytestmark = pytest.mark.integration

FCTX = FeatureContext(auth_by="system", request_id="req-features")
MARINA = {
    "street_address": "301 Marina Blvd.",
    "locality": "San Francisco",
    "region": "CA",
    "postal_code": "94123",
}
MAIN_ST = {
    "street_address": "140 Main St",
    "extended_address": "Apt 5",
    "locality": "Lake Lure",
    "region": "North Carolina",
    "postal_code": "28746",
    "caller_name": "Jo Smith",
}


def _provider[P: FeatureProvider](cls: type[P], knm: Knm) -> P:
    return cls(CarrierContext(knm.store.db, knm.settings))


def _number(knm: Knm, module: str, **public: Any) -> PhoneNumber:
    """A number of ``module``'s bought through knm, in service, with ``public`` fields."""
    pn = bought(knm, module)
    assert pn.state == NumberState.IN_SERVICE
    pn.public = dict(public)
    return pn


# ============================================================================ the fakes' views
#: Marks the tests' own reads of a fake (not counted by ``_feature_requests``).
VIEW = {"view": "test"}


def _telnyx(env: dict[str, str], path: str) -> Any:
    """What the fake Telnyx answers to ``GET <path>`` (its own view, not knm's)."""
    response = httpx.get(
        env["KNM_CARRIERS__TELNYX__BASE_URL"] + path,
        headers={"x-api-user": SANDBOX_USER, "x-api-token": SANDBOX_SECRET},
        params={"per_page": 1000, **VIEW},
    )
    assert response.status_code == 200, response.text
    return response.json()


def _settings(env: dict[str, str], number: str) -> dict[str, Any]:
    return dict(_telnyx(env, "numbers/" + quote(number, safe="")))


def _addresses(env: dict[str, str]) -> list[dict[str, Any]]:
    return list(_telnyx(env, "e911_addresses"))


def _e911getinfo(env: dict[str, str], number: str) -> str:
    response = httpx.post(
        env["KNM_CARRIERS__VITELITY__BASE_URL"],
        params={
            "cmd": "e911getinfo",
            "did": number[2:],
            "xml": "yes",
            "login": SANDBOX_USER,
            "pass": SANDBOX_SECRET,
            **VIEW,
        },
    )
    return response.text


def _feature_requests(sandbox: SandboxClient, provider: str) -> dict[str, int]:
    """The fake's request counts by endpoint, without the purchase's search and order and
    without this module's own reads of the fake's view."""
    return dict(
        Counter(
            call["endpoint"]
            for call in sandbox.calls()
            if call["provider"] == provider
            and call["endpoint"] not in ("search", "order")
            and call["query"].get("view") != "test"
        )
    )


def _calls(sandbox: SandboxClient, endpoint: str) -> list[dict[str, Any]]:
    return [call for call in sandbox.calls() if call["endpoint"] == endpoint]


# ============================================================================ Telnyx E911
def test_telnyx_e911_lifecycle(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    provider = _provider(TelnyxE911Provider, knm)
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    number = pn.number

    # set: an address is created and assigned upstream; the feature holds the user's address
    provider.save(pn, FCTX)
    first = pn.carrier_data["address_id"]
    assert pn.features["e911"] == MARINA
    assert pn.carrier_data["order_id"]  # the purchase's data is kept
    assert _feature_requests(sandbox, "telnyx") == {"e911_create": 1, "e911_settings": 1}
    (create,) = _calls(sandbox, "e911_create")
    assert json.loads(create["body"]) == {
        "business_name": "Valued Customer",
        "city": "SAN FRANCISCO",
        "state": "CA",
        "postal_code": "94123",
        "line_1": "301 MARINA BLVD",
    }
    assert [a["id"] for a in _addresses(sandbox_env)] == [first]
    settings = _settings(sandbox_env, number)
    assert (settings["e911_enabled"], settings["e911_address_id"]) == (True, first)
    doc = ledger(knm, "knm_telnyx_e911", number)
    assert (doc["action"], doc["status"], doc["request_id"]) == (
        "activate",
        "done",
        FCTX.request_id,
    )
    assert doc["result"] == {"address_id": first, "address": MARINA}

    # the same address again: no HTTP
    provider.save(pn, FCTX)
    assert _feature_requests(sandbox, "telnyx") == {"e911_create": 1, "e911_settings": 1}

    # changed: a new address, assigned, the old one deleted, address_id replaced
    moved = {**MARINA, "street_address": "1 Ferry Building", "extended_address": "Suite 200"}
    pn.public = {"e911": moved}
    provider.save(pn, FeatureContext(request_id="req-moved"))
    second = pn.carrier_data["address_id"]
    assert second != first
    assert pn.features["e911"] == moved
    assert [(a["id"], a["line_2"]) for a in _addresses(sandbox_env)] == [(second, "SUITE 200")]
    assert _settings(sandbox_env, number)["e911_address_id"] == second
    assert _feature_requests(sandbox, "telnyx") == {
        "e911_create": 2,
        "e911_settings": 2,
        "e911_delete": 1,
    }
    (delete,) = _calls(sandbox, "e911_delete")
    assert delete["path"] == f"/origination/e911_addresses/{first}"

    # removed: unassigned upstream, the address deleted, the feature and its id gone
    pn.public = {}
    provider.save(pn, FeatureContext(request_id="req-removed"))
    assert "e911" not in pn.features
    assert "address_id" not in pn.carrier_data
    settings = _settings(sandbox_env, number)
    assert (settings["e911_enabled"], settings["e911_address_id"]) == (False, None)
    assert _addresses(sandbox_env) == []
    unassign = _calls(sandbox, "e911_settings")[-1]
    assert json.loads(unassign["body"]) == {"e911_enabled": False, "e911_address_id": None}
    assert ledger(knm, "knm_telnyx_e911", number)["action"] == "deactivate"


def test_telnyx_e911_delete_deprovisions_upstream(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    provider = _provider(TelnyxE911Provider, knm)
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    provider.save(pn, FCTX)
    address = pn.carrier_data["address_id"]
    provider.delete(pn, FeatureContext())  # a release
    assert "e911" not in pn.features
    assert _settings(sandbox_env, pn.number)["e911_address_id"] is None
    assert _addresses(sandbox_env) == []
    assert _calls(sandbox, "e911_delete")[-1]["path"].endswith(address)


def test_telnyx_e911_dry_run_and_sandbox_provisioning_send_nothing(
    knm: Knm,
    mongo_db: Database[dict[str, Any]],
    sandbox: SandboxClient,
    sandbox_env: dict[str, str],
) -> None:
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    _provider(TelnyxE911Provider, knm).save(pn, FeatureContext(dry_run=True))
    assert pn.features["e911"] == MARINA
    pretending = knm_with_carrier(mongo_db, "telnyx", sandbox_provisioning=True)
    pn.public = {"e911": {**MARINA, "postal_code": "94124"}}
    _provider(TelnyxE911Provider, pretending).save(pn, FCTX)
    assert pn.features["e911"]["postal_code"] == "94124"
    assert "address_id" not in pn.carrier_data
    assert _feature_requests(sandbox, "telnyx") == {}


def test_telnyx_e911_503_then_200_creates_one_address(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    sandbox.fault("status", provider="telnyx", match="e911_create", status=503, retry_after=0)
    _provider(TelnyxE911Provider, knm).save(pn, FCTX)
    assert _feature_requests(sandbox, "telnyx") == {"e911_create": 2, "e911_settings": 1}
    assert [a["id"] for a in _addresses(sandbox_env)] == [pn.carrier_data["address_id"]]


def test_telnyx_e911_lost_create_answer_is_reconciled_not_created_twice(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    sandbox.fault("stall_after", provider="telnyx", match="e911_create", stall_s=2.5)
    _provider(TelnyxE911Provider, knm).save(pn, FCTX)
    # the create took effect, its answer timed out: the address list was asked, not re-created
    assert _feature_requests(sandbox, "telnyx") == {
        "e911_create": 1,
        "e911_list": 1,
        "e911_settings": 1,
    }
    (address,) = _addresses(sandbox_env)
    assert pn.carrier_data["address_id"] == address["id"]
    assert _settings(sandbox_env, pn.number)["e911_address_id"] == address["id"]
    assert pn.features["e911"] == MARINA


def test_telnyx_e911_lost_assignment_answer_is_read_back(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_telnyx", e911=dict(MARINA))
    sandbox.fault("stall_after", provider="telnyx", match="e911_settings", stall_s=2.5)
    _provider(TelnyxE911Provider, knm).save(pn, FCTX)
    # the number's settings showed the address assigned: nothing was sent again
    assert _feature_requests(sandbox, "telnyx") == {
        "e911_create": 1,
        "e911_settings": 1,
        "number": 1,
    }
    assert _settings(sandbox_env, pn.number)["e911_address_id"] == pn.carrier_data["address_id"]


def test_telnyx_e911_refused_address_is_unspecified_and_changes_nothing(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_telnyx", e911={**MARINA, "postal_code": "9412"})
    with pytest.raises(KnmError) as caught:
        _provider(TelnyxE911Provider, knm).save(pn, FCTX)
    error = caught.value.to_json()
    assert error["error"] == "unspecified_fault"
    assert json.loads(error["message"])["message"] == "Address could not be validated"
    assert error["cause"] == pn.number
    assert "e911" not in pn.features
    assert _feature_requests(sandbox, "telnyx") == {"e911_create": 1}
    assert ledger(knm, "knm_telnyx_e911", pn.number)["status"] == "failed"


# ============================================================================ Telnyx CNAM
def test_telnyx_cnam_outbound_and_inbound_on_and_off(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    provider = _provider(TelnyxCnamProvider, knm)
    pn = _number(knm, "knm_telnyx", cnam={"display_name": "KAZOO", "inbound_lookup": True})
    provider.save(pn, FCTX)
    assert pn.features == {
        "outbound_cnam": {"display_name": "KAZOO"},
        "inbound_cnam": {"inbound_lookup": True},
    }
    settings = _settings(sandbox_env, pn.number)
    assert settings["cnam_listing_details"] == "KAZOO"
    assert settings["enable_caller_id_name"] is True
    assert [json.loads(c["body"]) for c in _calls(sandbox, "number_update")] == [
        {"cnam_listing_details": "KAZOO", "enable_caller_id_name": True},
        {"enable_caller_id_name": True},
    ]
    provider.save(pn, FCTX)  # unchanged
    assert _feature_requests(sandbox, "telnyx") == {"number_update": 2}

    pn.public = {"cnam": {"display_name": "KAZOO", "inbound_lookup": False}}
    provider.save(pn, FCTX)
    assert _settings(sandbox_env, pn.number)["enable_caller_id_name"] is False
    assert pn.features == {"outbound_cnam": {"display_name": "KAZOO"}}

    pn.public = {"cnam": {"display_name": "NEW NAME", "inbound_lookup": True}}
    provider.save(pn, FCTX)
    assert _settings(sandbox_env, pn.number)["cnam_listing_details"] == "NEW NAME"
    provider.delete(pn, FCTX)  # off: caller-ID name disabled upstream, features removed
    assert _settings(sandbox_env, pn.number)["enable_caller_id_name"] is False
    assert pn.features == {}
    assert json.loads(_calls(sandbox, "number_update")[-1]["body"]) == {
        "enable_caller_id_name": False
    }


def test_telnyx_cnam_lost_answer_is_read_back(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_telnyx", cnam={"display_name": "KAZOO"})
    sandbox.fault("stall_after", provider="telnyx", match="number_update", stall_s=2.5)
    _provider(TelnyxCnamProvider, knm).save(pn, FCTX)
    assert _feature_requests(sandbox, "telnyx") == {"number_update": 1, "number": 1}
    assert pn.features == {"outbound_cnam": {"display_name": "KAZOO"}}


# ============================================================================ Vitelity E911
def test_vitelity_e911_lifecycle(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    provider = _provider(VitelityE911Provider, knm)
    pn = _number(knm, "knm_vitelity", e911=dict(MAIN_ST))
    number = pn.number
    provider.save(pn, FCTX)
    assert pn.features["e911"] == MAIN_ST  # QUIRK fixed: the address, not Vitelity's answer
    (send,) = _calls(sandbox, "e911_send")
    assert send["method"] == "POST"
    assert send["body"] == ""
    assert send["query"] == {
        "did": number[2:],
        "name": "Jo Smith",
        "address": "140 Main St",
        "unittype": "Apt",
        "unitnumber": "5",
        "city": "Lake Lure",
        "state": "NC",
        "zip": "28746",
        "xml": "yes",
        "cmd": "e911send",
    }
    assert "<address>140 Main St</address>" in _e911getinfo(sandbox_env, number)
    assert ledger(knm, "knm_vitelity_e911", number)["status"] == "done"

    provider.save(pn, FCTX)  # unchanged: nothing
    assert _feature_requests(sandbox, "vitelity") == {"e911_send": 1}

    # an abbreviated state and no extended address (QUIRKs fixed: KAZOO dropped the state,
    # which the provider refuses, and crashed without an extended address)
    moved = {
        "street_address": "2 Oak Ave",
        "locality": "Austin",
        "region": "TX",
        "postal_code": "73301",
    }
    pn.public = {"e911": moved}
    provider.save(pn, FeatureContext(request_id="req-moved"))
    query = _calls(sandbox, "e911_send")[-1]["query"]
    assert (query["state"], "unittype" in query) == ("TX", False)
    assert "<city>Austin</city>" in _e911getinfo(sandbox_env, number)

    pn.public = {}
    provider.save(pn, FeatureContext(request_id="req-removed"))
    assert "e911" not in pn.features
    assert _feature_requests(sandbox, "vitelity") == {"e911_send": 2, "e911_delete": 1}
    assert "<error>none</error>" in _e911getinfo(sandbox_env, number)


def test_vitelity_e911_lost_answer_is_read_back(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_vitelity", e911=dict(MAIN_ST))
    sandbox.fault("stall_after", provider="vitelity", match="e911_send", stall_s=2.5)
    _provider(VitelityE911Provider, knm).save(pn, FCTX)
    assert _feature_requests(sandbox, "vitelity") == {"e911_send": 1, "e911_info": 1}
    assert pn.features["e911"] == MAIN_ST


def test_vitelity_e911_refusal_is_unspecified(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = _number(knm, "knm_vitelity", e911={**MAIN_ST, "region": "Narnia"})
    with pytest.raises(KnmError) as caught:
        _provider(VitelityE911Provider, knm).save(pn, FCTX)
    assert caught.value.to_json()["message"] == "invalid state"
    assert caught.value.to_json()["cause"] == pn.number
    assert "e911" not in pn.features


# ============================================================================ Vitelity CNAM
def test_vitelity_cnam_outbound_and_inbound_on_and_off(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    provider = _provider(VitelityCnamProvider, knm)
    pn = _number(knm, "knm_vitelity", cnam={"display_name": "ACME CO", "inbound_lookup": True})
    did = pn.number[2:]
    provider.save(pn, FCTX)
    assert pn.features == {
        "outbound_cnam": {"display_name": "ACME CO"},
        "inbound_cnam": {"inbound_lookup": True},
    }
    assert [c["query"] for c in _calls(sandbox, "lidb")] == [
        {"cmd": "lidb", "did": did, "name": "ACME CO", "xml": "yes"}
    ]
    assert [c["query"]["cmd"] for c in _calls(sandbox, "cnam_enable")] == ["cnamenable"]
    provider.save(pn, FCTX)  # unchanged: nothing (KAZOO re-sent cnamenable)
    assert _feature_requests(sandbox, "vitelity") == {"lidb": 1, "cnam_enable": 1}

    pn.public = {"cnam": {"display_name": "ACME CO"}}
    provider.save(pn, FCTX)
    assert _feature_requests(sandbox, "vitelity") == {
        "lidb": 1,
        "cnam_enable": 1,
        "cnam_disable": 1,
    }
    assert pn.features == {"outbound_cnam": {"display_name": "ACME CO"}}

    pn.public = {"cnam": {"inbound_lookup": True}}
    provider.save(pn, FCTX)
    assert pn.features == {"inbound_cnam": {"inbound_lookup": True}}
    provider.delete(pn, FCTX)
    assert _feature_requests(sandbox, "vitelity")["cnam_disable"] == 2
    assert pn.features == {}


def test_vitelity_features_need_the_did_on_the_account(
    knm: Knm, sandbox: SandboxClient, sandbox_env: dict[str, str]
) -> None:
    pn = PhoneNumber.new("+14155550199", "knm_vitelity", modules=MODULES)
    pn.state = NumberState.IN_SERVICE
    pn.public = {"cnam": {"display_name": "ACME CO"}}
    with pytest.raises(KnmError) as caught:
        _provider(VitelityCnamProvider, knm).save(pn, FCTX)
    assert caught.value.to_json()["message"] == "DID 4155550199 is not on this account"
    assert pn.features == {}
