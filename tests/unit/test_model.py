"""The number document and KAZOO's ``knm_phone_number_tests``.

The OLD* fixtures are written in KAZOO's format (``pvt_module_name``, Gregorian-second integer
timestamps, ``_rev``, ``pvt_db_name``, legacy keys), as the eunit suite reads them from its fixture
database. knm's mapping: ``pvt_carrier_module`` replaces ``pvt_module_name`` (the
alias is read and migrated without dirtying), timestamps become UTC datetimes, and ``_rev``,
``pvt_db_name``, ``pvt_authorizing_account`` and unknown ``pvt_*`` keys are dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from knm.domain.number import (
    GREGORIAN_UNIX_OFFSET,
    NumberState,
    PhoneNumber,
    from_gregorian_seconds,
    to_gregorian_seconds,
    utcnow,
)
from knm.domain.public_fields import deep_merge, is_public_key, sanitize_public
from tests.fixtures_kazoo import MODULES

MASTER = "account0000000000000000000000001"
RESELLER = "account0000000000000000000000002"
CHILD = "account0000000000000000000000003"
OTHER_OWNER = "4b8c6fec4b2597882c0390202d195419"

OLD1_NUM = "+15045551226"
OLD1_1_NUM = "+15045551227"
OLD2_NUM = "+12014370855"
OLD2_1_NUM = "+12014370856"
OLD2_2_NUM = "+12014370857"
OLD3_NUM = "+14082141750"
OLD3_1_NUM = "+14082141751"
OLD4_NUM = "+14242424247"
OLD4_1_NUM = "+14242424248"
OLD5_NUM = "+19377038880"
OLD5_1_NUM = "+19377038881"
OLD6_NUM = "+12156774700"
OLD7_NUM = "+13977031887"
OLD7_1_NUM = "+13977031888"

DROPPED_KEYS = (
    "_rev",
    "pvt_db_name",
    "pvt_authorizing_account",
    "pvt_number_state",
    "pvt_module_name",
    "pvt_resource_db",
    "pvt_features_available",
    "pvt_is_billable",
)


def greg(seconds: int) -> datetime:
    return from_gregorian_seconds(seconds)


# ==================================================================================== fixtures
# Fresh dicts every time: a test may not leak mutations into another.

_UI_322 = {"origin": "common", "ui": "monster-ui", "version": "3.22-34"}
_UI_40 = {"origin": "common", "ui": "monster-ui", "version": "4.0-3"}

_E911_GEARY = {
    "extended_address": "",
    "locality": "SAN FRANCISCO",
    "postal_code": "94108-5630",
    "region": "CA",
    "street_address": "140 GEARY ST",
}

_E911_MAIN_ST = {
    "caller_name": "Valued Customer",
    "latitude": "40.05424",
    "legacy_data": {"house_number": "23", "predirectional": "N", "streetname": "MAIN ST"},
    "locality": "PLEASANT SIDE",
    "location_id": "32379723",
    "longitude": "-87.34416",
    "plus_four": "8001",
    "postal_code": "55359",
    "region": "KZ",
    "status": "PROVISIONED",
    "street_address": "23 N MAIN ST",
}

_CARRIER_DATA_BW = {
    "number": "+14082141750",
    "order_id": "6c7e81e558cc48e1a55c783ff06244cc",
    "order_name": "avaya-63646110391",
    "rate_center": {"lata": "722", "name": "SAN MARTIN", "state": "CA"},
}


def old1() -> dict[str, Any]:
    """knm_local, in_service, timestamps are the string "undefined", no pvt_features."""
    return {
        "_id": OLD1_NUM,
        "_rev": "156-f8653b9aed4756a3bb512a734b620a7e",
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": RESELLER,
        "pvt_created": "undefined",
        "pvt_db_name": "numbers%2F%2B1504",
        "pvt_features_available": ["cnam", "e911", "failover", "port", "prepend"],
        "pvt_modified": "undefined",
        "pvt_module_name": "knm_local",
        "pvt_ported_in": False,
        "pvt_state": "in_service",
        "pvt_type": "number",
    }


def old1_1() -> dict[str, Any]:
    """As OLD1 with valid integer timestamps."""
    doc = old1()
    doc.update(
        {
            "_id": OLD1_1_NUM,
            "_rev": "11-f8653b9aed4756a3bb512a734b620a7e",
            "pvt_created": 63648122255,
            "pvt_modified": 63648133355,
        }
    )
    return doc


def old2_1() -> dict[str, Any]:
    """knm_pacwest (no such module), pvt_state in_service, 3.22 empty feature list."""
    return {
        "_id": OLD2_1_NUM,
        "_rev": "21-655c1bdd4196b001963eb78541a53165",
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": "e4af2616e751955027c71fec039c6b11",
        "pvt_created": 63637990840,
        "pvt_db_name": "numbers%2F%2B1201",
        "pvt_features": [],
        "pvt_modified": 63637990853,
        "pvt_module_name": "knm_pacwest",
        "pvt_reserve_history": [RESELLER],
        "pvt_resource_db": "account%2Faa%2Fc9%2F151d9c1319c46f2677eeae2958f6",
        "pvt_state": "in_service",
        "pvt_type": "number",
        "ui_metadata": dict(_UI_322),
        "used_by": "",
    }


def old2() -> dict[str, Any]:
    """As OLD2_1 but with the legacy ``pvt_number_state`` key instead of ``pvt_state``."""
    doc = old2_1()
    del doc["pvt_state"]
    doc.update({"_id": OLD2_NUM, "_rev": "2-655c", "pvt_number_state": "in_service"})
    return doc


def old2_2() -> dict[str, Any]:
    """As OLD2_1 with the legacy ``wnm_pacwest`` module name."""
    doc = old2_1()
    doc.update({"_id": OLD2_2_NUM, "pvt_module_name": "wnm_pacwest"})
    return doc


def old3_1() -> dict[str, Any]:
    """knm_bandwidth2, in_service, pvt e911, public e911 and stale public ``used_by``."""
    return {
        "_id": OLD3_1_NUM,
        "_rev": "5-d8c63d6bdc3e8376e9ffe157904ce114",
        "e911": dict(_E911_GEARY),
        "features": ["e911"],
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": RESELLER,
        "pvt_carrier_data": copy.deepcopy(_CARRIER_DATA_BW),
        "pvt_created": 63646110391,
        "pvt_db_name": "numbers%2F%2B1408",
        "pvt_features": {"e911": dict(_E911_GEARY)},
        "pvt_features_available": ["cnam", "dash_e911", "failover", "port", "prepend", "e911"],
        "pvt_modified": 63646110391,
        "pvt_module_name": "knm_bandwidth2",
        "pvt_state": "in_service",
        "pvt_type": "number",
        "pvt_used_by": "callflow",
        "state": "in_service",
        "ui_metadata": dict(_UI_40),
        "used_by": "callflow",
    }


def old3() -> dict[str, Any]:
    """As OLD3_1 with the legacy ``wnm_bandwidth`` module name."""
    doc = old3_1()
    doc.update({"_id": OLD3_NUM, "pvt_module_name": "wnm_bandwidth"})
    return doc


def old4() -> dict[str, Any]:
    """wnm_local, reserved, 3.22 empty feature list, public legacy ``dash_e911``."""
    return {
        "AintThey": "pretty",
        "MyField": [{"my": "vals"}, 41, 2],
        "_id": OLD4_NUM,
        "_rev": "1-62ac91830bae51385cb4c6d56f294444",
        "dash_e911": {"caller_name": "Moua"},
        "pvt_assigned_to": OTHER_OWNER,
        "pvt_authorizing_account": OTHER_OWNER,
        "pvt_created": 63627551737,
        "pvt_db_name": "numbers%2F%2B1424",
        "pvt_features": [],
        "pvt_modified": 63627551739,
        "pvt_module_name": "wnm_local",
        "pvt_reserve_history": [OTHER_OWNER],
        "pvt_resource_db": "account%2F4b%2F8c%2F6fec4b2597882c0390202d195419",
        "pvt_state": "reserved",
        "pvt_type": "number",
        "used_by": "",
    }


def old4_1() -> dict[str, Any]:
    """The migrated shape of OLD4: knm_local with pvt ``{e911, local}`` and public e911."""
    return {
        "AintThey": "pretty",
        "MyField": [{"my": "vals"}, 41, 2],
        "_id": OLD4_1_NUM,
        "_rev": "41-62ac91830bae51385cb4c6d56f294444",
        "e911": {"caller_name": "Moua"},
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": RESELLER,
        "pvt_created": 63627551737,
        "pvt_db_name": "numbers%2F%2B1424",
        "pvt_features": {"e911": {"caller_name": "Moua"}, "local": {}},
        "pvt_modified": 63627551739,
        "pvt_module_name": "knm_local",
        "pvt_reserve_history": [RESELLER],
        "pvt_state": "reserved",
        "pvt_type": "number",
        "used_by": "",
    }


def old5() -> dict[str, Any]:
    """knm_bandwidth2 with pvt ``dash_e911`` + CNAM, no created/modified, public used_by."""
    return {
        "_id": OLD5_NUM,
        "_rev": "7-62ac91830bae51385cb4c6d56f29aaaa",
        "cnam": {"display_name": "Bruce Wayne", "inbound_lookup": True},
        "dash_e911": copy.deepcopy(_E911_MAIN_ST),
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": "system",
        "pvt_db_name": "numbers%2F%2B1937",
        "pvt_features": {
            "dash_e911": copy.deepcopy(_E911_MAIN_ST),
            "inbound_cnam": {"inbound_lookup": True},
            "outbound_cnam": {"display_name": "Bruce Wayne"},
        },
        "pvt_features_allowed": ["failover", "force_outbound", "prepend", "ringback"],
        "pvt_features_denied": ["failover"],
        "pvt_is_billable": True,
        "pvt_module_name": "knm_bandwidth2",
        "pvt_ported_in": False,
        "pvt_state": "in_service",
        "pvt_type": "number",
        "state": "in_service",
        "ui_metadata": {"ui": "kazoo-ui", "version": "3.14-1"},
        "used_by": "trunkstore",
    }


def old5_1() -> dict[str, Any]:
    """The migrated shape of OLD5: pvt ``e911`` and a public e911 equal to ``dash_e911``."""
    return {
        "_id": OLD5_1_NUM,
        "_rev": "2-baaaaaa30bae51385cb4c6d56f294444",
        "cnam": {"display_name": "Bruce Wayne", "inbound_lookup": True},
        "dash_e911": copy.deepcopy(_E911_MAIN_ST),
        "e911": copy.deepcopy(_E911_MAIN_ST),
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": "system",
        "pvt_created": 63606025486,
        "pvt_db_name": "numbers%2F%2B1937",
        "pvt_features": {
            "e911": copy.deepcopy(_E911_MAIN_ST),
            "inbound_cnam": {"inbound_lookup": True},
            "outbound_cnam": {"display_name": "Bruce Wayne"},
        },
        "pvt_features_denied": ["failover"],
        "pvt_is_billable": True,
        "pvt_modified": 63648435293,
        "pvt_module_name": "knm_bandwidth2",
        "pvt_ported_in": False,
        "pvt_state": "in_service",
        "pvt_type": "number",
        "state": "in_service",
        "ui_metadata": {"ui": "kazoo-ui", "version": "3.14-1"},
    }


def old6() -> dict[str, Any]:
    """A consistent knm_local trunkstore number with failover and prepend."""
    return {
        "_id": OLD6_NUM,
        "_rev": "5-186632bd3e625192146941105c33522f",
        "failover": {"sip": "sip:blipblop@158.85.21.24"},
        "features": ["local", "failover"],
        "prepend": {"enabled": True, "number": "56100"},
        "pvt_assigned_to": RESELLER,
        "pvt_authorizing_account": "system",
        "pvt_created": 63640935218,
        "pvt_db_name": "numbers%2F%2B1215",
        "pvt_features": {
            "failover": {"sip": "sip:blipblop@158.85.21.24"},
            "local": {},
            "prepend": {"enabled": True, "number": "56100"},
        },
        "pvt_modified": 63640935218,
        "pvt_module_name": "knm_local",
        "pvt_state": "in_service",
        "pvt_type": "number",
        "pvt_used_by": "trunkstore",
        "state": "in_service",
        "used_by": "trunkstore",
    }


def old7() -> dict[str, Any]:
    """knm_local owned by CHILD with pvt CNAM features but no public cnam."""
    return {
        "_id": OLD7_NUM,
        "_rev": "37-62ac91830bae51385cb4c6d56aaaaaab",
        "pvt_assigned_to": CHILD,
        "pvt_created": 63606025000,
        "pvt_db_name": "numbers%2F%2B1397",
        "pvt_features": {
            "inbound_cnam": {"inbound_lookup": True},
            "local": {},
            "outbound_cnam": {"display_name": "Bruce Wayne"},
        },
        "pvt_modified": 63606025001,
        "pvt_module_name": "knm_local",
        "pvt_ported_in": False,
        "pvt_state": "in_service",
        "pvt_type": "number",
        "pvt_used_by": "callflow",
    }


def old7_1() -> dict[str, Any]:
    """knm_vitelity owned by RESELLER, public and pvt CNAM consistent."""
    return {
        "_id": OLD7_1_NUM,
        "_rev": "37-62ac91830bae51385cb4c6d56aaaaaab",
        "cnam": {"display_name": "Bruce Wayne", "inbound_lookup": True},
        "pvt_assigned_to": RESELLER,
        "pvt_created": 63606025000,
        "pvt_db_name": "numbers%2F%2B1397",
        "pvt_features": {
            "inbound_cnam": {"inbound_lookup": True},
            "outbound_cnam": {"display_name": "Bruce Wayne"},
        },
        "pvt_modified": 63606025001,
        "pvt_module_name": "knm_vitelity",
        "pvt_ported_in": False,
        "pvt_state": "in_service",
        "pvt_type": "number",
    }


NOT_DIRTY_FIXTURES: dict[str, Callable[[], dict[str, Any]]] = {
    "OLD1_1": old1_1,
    "OLD2_1": old2_1,
    "OLD3_1": old3_1,
    "OLD4_1": old4_1,
    "OLD5_1": old5_1,
    "OLD6": old6,
    "OLD7": old7,
    "OLD7_1": old7_1,
}
DIRTY_FIXTURES: dict[str, Callable[[], dict[str, Any]]] = {
    "OLD1": old1,
    "OLD2": old2,
    "OLD2_2": old2_2,
    "OLD3": old3,
    "OLD4": old4,
    "OLD5": old5,
}


def load(doc: dict[str, Any], default_module: str = "knm_local") -> PhoneNumber:
    modules = replace(MODULES, default=default_module)
    return PhoneNumber.from_document(copy.deepcopy(doc), modules)


def public_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if is_public_key(k)}


def clean() -> PhoneNumber:
    """A loaded, not dirty number whose ``modified`` is in 2016."""
    pn = load(old6())
    assert not pn.dirty
    return pn


# =========================================================================== knm_phone_number_tests
class TestOld1Dot1:
    def test_not_dirty_and_timestamps_preserved(self) -> None:
        pn = load(old1_1())
        doc = pn.to_document()
        assert pn.dirty is False
        assert pn.created == greg(63648122255)
        assert pn.modified == greg(63648133355)
        assert doc["pvt_created"] == greg(63648122255)
        assert doc["pvt_modified"] == greg(63648133355)
        assert to_gregorian_seconds(doc["pvt_created"]) == 63648122255
        assert to_gregorian_seconds(doc["pvt_modified"]) == 63648133355

    def test_local_marker_added_silently(self) -> None:
        pn = load(old1_1())
        assert pn.features == {"local": {}}
        assert pn.to_document()["pvt_features"] == {"local": {}}
        assert not pn.dirty


class TestOld1:
    def test_identity_fields_round_trip(self) -> None:
        pn = load(old1())
        doc = pn.to_document()
        assert pn.number == doc["_id"] == OLD1_NUM
        assert pn.assigned_to == doc["pvt_assigned_to"] == RESELLER
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_local"
        assert pn.ported_in is False
        assert doc["pvt_ported_in"] is False
        assert pn.state == NumberState.IN_SERVICE
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_type"] == "number"
        assert pn.reserve_history == []
        assert "pvt_reserve_history" not in doc

    def test_string_timestamps_become_now_and_dirty(self) -> None:
        before = utcnow()
        pn = load(old1())
        after = utcnow()
        assert pn.dirty is True
        doc = pn.to_document()
        for value in (pn.created, pn.modified, doc["pvt_created"], doc["pvt_modified"]):
            assert isinstance(value, datetime)
            assert before <= value <= after
        assert isinstance(to_gregorian_seconds(doc["pvt_created"]), int)

    def test_features_local_used_by_and_dropped_keys(self) -> None:
        pn = load(old1())
        doc = pn.to_document()
        assert doc["pvt_features"] == {"local": {}}
        assert pn.features == {"local": {}}
        assert pn.used_by is None
        assert "pvt_used_by" not in doc
        # auth_by is the operation's (Options default "system"), never the document's.
        for key in DROPPED_KEYS:
            assert key not in doc


class TestOld2Dot1:
    def test_not_dirty_modified_kept(self) -> None:
        pn = load(old2_1())
        doc = pn.to_document()
        assert pn.dirty is False
        assert pn.modified == doc["pvt_modified"] == greg(63637990853)
        assert to_gregorian_seconds(doc["pvt_modified"]) == 63637990853

    def test_state_and_unknown_module_kept(self) -> None:
        pn = load(old2_1())
        doc = pn.to_document()
        assert pn.state == NumberState.IN_SERVICE
        assert doc["pvt_state"] == "in_service"
        assert "pvt_number_state" not in doc
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_pacwest"

    def test_empty_feature_list_is_not_a_migration(self) -> None:
        pn = load(old2_1())
        assert pn.features == {}
        assert "pvt_features" not in pn.to_document()
        assert pn.used_by is None
        assert "used_by" not in pn.public


class TestOld2Dot2:
    def test_wnm_module_migrated_and_dirty(self) -> None:
        before = utcnow()
        pn = load(old2_2())
        doc = pn.to_document()
        assert pn.dirty is True
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_pacwest"
        assert "pvt_module_name" not in doc
        assert pn.state == NumberState.IN_SERVICE
        assert doc["pvt_state"] == "in_service"
        assert "pvt_number_state" not in doc
        assert pn.modified >= before  # a dirtying migration moves ``modified``
        assert pn.created == greg(63637990840)


class TestOld2:
    def test_legacy_state_key_migrated_and_dirty(self) -> None:
        pn = load(old2())
        doc = pn.to_document()
        assert pn.dirty is True
        assert pn.state == NumberState.IN_SERVICE
        assert doc["pvt_state"] == "in_service"
        assert "pvt_number_state" not in doc

    def test_ported_in_written_false(self) -> None:
        doc = load(old2()).to_document()
        assert "pvt_ported_in" not in old2()
        assert doc["pvt_ported_in"] is False

    def test_modified_new_created_kept(self) -> None:
        before = utcnow()
        pn = load(old2())
        after = utcnow()
        doc = pn.to_document()
        assert before <= pn.modified <= after
        assert doc["pvt_modified"] == pn.modified
        assert pn.modified != greg(63637990853)
        assert isinstance(to_gregorian_seconds(doc["pvt_modified"]), int)
        assert pn.created == doc["pvt_created"] == greg(63637990840)
        assert to_gregorian_seconds(doc["pvt_created"]) == 63637990840

    def test_features_empty_used_by_undefined(self) -> None:
        pn = load(old2())
        doc = pn.to_document()
        assert pn.features == {}
        assert "pvt_features" not in doc
        assert pn.used_by is None
        assert "pvt_used_by" not in doc
        assert "used_by" not in doc

    def test_identity_and_history(self) -> None:
        pn = load(old2())
        doc = pn.to_document()
        assert doc["_id"] == pn.number == OLD2_NUM
        assert doc["pvt_assigned_to"] == RESELLER
        assert doc["pvt_reserve_history"] == pn.reserve_history == [RESELLER]
        assert doc["pvt_type"] == "number"
        assert doc["pvt_carrier_module"] == "knm_pacwest"
        for key in DROPPED_KEYS:
            assert key not in doc


class TestOld3Dot1:
    def test_not_dirty(self) -> None:
        pn = load(old3_1())
        doc = pn.to_document()
        assert pn.dirty is False
        assert pn.state == NumberState.IN_SERVICE
        assert "pvt_number_state" not in doc
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_bandwidth2"


class TestOld3:
    def test_wnm_bandwidth_becomes_bandwidth2_and_dirty(self) -> None:
        pn = load(old3())
        doc = pn.to_document()
        assert pn.dirty is True
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_bandwidth2"
        assert doc["pvt_ported_in"] is False
        assert pn.state == NumberState.IN_SERVICE
        assert pn.reserve_history == []

    def test_features_and_created_preserved(self) -> None:
        pn = load(old3())
        doc = pn.to_document()
        assert pn.features == doc["pvt_features"] == {"e911": _E911_GEARY}
        assert pn.created == doc["pvt_created"] == greg(63646110391)
        assert doc["pvt_carrier_data"] == _CARRIER_DATA_BW

    def test_pvt_used_by_kept_public_used_by_stripped(self) -> None:
        pn = load(old3())
        doc = pn.to_document()
        assert pn.used_by == doc["pvt_used_by"] == "callflow"
        assert "used_by" not in doc
        assert "used_by" not in pn.public
        # other public keys, even ones shaped like KAZOO's read-only data, are kept verbatim
        assert doc["features"] == ["e911"]
        assert doc["state"] == "in_service"
        assert doc["ui_metadata"] == _UI_40


class TestOld4Dot1:
    def test_not_dirty_features_preserved(self) -> None:
        pn = load(old4_1())
        assert pn.dirty is False
        assert (
            pn.features
            == pn.to_document()["pvt_features"]
            == {
                "e911": {"caller_name": "Moua"},
                "local": {},
            }
        )


class TestOld4:
    def test_module_state_created_dirty(self) -> None:
        pn = load(old4())
        doc = pn.to_document()
        assert pn.dirty is True
        assert pn.carrier_module == doc["pvt_carrier_module"] == "knm_local"
        assert pn.state == NumberState.RESERVED
        assert doc["pvt_state"] == "reserved"
        assert pn.created == doc["pvt_created"] == greg(63627551737)
        assert doc["pvt_ported_in"] is False
        assert pn.reserve_history == doc["pvt_reserve_history"] == [OTHER_OWNER]
        assert pn.assigned_to == OTHER_OWNER

    def test_features_local_used_by_undefined(self) -> None:
        pn = load(old4())
        doc = pn.to_document()
        assert pn.features == doc["pvt_features"] == {"local": {}}
        assert pn.used_by is None
        assert "pvt_used_by" not in doc

    def test_public_fields_gain_e911_from_dash_e911(self) -> None:
        pn = load(old4())
        expected = {k: v for k, v in public_of(old4()).items() if k != "used_by"}
        expected["e911"] = {"caller_name": "Moua"}
        assert pn.public == expected
        assert public_of(pn.to_document()) == expected
        assert pn.public["dash_e911"] == {"caller_name": "Moua"}  # the legacy key stays


class TestOld5:
    def test_dirty_with_fresh_timestamps(self) -> None:
        before = utcnow()
        pn = load(old5())
        after = utcnow()
        assert pn.dirty is True
        assert before <= pn.created <= after
        assert before <= pn.modified <= after

    def test_pvt_dash_e911_renamed_to_e911(self) -> None:
        pn = load(old5())
        expected = copy.deepcopy(old5()["pvt_features"])
        expected["e911"] = expected.pop("dash_e911")
        assert pn.features == expected
        assert pn.to_document()["pvt_features"] == expected

    def test_public_fields_and_used_by(self) -> None:
        pn = load(old5())
        doc = pn.to_document()
        expected = {k: v for k, v in public_of(old5()).items() if k != "used_by"}
        expected["e911"] = expected["dash_e911"]
        assert pn.public == expected
        assert public_of(doc) == expected
        assert pn.used_by is None
        assert "used_by" not in doc
        assert "pvt_used_by" not in doc

    def test_allowed_and_denied_kept(self) -> None:
        doc = load(old5()).to_document()
        assert doc["pvt_features_allowed"] == ["failover", "force_outbound", "prepend", "ringback"]
        assert doc["pvt_features_denied"] == ["failover"]


class TestOld5Dot1:
    def test_public_e911_equal_to_dash_e911_is_not_a_change(self) -> None:
        pn = load(old5_1())
        assert pn.dirty is False
        assert pn.public["e911"] == _E911_MAIN_ST


class TestOld6:
    def test_not_dirty_everything_preserved(self) -> None:
        pn = load(old6())
        doc = pn.to_document()
        fixture = old6()
        assert pn.dirty is False
        assert pn.number == OLD6_NUM
        assert pn.assigned_to == RESELLER
        assert pn.reserve_history == []
        assert doc["pvt_carrier_module"] == "knm_local"
        assert doc["pvt_ported_in"] is False
        assert doc["pvt_state"] == "in_service"
        assert pn.created == pn.modified == greg(63640935218)
        assert doc["pvt_created"] == doc["pvt_modified"] == greg(63640935218)
        assert pn.features == doc["pvt_features"] == fixture["pvt_features"]
        assert pn.used_by == doc["pvt_used_by"] == "trunkstore"
        expected_public = {k: v for k, v in public_of(fixture).items() if k != "used_by"}
        assert public_of(doc) == expected_public


class TestOld7Dot1:
    def test_not_dirty_and_document_equals_stored(self) -> None:
        pn = load(old7_1())
        assert pn.dirty is False
        assert pn.to_document() == {
            "_id": OLD7_1_NUM,
            "cnam": {"display_name": "Bruce Wayne", "inbound_lookup": True},
            "pvt_assigned_to": RESELLER,
            "pvt_created": greg(63606025000),
            "pvt_features": {
                "inbound_cnam": {"inbound_lookup": True},
                "outbound_cnam": {"display_name": "Bruce Wayne"},
            },
            "pvt_modified": greg(63606025001),
            "pvt_carrier_module": "knm_vitelity",
            "pvt_ported_in": False,
            "pvt_state": "in_service",
            "pvt_type": "number",
        }

    def test_knm_document_round_trips_exactly(self) -> None:
        first = load(old7_1()).to_document()
        first["pvt_rev"] = 3
        again = load(first)
        assert again.dirty is False
        assert again.rev == 3
        assert again.to_document() == first


@pytest.mark.parametrize("name", sorted(NOT_DIRTY_FIXTURES))
def test_consistent_fixtures_load_clean(name: str) -> None:
    """KAZOO's all_gets_should_not_be_dirty, and the to_json shape it verifies."""
    fixture = NOT_DIRTY_FIXTURES[name]()
    pn = load(fixture)
    doc = pn.to_document()
    assert pn.dirty is False
    assert doc["_id"] == pn.number == fixture["_id"]
    assert isinstance(NumberState(doc["pvt_state"]), NumberState)
    assert isinstance(doc["pvt_ported_in"], bool)
    assert isinstance(doc["pvt_created"], datetime)
    assert isinstance(doc["pvt_modified"], datetime)
    assert doc["pvt_created"] == greg(fixture["pvt_created"])
    assert doc["pvt_modified"] == greg(fixture["pvt_modified"])
    assert doc["pvt_type"] == "number"
    assert doc.get("pvt_used_by") in (None, "trunkstore", "callflow")
    assert isinstance(doc.get("pvt_features", {}), dict)
    assert isinstance(doc.get("pvt_carrier_data", {}), dict)
    for key in ("pvt_features_allowed", "pvt_features_denied", "pvt_reserve_history"):
        assert isinstance(doc.get(key, []), list)
    for key in DROPPED_KEYS:
        assert key not in doc
    assert "pvt_rev" not in doc  # KAZOO's string _rev is not knm's revision


