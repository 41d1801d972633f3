"""knm.csv_actions: the actions' columns, the cell verifiers and public fields from a row."""

from __future__ import annotations

import pytest

from knm.services.csv_actions import (
    ACTIONS,
    DUMP_STATES,
    FEATURE_COLUMNS,
    VERIFIERS,
    bad_cells,
    public_fields,
)
from knm.services.listing import LISTING_COLUMNS

ACCOUNT = "0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------------------------ actions
def test_the_actions_and_whether_they_take_a_file() -> None:
    with_input = {"import", "assign_to", "reserve", "release", "delete", "update_merge"}
    with_input |= {"update_overwrite", "find"}
    without = {"list", "list_all", "dump"} | {f"dump_{s}" for s in DUMP_STATES}
    assert set(ACTIONS) == with_input | without
    for name in with_input:
        assert ACTIONS[name].takes_input, name
        assert ACTIONS[name].mandatory == ("e164",), name
    for name in without:
        assert not ACTIONS[name].takes_input, name
        assert ACTIONS[name].mandatory == (), name
    assert {s for s in DUMP_STATES} == {
        "aging",
        "available",
        "deleted",
        "discovery",
        "in_service",
        "port_in",
        "port_out",
        "released",
        "reserved",
    }


def test_optional_columns_per_action() -> None:
    assert set(ACTIONS["import"].optional) == (set(LISTING_COLUMNS) - {"e164"}) | {"carrier_name"}
    assert ACTIONS["import"].accepts_opaque
    for name in ("update_merge", "update_overwrite"):
        assert set(ACTIONS[name].optional) == {"carrier_name", *FEATURE_COLUMNS}
        assert ACTIONS[name].accepts_opaque
    assert set(FEATURE_COLUMNS) == {
        c
        for c in LISTING_COLUMNS
        if c.split(".")[0] in {"cnam", "e911", "prepend", "ringback", "force_outbound", "failover"}
    }
    assert ACTIONS["assign_to"].optional == ("account_id",)
    assert ACTIONS["reserve"].optional == ("account_id",)
    for name in ("release", "delete", "find"):
        assert ACTIONS[name].optional == ()


# ------------------------------------------------------------------------------ verifiers
@pytest.mark.parametrize(
    ("column", "good", "bad"),
    [
        (
            "account_id",
            [ACCOUNT, "account0000000000000000000000003"],
            ["x", ACCOUNT + "0", "a" * 31],
        ),
        (
            "carrier_module",
            ["knm_local", "knm_telnyx", "knm_bandwidth2"],
            ["knm_nope", "local", "KNM_LOCAL"],
        ),
        ("ported_in", ["true", "false"], ["yes", "1", "TRUE"]),
        (
            "state",
            ["in_service", "available", "reserved", "port_in", "aging"],
            ["active", "IN_SERVICE"],
        ),
        ("cnam.inbound", ["true", "false"], ["y", "on"]),
        ("prepend.enabled", ["true", "false"], ["enabled"]),
        ("force_outbound", ["true", "false"], ["0"]),
        ("failover.e164", ["+14155550100", "+442071838750"], ["4155550100", "+0123", "+1415x"]),
    ],
)
def test_each_verifier(column: str, good: list[str], bad: list[str]) -> None:
    verify = VERIFIERS[column]
    for value in good:
        assert verify(value), (column, value)
        assert bad_cells(ACTIONS["import"], {"e164": "+14155550100", column: value}) == []
    for value in bad:
        assert not verify(value), (column, value)
        assert bad_cells(ACTIONS["import"], {"e164": "+14155550100", column: value}) == [column]


def test_every_verifier_of_the_spec_is_registered() -> None:
    # KAZOO registered only the first four; knm validates the others too
    assert set(VERIFIERS) >= {
        "account_id",
        "carrier_module",
        "ported_in",
        "state",
        "cnam.inbound",
        "prepend.enabled",
        "force_outbound",
    }


def test_bad_cells_empty_optional_cells_pass_and_empty_mandatory_ones_fail() -> None:
    action = ACTIONS["import"]
    blank = dict.fromkeys(VERIFIERS, "")
    assert bad_cells(action, {"e164": "+14155550100", **blank}) == []
    assert bad_cells(action, {"e164": "", **blank}) == ["e164"]
    assert bad_cells(action, {"e164": "   "}) == ["e164"]
    assert bad_cells(action, {}) == ["e164"]
    # cells are read trimmed, as the actions use them
    assert (
        bad_cells(action, {"e164": "+14155550100", "account_id": "  ", "ported_in": " true "}) == []
    )


def test_bad_cells_lists_every_bad_column_in_a_stable_order() -> None:
    row = {
        "e164": "",
        "account_id": "nope",
        "state": "bogus",
        "cnam.inbound": "maybe",
        "force_outbound": "sure",
    }
    assert bad_cells(ACTIONS["import"], row) == [
        "e164",
        "account_id",
        "state",
        "cnam.inbound",
        "force_outbound",
    ]


