"""``lookup_account``'s properties and ``is_force_outbound`` without a store.

The integration tests (tests/integration/test_lookup_billing.py) run the same facts through the
store with KAZOO's fixture documents; these pin the rules themselves, setting by setting.
"""

from __future__ import annotations

from typing import Any

import pytest

from carriers.registry import default_registry
from config.settings import Settings
from knm.domain.number import NumberState, PhoneNumber
from knm.services import billing
from knm.services.lookup import (
    LookupResult,
    _cnam_lookup,
    feature_inbound_cnam,
    feature_prepend,
    is_force_outbound,
    number_props,
    port_result,
)
from tests.fixtures_kazoo import MODULES

S = NumberState
RESELLER = "account0000000000000000000000002"
NUM = "+15551233322"


def pn(
    module: str = "knm_local",
    state: NumberState = S.IN_SERVICE,
    features: dict[str, Any] | None = None,
    number: str = NUM,
) -> PhoneNumber:
    record = PhoneNumber.new(number, module, modules=MODULES)
    record.state = state
    record.assigned_to = RESELLER
    for key, value in (features or {}).items():
        record.features[key] = value
    return record


def settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


CNAM = _cnam_lookup(default_registry())


# ------------------------------------------------------------------------------ force_outbound
@pytest.mark.parametrize(
    ("module", "state", "expected"),
    [
        ("knm_local", S.PORT_IN, True),  # local + port_in
        ("knm_vitelity", S.IN_SERVICE, False),
        ("knm_local", S.IN_SERVICE, True),
        ("knm_mdn", S.IN_SERVICE, True),
        ("knm_pacwest", S.IN_SERVICE, False),  # no such module
        ("knm_bandwidth2", S.PORT_IN, True),
        ("knm_telnyx", S.PORT_OUT, True),
        ("knm_local", S.RESERVED, True),
        ("knm_telnyx", S.RESERVED, False),
    ],
)
def test_force_outbound_defaults(module: str, state: NumberState, expected: bool) -> None:
    assert is_force_outbound(pn(module, state), settings()) is expected


@pytest.mark.parametrize("module", ["knm_local", "knm_mdn"])
def test_local_numbers_follow_force_local_outbound_not_their_feature(module: str) -> None:
    number = pn(module, features={"force_outbound": True})
    assert is_force_outbound(number, settings(force_local_outbound=False)) is False
    number = pn(module, features={"force_outbound": False})
    assert is_force_outbound(number, settings(force_local_outbound=True)) is True


@pytest.mark.parametrize(
    ("feature", "default", "expected"),
    [
        (True, False, True),
        ("true", False, True),
        (False, True, False),  # the feature wins over default_force_outbound
        ("blabla", True, False),
    ],
)
def test_carrier_numbers_use_their_feature(feature: Any, default: bool, expected: bool) -> None:
    number = pn("knm_telnyx", features={"force_outbound": feature})
    assert is_force_outbound(number, settings(default_force_outbound=default)) is expected


@pytest.mark.parametrize("default", [True, False])
def test_without_the_feature_default_force_outbound_decides(default: bool) -> None:
    number = pn("knm_telnyx")
    assert is_force_outbound(number, settings(default_force_outbound=default)) is default


@pytest.mark.parametrize(
    ("state", "knob"),
    [(S.PORT_IN, "force_port_in_outbound"), (S.PORT_OUT, "force_port_out_outbound")],
)
def test_porting_states(state: NumberState, knob: str) -> None:
    off = {knob: False}
    # the porting knob alone forces any module
    assert is_force_outbound(pn("knm_bandwidth2", state), settings(**{knob: True})) is True
    # without it: local modules still follow force_local_outbound, others are not forced ...
    assert is_force_outbound(pn("knm_local", state), settings(**off)) is True
    assert is_force_outbound(pn("knm_mdn", state), settings(**off)) is True
    assert (
        is_force_outbound(pn("knm_local", state), settings(**off, force_local_outbound=False))
        is False
    )
    # ... not even by their own force_outbound feature (KAZOO ignores it in porting states)
    forced = pn("knm_bandwidth2", state, {"force_outbound": True})
    assert is_force_outbound(forced, settings(**off)) is False