@pytest.mark.parametrize("name", sorted(DIRTY_FIXTURES))
def test_migrating_fixtures_load_dirty(name: str) -> None:
    pn = load(DIRTY_FIXTURES[name]())
    doc = pn.to_document()
    assert pn.dirty is True
    for key in DROPPED_KEYS:
        assert key not in doc


# ==================================================================================== loading
class TestLoadTimestamps:
    def test_datetimes_kept_and_naive_taken_as_utc(self) -> None:
        aware = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
        doc = old6()
        doc["pvt_created"] = aware
        doc["pvt_modified"] = datetime(2020, 1, 2, 3, 4, 6)
        pn = load(doc)
        assert not pn.dirty
        assert pn.created == aware
        assert pn.modified == datetime(2020, 1, 2, 3, 4, 6, tzinfo=UTC)

    @pytest.mark.parametrize("bad", ["undefined", "63648122255", 1.5, True, None])
    def test_non_integer_timestamps_are_missing(self, bad: Any) -> None:
        doc = old6()
        doc["pvt_created"] = bad
        before = utcnow()
        pn = load(doc)
        assert pn.dirty
        assert pn.created >= before

    def test_missing_created_alone_dirties_and_moves_modified(self) -> None:
        doc = old6()
        del doc["pvt_created"]
        before = utcnow()
        pn = load(doc)
        assert pn.dirty
        assert pn.created >= before
        assert pn.modified >= before