def test_e164_is_not_checked_by_a_verifier() -> None:
    # numbers come in any reconcilable form; the job reconciles them (not_reconcilable otherwise)
    assert bad_cells(ACTIONS["release"], {"e164": "4155550100"}) == []
    assert bad_cells(ACTIONS["release"], {"e164": "(415) 555-0100"}) == []


# ------------------------------------------------------------------------------ public fields
def test_public_fields_of_an_empty_row_are_empty() -> None:
    assert public_fields({}) == {}
    assert public_fields(dict.fromkeys((*FEATURE_COLUMNS, "carrier_name", "opaque.x"), "")) == {}


def test_public_fields_from_every_feature_column() -> None:
    row = {
        "e164": "+14155550100",
        "account_id": ACCOUNT,
        "state": "in_service",
        "carrier_name": " Acme Telecom ",
        "cnam.inbound": "true",
        "cnam.outbound": "Acme, Inc.",
        "e911.locality": "San Francisco",
        "e911.name": "Reception",
        "e911.region": "CA",
        "e911.street_address": "140 Main St",
        "e911.extended_address": "Suite 200",
        "e911.postal_code": "94105",
        "prepend.enabled": "true",
        "prepend.name": "Sales",
        "prepend.number": "+1",
        "ringback.early": "ring-early.mp3",
        "ringback.transfer": "ring-transfer.mp3",
        "force_outbound": "true",
        "failover.e164": "+14155550199",
        "failover.sip": "sip:backup@example.com",
    }
    assert public_fields(row) == {
        "carrier_name": "Acme Telecom",
        "cnam": {"display_name": "Acme, Inc.", "inbound_lookup": True},
        "e911": {
            "locality": "San Francisco",
            "caller_name": "Reception",
            "region": "CA",
            "street_address": "140 Main St",
            "extended_address": "Suite 200",
            "postal_code": "94105",
        },
        "prepend": {"enabled": True, "name": "Sales", "number": "+1"},
        "ringback": {"early": "ring-early.mp3", "transfer": "ring-transfer.mp3"},
        "force_outbound": True,
        "failover": {"e164": "+14155550199", "sip": "sip:backup@example.com"},
    }


def test_public_fields_only_keys_with_values() -> None:
    assert public_fields({"cnam.inbound": "false"}) == {"cnam": {"inbound_lookup": False}}
    assert public_fields({"cnam.outbound": "Acme"}) == {"cnam": {"display_name": "Acme"}}
    assert public_fields({"e911.postal_code": "94105"}) == {"e911": {"postal_code": "94105"}}
    assert public_fields({"prepend.name": "x"}) == {"prepend": {"name": "x"}}
    assert public_fields({"prepend.enabled": "false"}) == {"prepend": {"enabled": False}}
    assert public_fields({"ringback.transfer": "t"}) == {"ringback": {"transfer": "t"}}
    assert public_fields({"force_outbound": "false"}) == {"force_outbound": False}
    assert public_fields({"failover.sip": "sip:x"}) == {"failover": {"sip": "sip:x"}}


def test_public_fields_booleans_are_true_only_for_true() -> None:
    # a non-empty value other than "true" means false (KAZOO); the verifiers refuse them first
    assert public_fields({"cnam.inbound": "yes"}) == {"cnam": {"inbound_lookup": False}}
    assert public_fields({"force_outbound": "1"}) == {"force_outbound": False}


def test_public_fields_ignore_identity_and_bookkeeping_columns() -> None:
    row = {
        "e164": "+14155550100",
        "account_id": ACCOUNT,
        "account_name": "Acme",
        "previously_assigned_to": ACCOUNT,
        "state": "in_service",
        "created": "63650000000",
        "modified": "63650000000",
        "used_by": "callflow",
        "ported_in": "true",
        "carrier_module": "knm_local",
        "something_else": "x",
    }
    assert public_fields(row) == {}


def test_public_fields_opaque_paths() -> None:
    row = {
        "opaque.custom": "value",
        "opaque.a.b.c": "deep",
        "opaque.a.b.d": "sibling",
        "opaque.a.e": "up",
        "opaque. spaced ": "trimmed",
        "opaque.x..y": "empty parts skipped",
        "opaque.": "no path",
        "opaque.empty": "",
        "opaque.blank": "   ",
    }
    assert public_fields(row) == {
        "custom": "value",
        "a": {"b": {"c": "deep", "d": "sibling"}, "e": "up"},
        "spaced": "trimmed",
        "x": {"y": "empty parts skipped"},
    }


def test_public_fields_opaque_path_may_extend_a_feature() -> None:
    fields = public_fields({"cnam.outbound": "Acme", "opaque.cnam.extra": "x"})
    assert fields == {"cnam": {"display_name": "Acme", "extra": "x"}}
    # a scalar in the way is replaced by an object
    assert public_fields({"opaque.p": "1", "opaque.p.q": "2"}) == {"p": {"q": "2"}}