# ------------------------------------------------------------------------------ properties
def test_props_of_a_local_in_service_number() -> None:
    assert number_props(pn(), settings(), CNAM) == {
        "pending_port": False,
        "local": True,
        "number": NUM,
        "account_id": RESELLER,
        "inbound_cnam": False,
        "force_outbound": True,
    }


def test_mdn_is_not_local_for_routing_gap_16() -> None:
    props = number_props(pn("knm_mdn"), settings(), CNAM)
    assert props["local"] is False
    assert props["force_outbound"] is True


def test_pending_port_follows_port_in() -> None:
    assert number_props(pn(state=S.PORT_IN), settings(), CNAM)["pending_port"] is True
    assert number_props(pn(state=S.PORT_OUT), settings(), CNAM)["pending_port"] is False


@pytest.mark.parametrize(
    ("prepend", "expected"),
    [
        ({"enabled": True, "name": "Vitelity", "number": "+1"}, "Vitelity"),
        ({"enabled": "true", "name": "pre"}, "pre"),
        ({"enabled": False, "name": "off"}, None),
        ({"name": "no flag"}, None),
        ({"enabled": True, "name": ""}, None),
        ({"enabled": True}, None),
    ],
)
def test_prepend(prepend: dict[str, Any], expected: str | None) -> None:
    number = pn(features={"prepend": prepend})
    assert feature_prepend(number) == expected
    props = number_props(number, settings(), CNAM)
    assert props.get("prepend") == expected
    assert ("prepend" in props) is (expected is not None)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("knm_local", True),
        ("knm_telnyx", True),
        ("knm_vitelity", False),  # should_lookup_cnam is false
        ("knm_pacwest", True),  # no such module: true
    ],
)
def test_inbound_cnam_needs_the_feature_and_the_carrier(module: str, expected: bool) -> None:
    with_feature = pn(module, features={"inbound_cnam": {"inbound_lookup": True}})
    assert feature_inbound_cnam(with_feature, CNAM) is expected
    assert feature_inbound_cnam(pn(module), CNAM) is False


def test_ringback_media() -> None:
    number = pn(features={"ringback": {"early": "media_early", "transfer": "media_transfer"}})
    props = number_props(number, settings(), CNAM)
    assert (props["ringback_media"], props["transfer_media"]) == ("media_early", "media_transfer")
    only_early = number_props(pn(features={"ringback": {"early": "e"}}), settings(), CNAM)
    assert only_early["ringback_media"] == "e"
    assert "transfer_media" not in only_early


def test_port_result_is_kazoos_fixed_properties() -> None:
    result = port_result("+19042471591", RESELLER)
    assert result.ok
    assert result.account_id == RESELLER
    assert result.to_json() == {
        "pending_port": True,
        "local": True,
        "number": "+19042471591",
        "account_id": RESELLER,
        "inbound_cnam": False,
        "force_outbound": True,
    }


def test_error_json() -> None:
    assert LookupResult(number=NUM, error="unassigned").to_json() == {"error": "unassigned"}
    failed = LookupResult(number=NUM, error="not_in_service", assigned_to=RESELLER)
    assert not failed.ok
    assert failed.to_json() == {"error": "not_in_service", "assigned_to": RESELLER}


# ------------------------------------------------------------------------------ billing.count
def test_billing_count_without_a_store() -> None:
    numbers = [
        pn("knm_local"),
        pn("knm_mdn", number="+15551233324"),
        pn(
            "knm_telnyx",
            features={"e911": {"street": "x"}, "outbound_cnam": {"display_name": "K"}},
            number="+14352154006",
        ),
        pn("knm_telnyx", number="+18005551212"),
    ]
    assert billing.count(numbers, settings().classifiers) == {
        "phone_numbers": {"did_us": 1, "tollfree_us": 1},
        "number_carriers": {"knm_local": 1, "knm_mdn": 1, "knm_telnyx": 2},
        "number_services": {"e911": 1, "local": 2, "outbound_cnam": 1},
        "billable": 2,
    }


def test_billing_unclassified_numbers_count_as_unknown() -> None:
    counted = billing.count([pn("knm_telnyx")], {"tollfree_us": {"regex": "^\\+1800"}})
    assert counted["phone_numbers"] == {"unknown": 1}
    assert counted["billable"] == 1