class TestGregorian:
    def test_epoch(self) -> None:
        assert from_gregorian_seconds(GREGORIAN_UNIX_OFFSET) == datetime(1970, 1, 1, tzinfo=UTC)
        assert to_gregorian_seconds(datetime(1970, 1, 1, tzinfo=UTC)) == 62167219200

    def test_fixture_value(self) -> None:
        moment = from_gregorian_seconds(63648122255)
        assert moment == datetime.fromtimestamp(63648122255 - 62167219200, tz=UTC)
        assert moment.tzinfo is not None
        assert to_gregorian_seconds(moment) == 63648122255

    @pytest.mark.parametrize("seconds", [63606025000, 63627551737, 63637990853, 63648435293])
    def test_round_trip(self, seconds: int) -> None:
        assert to_gregorian_seconds(from_gregorian_seconds(seconds)) == seconds

    def test_utcnow_is_millisecond_precision_utc(self) -> None:
        now = utcnow()
        assert now.tzinfo is not None
        assert now.microsecond % 1000 == 0


class TestLoadModule:
    @pytest.mark.parametrize(
        ("stored", "expected"),
        [
            ("wnm_local", "knm_local"),
            ("wnm_pacwest", "knm_pacwest"),
            ("wnm_bandwidth", "knm_bandwidth2"),
            ("knm_bandwidth", "knm_bandwidth2"),
            ("undefined", "knm_local"),
        ],
    )
    def test_migrations_dirty(self, stored: str, expected: str) -> None:
        doc = old7_1()
        doc["pvt_module_name"] = stored
        pn = load(doc)
        assert pn.carrier_module == expected
        assert pn.dirty

    def test_knm_own_bandwidth_numbers_stay_with_the_deprecated_module(self) -> None:
        doc = old7_1()
        doc.pop("pvt_module_name", None)
        doc["pvt_carrier_module"] = "knm_bandwidth"
        pn = load(doc)
        assert pn.carrier_module == "knm_bandwidth"  # only KAZOO's pvt_module_name migrates

    @pytest.mark.parametrize("module", ["knm_vitelity", "knm_telnyx", "knm_pacwest", "blipblop"])
    def test_unmigrated_names_kept(self, module: str) -> None:
        doc = old7_1()
        doc["pvt_module_name"] = module
        pn = load(doc)
        assert pn.carrier_module == module
        assert not pn.dirty

    def test_pvt_carrier_module_is_read_and_wins_over_alias(self) -> None:
        doc = old7_1()
        doc["pvt_carrier_module"] = "knm_telnyx"
        pn = load(doc)
        assert pn.carrier_module == "knm_telnyx"
        assert not pn.dirty
        out = pn.to_document()
        assert out["pvt_carrier_module"] == "knm_telnyx"
        assert "pvt_module_name" not in out

    def test_missing_module_uses_default_without_dirtying(self) -> None:
        doc = old7_1()
        del doc["pvt_module_name"]
        assert load(doc).carrier_module == "knm_local"
        pn = load(doc, default_module="knm_inventory")
        assert pn.carrier_module == "knm_inventory"
        assert not pn.dirty


class TestLoadState:
    def test_pvt_state_wins_over_legacy_key_but_legacy_dirties(self) -> None:
        doc = old2_1()
        doc["pvt_number_state"] = "reserved"
        pn = load(doc)
        assert pn.state == NumberState.IN_SERVICE
        assert pn.dirty
        assert "pvt_number_state" not in pn.to_document()

    def test_legacy_key_with_null_value_is_ignored(self) -> None:
        doc = old2_1()
        doc["pvt_number_state"] = None
        assert not load(doc).dirty

    def test_invalid_state_rejected(self) -> None:
        doc = old2_1()
        doc["pvt_state"] = "bogus"
        with pytest.raises(ValueError, match="bogus"):
            load(doc)


class TestLoadMisc:
    def test_ported_in_is_true_semantics(self) -> None:
        for value, expected in ((True, True), ("true", True), ("false", False), (False, False)):
            doc = old7_1()
            doc["pvt_ported_in"] = value
            assert load(doc).ported_in is expected

    def test_unknown_private_and_underscore_keys_dropped_silently(self) -> None:
        doc = old7_1()
        doc.update({"pvt_whatever": 1, "_attachments": {}, "pvt_resource_db": "x"})
        pn = load(doc)
        assert not pn.dirty
        out = pn.to_document()
        assert "pvt_whatever" not in out
        assert "_attachments" not in out
        assert "pvt_resource_db" not in out

    def test_public_id_and_used_by_stripped_without_dirtying(self) -> None:
        doc = old7_1()
        doc.update({"id": OLD7_1_NUM, "used_by": "callflow"})
        pn = load(doc)
        assert not pn.dirty
        assert "id" not in pn.public
        assert "used_by" not in pn.public
        assert pn.used_by is None  # public used_by is never migrated to pvt_used_by

    def test_stored_and_loaded_flags(self) -> None:
        pn = load(old7_1())
        assert pn.stored
        assert not pn.deleted

    def test_pvt_rev_int_only(self) -> None:
        doc = old7_1()
        doc["pvt_rev"] = 7
        assert load(doc).rev == 7
        doc["pvt_rev"] = "7-abc"
        assert load(doc).rev is None


class TestLocalMarkerOnLoad:
    @pytest.mark.parametrize("features", [None, {}, []])
    @pytest.mark.parametrize("module", ["knm_local", "knm_mdn"])
    def test_added_silently_to_empty_features(self, module: str, features: Any) -> None:
        doc = old7_1()
        doc["pvt_module_name"] = module
        if features is None:
            del doc["pvt_features"]
        else:
            doc["pvt_features"] = features
        pn = load(doc)
        assert pn.features == {"local": {}}
        assert not pn.dirty

    def test_existing_marker_value_kept(self) -> None:
        doc = old7()
        doc["pvt_features"]["local"] = {"note": "kept"}
        pn = load(doc)
        assert pn.features["local"] == {"note": "kept"}
        assert not pn.dirty

    def test_non_local_without_features_has_none(self) -> None:
        doc = old7_1()
        del doc["pvt_features"]
        pn = load(doc)
        assert pn.features == {}
        assert not pn.dirty

    def test_marker_added_to_existing_features_dirties(self) -> None:
        doc = old7()
        del doc["pvt_features"]["local"]
        pn = load(doc)
        assert pn.features["local"] == {}
        assert pn.dirty

    def test_marker_removed_from_non_local_dirties(self) -> None:
        doc = old7_1()
        doc["pvt_features"]["local"] = {}
        pn = load(doc)
        assert "local" not in pn.features
        assert pn.dirty


class TestFeatureMigrations:
    def test_list_features_rebuilt_from_public_fields(self) -> None:
        doc = old7_1()
        doc["pvt_module_name"] = "knm_telnyx"
        doc.update(
            {
                "pvt_features": [
                    "force_outbound",
                    "ringback",
                    "failover",
                    "prepend",
                    "outbound_cnam",
                    "inbound_lookup",
                    "dash_e911",
                    "port",
                    "custom",
                ],
                "force_outbound": "true",
                "ringback": {"early": "media1", "transfer": "", "other": 1},
                "failover": {"e164": "+14155550000", "sip": "sip:a@b", "x": 1},
                "prepend": {"enabled": "true", "name": "Sales", "number": "1"},
                "cnam": {"display_name": "ACME", "inbound_lookup": False},
                "dash_e911": {"street_address": "1 Main"},
                "port": {"carrier": "x"},
            }
        )
        pn = load(doc)
        assert pn.dirty
        assert pn.features == {
            "force_outbound": True,
            "ringback": {"early": "media1"},
            "failover": {"e164": "+14155550000", "sip": "sip:a@b"},
            "prepend": {"enabled": True, "name": "Sales", "number": "1"},
            "outbound_cnam": {"display_name": "ACME"},
            "inbound_cnam": {"inbound_lookup": True},
            "e911": {"street_address": "1 Main"},
            "port": {"carrier": "x"},
            "custom": {},
        }
        assert pn.public["e911"] == {"street_address": "1 Main"}

    def test_list_features_coercions(self) -> None:
        doc = old7_1()
        del doc["cnam"]
        doc.update(
            {
                "pvt_features": ["force_outbound", "prepend", "outbound_cnam", "ringback"],
                "force_outbound": "false",
                "prepend": {"name": "Sales"},
            }
        )
        pn = load(doc)
        assert pn.features == {
            "force_outbound": False,
            "prepend": {"name": "Sales", "enabled": False},
            "outbound_cnam": {},
            "ringback": {},
        }

    @pytest.mark.parametrize("legacy", ["vitelity_e911", "telnyx_e911"])
    def test_list_provider_e911_names(self, legacy: str) -> None:
        doc = old7_1()
        doc.update({"pvt_features": [legacy], legacy: {"street_address": "9 Elm"}})
        assert load(doc).features == {"e911": {"street_address": "9 Elm"}}

    def test_list_adds_local_marker_for_local_numbers(self) -> None:
        doc = old7()
        doc.update({"pvt_features": ["force_outbound"], "force_outbound": True})
        pn = load(doc)
        assert pn.features == {"force_outbound": True, "local": {}}
        assert pn.dirty

    def test_object_legacy_keys_renamed_vitelity_wins(self) -> None:
        doc = old7_1()
        doc["pvt_features"] = {
            "dash_e911": {"from": "dash"},
            "vitelity_e911": {"from": "vitelity"},
            "prepend": {"enabled": True},
        }
        pn = load(doc)
        assert pn.features == {"e911": {"from": "vitelity"}, "prepend": {"enabled": True}}
        assert pn.dirty

    def test_object_without_legacy_keys_untouched(self) -> None:
        pn = load(old7_1())
        assert pn.features == old7_1()["pvt_features"]
        assert not pn.dirty


class TestPublicLegacyE911:
    def test_vitelity_wins_over_dash(self) -> None:
        doc = old7_1()
        doc.update({"dash_e911": {"from": "dash"}, "vitelity_e911": {"from": "vitelity"}})
        pn = load(doc)
        assert pn.public["e911"] == {"from": "vitelity"}
        assert pn.public["dash_e911"] == {"from": "dash"}
        assert pn.public["vitelity_e911"] == {"from": "vitelity"}
        assert pn.dirty

    def test_legacy_overrides_a_different_e911(self) -> None:
        doc = old7_1()
        doc.update({"dash_e911": {"from": "dash"}, "e911": {"from": "new"}})
        pn = load(doc)
        assert pn.public["e911"] == {"from": "dash"}
        assert pn.dirty

    def test_empty_legacy_value_is_not_copied(self) -> None:
        doc = old7_1()
        doc["dash_e911"] = {}
        pn = load(doc)
        assert "e911" not in pn.public
        assert not pn.dirty

    def test_sanitize_public(self) -> None:
        fields = {
            "_id": "x",
            "pvt_state": "in_service",
            "id": "+1",
            "used_by": "callflow",
            "dash_e911": {"a": 1},
            "my_key": "v",
        }
        assert sanitize_public(fields) == {"dash_e911": {"a": 1}, "e911": {"a": 1}, "my_key": "v"}


class TestReserveHistoryLoad:
    def test_consecutive_duplicates_collapse_dirty_modified_kept(self) -> None:
        doc = old6()
        doc["pvt_reserve_history"] = [RESELLER, RESELLER, MASTER, MASTER, RESELLER]
        pn = load(doc)
        assert pn.reserve_history == [RESELLER, MASTER, RESELLER]
        assert pn.dirty
        # KAZOO normalises the history before reading pvt_modified: the stored value stays.
        assert pn.modified == greg(63640935218)

    def test_normal_history_not_dirty(self) -> None:
        doc = old6()
        doc["pvt_reserve_history"] = [CHILD, RESELLER, MASTER]
        pn = load(doc)
        assert pn.reserve_history == [CHILD, RESELLER, MASTER]
        assert not pn.dirty


# ==================================================================================== setters
def _assert_noop(pn: PhoneNumber, modified: datetime) -> None:
    assert not pn.dirty
    assert pn.modified == modified


def _assert_changed(pn: PhoneNumber, modified: datetime) -> None:
    assert pn.dirty
    assert pn.modified > modified


SETTER_CASES: dict[str, tuple[Callable[[PhoneNumber], None], Callable[[PhoneNumber], None]]] = {
    "set_state": (
        lambda pn: pn.set_state(NumberState.IN_SERVICE),
        lambda pn: pn.set_state(NumberState.RESERVED),
    ),
    "set_assigned_to": (
        lambda pn: pn.set_assigned_to(RESELLER),
        lambda pn: pn.set_assigned_to(CHILD),
    ),
    "set_used_by": (
        lambda pn: pn.set_used_by("trunkstore"),
        lambda pn: pn.set_used_by("callflow"),
    ),
    "set_carrier_module": (
        lambda pn: pn.set_carrier_module("knm_local"),
        lambda pn: pn.set_carrier_module("knm_telnyx"),
    ),
    "set_ported_in": (lambda pn: pn.set_ported_in(False), lambda pn: pn.set_ported_in(True)),
    "set_carrier_data": (
        lambda pn: pn.set_carrier_data({}),
        lambda pn: pn.set_carrier_data({"order_id": "1"}),
    ),
    "set_features": (
        lambda pn: pn.set_features(copy.deepcopy(old6()["pvt_features"])),
        lambda pn: pn.set_features({"local": {}}),
    ),
    "set_feature": (
        lambda pn: pn.set_feature("prepend", {"enabled": True, "number": "56100"}),
        lambda pn: pn.set_feature("prepend", {"enabled": False}),
    ),
    "remove_feature": (
        lambda pn: pn.remove_feature("e911"),
        lambda pn: pn.remove_feature("failover"),
    ),
    "set_features_allowed": (
        lambda pn: pn.set_features_allowed([]),
        lambda pn: pn.set_features_allowed(["cnam"]),
    ),
    "set_features_denied": (
        lambda pn: pn.set_features_denied([]),
        lambda pn: pn.set_features_denied(["e911"]),
    ),
    "set_reserve_history": (
        lambda pn: pn.set_reserve_history([]),
        lambda pn: pn.set_reserve_history([RESELLER]),
    ),
    "push_reserve_history": (
        lambda pn: pn.push_reserve_history(None),
        lambda pn: pn.push_reserve_history(RESELLER),
    ),
    "set_region": (lambda pn: pn.set_region(None), lambda pn: pn.set_region("west")),
    "reset_public": (
        lambda pn: pn.reset_public(public_of(old6())),
        lambda pn: pn.reset_public({"my_key": 42}),
    ),
    "update_public": (
        lambda pn: pn.update_public({"prepend": {"number": "56100"}}),
        lambda pn: pn.update_public({"prepend": {"number": "1"}}),
    ),
}


@pytest.mark.parametrize("name", sorted(SETTER_CASES))
def test_setter_same_value_is_a_noop(name: str) -> None:
    pn = clean()
    before = pn.to_document()
    modified = pn.modified
    SETTER_CASES[name][0](pn)
    _assert_noop(pn, modified)
    assert pn.to_document() == before


@pytest.mark.parametrize("name", sorted(SETTER_CASES))
def test_setter_change_dirties_and_moves_modified(name: str) -> None:
    pn = clean()
    before = pn.to_document()
    modified = pn.modified
    SETTER_CASES[name][1](pn)
    _assert_changed(pn, modified)
    assert pn.to_document() != before


class TestAssignedTo:
    def test_change_records_previous_and_clears_used_by(self) -> None:
        pn = clean()
        pn.set_assigned_to(CHILD)
        assert pn.assigned_to == CHILD
        assert pn.previously_assigned_to == RESELLER
        assert pn.used_by is None
        doc = pn.to_document()
        assert doc["pvt_previously_assigned_to"] == RESELLER
        assert "pvt_used_by" not in doc

    def test_unassign_records_previous(self) -> None:
        pn = clean()
        pn.set_assigned_to(None)
        assert pn.assigned_to is None
        assert pn.previously_assigned_to == RESELLER
        assert "pvt_assigned_to" not in pn.to_document()

    def test_from_unassigned_keeps_previous(self) -> None:
        doc = old6()
        del doc["pvt_assigned_to"]
        doc["pvt_previously_assigned_to"] = MASTER
        pn = load(doc)
        pn.set_assigned_to(CHILD)
        assert pn.previously_assigned_to == MASTER
        assert pn.used_by is None
        assert pn.dirty

    def test_same_owner_keeps_used_by(self) -> None:
        pn = clean()
        pn.set_assigned_to(RESELLER)
        assert pn.used_by == "trunkstore"
        assert pn.previously_assigned_to is None


class TestUsedBy:
    def test_empty_string_clears(self) -> None:
        pn = clean()
        pn.set_used_by("")
        assert pn.used_by is None
        assert pn.dirty

    def test_none_when_already_none_is_noop(self) -> None:
        pn = load(old7_1())
        modified = pn.modified
        pn.set_used_by(None)
        _assert_noop(pn, modified)


class TestCarrierModuleSetter:
    def test_non_local_removes_marker(self) -> None:
        pn = clean()
        pn.set_carrier_module("knm_telnyx")
        assert pn.carrier_module == "knm_telnyx"
        assert "local" not in pn.features
        assert pn.dirty

    def test_local_adds_marker(self) -> None:
        pn = load(old7_1())
        pn.set_carrier_module("knm_local")
        assert pn.features["local"] == {}
        assert pn.dirty

    def test_mdn_keeps_existing_marker_value(self) -> None:
        doc = old7()
        doc["pvt_features"]["local"] = {"note": "kept"}
        pn = load(doc)
        pn.set_carrier_module("knm_mdn")
        assert pn.carrier_module == "knm_mdn"
        assert pn.features["local"] == {"note": "kept"}
        assert pn.dirty
        assert pn.is_mdn

    @pytest.mark.parametrize(
        ("given", "expected"),
        [("wnm_vitelity", "knm_vitelity"), ("knm_bandwidth", "knm_bandwidth2")],
    )
    def test_migrates_names(self, given: str, expected: str) -> None:
        pn = load(old7_1())
        pn.set_carrier_module(given)
        assert pn.carrier_module == expected
        assert pn.dirty is (expected != "knm_vitelity")

    def test_undefined_means_local(self) -> None:
        pn = load(old7_1())
        pn.set_carrier_module("undefined")
        assert pn.carrier_module == "knm_local"
        assert "local" in pn.features

    def test_migrate_module_name(self) -> None:
        assert MODULES.migrate("wnm_telnyx") == "knm_telnyx"
        assert MODULES.migrate("wnm_bandwidth") == "knm_bandwidth2"
        assert MODULES.migrate("knm_bandwidth") == "knm_bandwidth2"
        assert MODULES.migrate("knm_bandwidth2") == "knm_bandwidth2"
        assert MODULES.migrate("undefined") == "knm_local"
        assert MODULES.migrate("knm_pacwest") == "knm_pacwest"
        assert MODULES.migrate("knm_bandwidth", kazoo=False) == "knm_bandwidth"

    def test_is_local(self) -> None:
        assert clean().is_local
        assert not load(old7_1()).is_local
        pn = PhoneNumber(number=OLD7_1_NUM, carrier_module="knm_telnyx", features={"local": {}})
        assert pn.is_local  # the marker alone makes a number local for features/billing


class TestFeatureListSetters:
    def test_allowed_denied_order_and_duplicates_are_not_changes(self) -> None:
        doc = old6()
        doc["pvt_features_allowed"] = ["cnam", "e911"]
        doc["pvt_features_denied"] = ["port", "sms"]
        pn = load(doc)
        modified = pn.modified
        pn.set_features_allowed(["e911", "cnam"])
        pn.set_features_denied(["sms", "port", "sms"])
        _assert_noop(pn, modified)

    def test_remove_missing_feature_is_noop(self) -> None:
        pn = clean()
        modified = pn.modified
        pn.remove_feature("cnam")
        _assert_noop(pn, modified)


class TestReserveHistorySetters:
    def test_set_collapses(self) -> None:
        pn = clean()
        pn.set_reserve_history([CHILD, CHILD, RESELLER, RESELLER])
        assert pn.reserve_history == [CHILD, RESELLER]

    def test_push_prepends_unless_head(self) -> None:
        pn = clean()
        pn.push_reserve_history(RESELLER)
        assert pn.reserve_history == [RESELLER]
        pn.push_reserve_history(CHILD)
        assert pn.reserve_history == [CHILD, RESELLER]
        modified = pn.modified
        pn._dirty = False
        pn.push_reserve_history(CHILD)
        _assert_noop(pn, modified)
        assert pn.reserve_history == [CHILD, RESELLER]
        pn.push_reserve_history(RESELLER)
        assert pn.reserve_history == [RESELLER, CHILD, RESELLER]


class TestPublicSetters:
    def test_reset_replaces_strips_and_renames(self) -> None:
        pn = clean()
        pn.reset_public(
            {
                "id": OLD6_NUM,
                "used_by": "callflow",
                "pvt_state": "available",
                "_id": "+1",
                "my_key": 42,
                "a": {"b": 1},
                "vitelity_e911": {"street_address": "1 Main"},
            }
        )
        assert pn.public == {
            "my_key": 42,
            "a": {"b": 1},
            "vitelity_e911": {"street_address": "1 Main"},
            "e911": {"street_address": "1 Main"},
        }
        assert pn.state == NumberState.IN_SERVICE  # private keys of the request are ignored
        assert pn.used_by == "trunkstore"
        assert pn.features == old6()["pvt_features"]  # pvt part untouched

    def test_reset_to_nothing(self) -> None:
        pn = clean()
        pn.reset_public({})
        assert pn.public == {}
        assert pn.dirty

    def test_update_deep_merges(self) -> None:
        pn = clean()
        pn.update_public(
            {
                "prepend": {"name": "Sales"},
                "failover": {"e164": "+14155550000"},
                "features": ["x"],
                "id": "nope",
                "used_by": "nope",
                "pvt_assigned_to": CHILD,
            }
        )
        assert pn.public == {
            "failover": {"sip": "sip:blipblop@158.85.21.24", "e164": "+14155550000"},
            "features": ["x"],  # lists are replaced, not merged
            "prepend": {"enabled": True, "number": "56100", "name": "Sales"},
            "state": "in_service",
        }
        assert pn.assigned_to == RESELLER

    def test_update_applies_legacy_e911_copy(self) -> None:
        pn = clean()
        pn.update_public({"dash_e911": {"street_address": "1 Main"}})
        assert pn.public["e911"] == {"street_address": "1 Main"}
        assert pn.public["dash_e911"] == {"street_address": "1 Main"}

    def test_update_legacy_key_still_wins_over_a_new_e911(self) -> None:
        """KAZOO re-applies the renaming to the merged doc: a stale dash_e911 overrides e911."""
        pn = load(old4_1())
        pn.update_public({"dash_e911": {"caller_name": "Moua"}})
        pn.update_public({"e911": {"caller_name": "New"}})
        assert pn.public["e911"] == {"caller_name": "Moua"}

    def test_update_with_only_stripped_keys_is_noop(self) -> None:
        pn = clean()
        modified = pn.modified
        pn.update_public({"id": "x", "used_by": "callflow", "pvt_x": 1})
        _assert_noop(pn, modified)

    def test_update_does_not_alias_the_request(self) -> None:
        pn = clean()
        request = {"a": {"b": [1]}}
        pn.update_public(request)
        request["a"]["b"].append(2)
        assert pn.public["a"] == {"b": [1]}

    def test_deep_merge(self) -> None:
        base = {"a": {"b": 1, "c": {"d": 1}}, "x": 1}
        merged = deep_merge(base, {"a": {"c": {"e": 2}}, "x": {"y": 1}})
        assert merged == {"a": {"b": 1, "c": {"d": 1, "e": 2}}, "x": {"y": 1}}
        assert base == {"a": {"b": 1, "c": {"d": 1}}, "x": 1}


class TestNewAndDeleted:
    def test_new_number_is_dirty_and_local(self) -> None:
        pn = PhoneNumber.new("+15559871234", modules=MODULES)
        assert pn.dirty
        assert not pn.stored
        assert pn.carrier_module == "knm_local"
        assert pn.features == {"local": {}}
        assert pn.reserve_history == []
        assert pn.ported_in is False
        assert isinstance(pn.created, datetime)

    def test_new_non_local(self) -> None:
        pn = PhoneNumber.new("+15559871234", "blipblop", modules=MODULES)
        assert pn.carrier_module == "blipblop"
        assert pn.features == {}

    def test_mark_deleted(self) -> None:
        pn = clean()
        pn.mark_deleted()
        assert pn.deleted
        assert pn.state == NumberState.DELETED


# ==================================================================================== output
class TestToDocument:
    def test_always_written_keys(self) -> None:
        pn = PhoneNumber.new("+15559871234", "knm_telnyx", modules=MODULES)
        doc = pn.to_document()
        assert set(doc) == {
            "_id",
            "pvt_type",
            "pvt_state",
            "pvt_carrier_module",
            "pvt_ported_in",
            "pvt_created",
            "pvt_modified",
        }
        assert doc["pvt_state"] is None

    def test_optional_keys_when_set(self) -> None:
        pn = clean()
        pn.set_region("west")
        pn.set_carrier_data({"order": 1})
        pn.set_features_allowed(["cnam"])
        pn.set_features_denied(["e911"])
        pn.set_reserve_history([RESELLER])
        pn.set_assigned_to(CHILD)
        pn.rev = 4
        doc = pn.to_document()
        assert doc["pvt_region"] == "west"
        assert doc["pvt_carrier_data"] == {"order": 1}
        assert doc["pvt_features_allowed"] == ["cnam"]
        assert doc["pvt_features_denied"] == ["e911"]
        assert doc["pvt_reserve_history"] == [RESELLER]
        assert doc["pvt_assigned_to"] == CHILD
        assert doc["pvt_previously_assigned_to"] == RESELLER
        assert doc["pvt_rev"] == 4

    def test_private_fields_win_over_public(self) -> None:
        pn = clean()
        pn.public["pvt_state"] = "available"  # cannot happen through setters; defensive
        assert pn.to_document()["pvt_state"] == "in_service"

    def test_document_is_a_copy(self) -> None:
        pn = clean()
        doc = pn.to_document()
        doc["pvt_features"]["failover"]["sip"] = "changed"
        doc["prepend"]["number"] = "changed"
        assert pn.features["failover"]["sip"] == "sip:blipblop@158.85.21.24"
        assert pn.public["prepend"]["number"] == "56100"


class TestToPublicJson:
    def test_shape(self) -> None:
        pn = clean()
        out = pn.to_public_json(["failover", "prepend"])
        assert out["id"] == OLD6_NUM
        assert out["state"] == "in_service"
        assert out["used_by"] == "trunkstore"
        assert out["features"] == ["failover", "local", "prepend"]
        assert out["failover"] == {"sip": "sip:blipblop@158.85.21.24"}
        assert out["prepend"] == {"enabled": True, "number": "56100"}
        assert out["_read_only"] == {
            "created": greg(63640935218).isoformat(),
            "modified": greg(63640935218).isoformat(),
            "features": {"available": ["failover", "prepend"], "settings": {}},
            "carrier_module": "local",
        }
        assert not any(k.startswith("pvt_") for k in out)
        assert "_id" not in out

    def test_features_are_sorted(self) -> None:
        pn = load(old5_1())
        assert pn.to_public_json()["features"] == ["e911", "inbound_cnam", "outbound_cnam"]

    def test_empty_values_omitted(self) -> None:
        pn = PhoneNumber.new("+15559871234", "knm_telnyx", modules=MODULES)
        out = pn.to_public_json()
        assert set(out) == {"id", "_read_only"}
        assert out["_read_only"]["carrier_module"] == "telnyx"
        assert out["_read_only"]["features"] == {"available": [], "settings": {}}
        assert "is_deleted" not in out["_read_only"]

    def test_is_deleted_only_when_deleted(self) -> None:
        pn = clean()
        pn.mark_deleted()
        out = pn.to_public_json()
        assert out["_read_only"]["is_deleted"] is True
        assert out["state"] == "deleted"

    def test_module_without_prefix_kept(self) -> None:
        pn = PhoneNumber.new("+15559871234", "blipblop", modules=MODULES)
        assert pn.to_public_json()["_read_only"]["carrier_module"] == "blipblop"

    def test_public_read_only_data_cannot_be_spoofed(self) -> None:
        pn = clean()
        pn.public["id"] = "+10000000000"
        out = pn.to_public_json()
        assert out["id"] == OLD6_NUM


def test_is_public_key() -> None:
    assert is_public_key("e911")
    assert is_public_key("used_by")
    assert not is_public_key("_id")
    assert not is_public_key("pvt_state")


def test_modified_only_moves_forward_on_change() -> None:
    pn = clean()
    first = pn.modified
    before = utcnow()
    pn.set_region("west")
    second = pn.modified
    assert second > first
    assert before <= second <= utcnow()
    pn.set_region("west")
    assert pn.modified == second
