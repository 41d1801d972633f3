"""``lookup_account`` and billing quantities against a real store with KAZOO's fixtures.

Reproduces the lookup facts ("lookup_account", "is_force_outbound"), the
billing rules (``kz_services_quantities``), and the two CLI commands
(``knm numbers lookup``, ``knm billing quantities``) of knm/cli/numbers_extra.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database
from typer.testing import CliRunner, Result

from config.settings import Settings
from knm.cli.numbers_extra import register
from knm.cli.root import cli
from knm.services import billing
from knm.services.facade import Knm
from knm.services.lookup import lookup_account
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    BW_EXISTING_DID,
    CHILD,
    MASTER,
    PORT_REQUEST_ID,
    RESELLER,
    TEST_AVAILABLE_NON_LOCAL_NUM,
    TEST_AVAILABLE_NUM,
    TEST_EXISTING_TOLL,
    TEST_IN_SERVICE_BAD_CARRIER_NUM,
    TEST_IN_SERVICE_MDN,
    TEST_IN_SERVICE_NUM,
    TEST_IN_SERVICE_WITH_HISTORY_NUM,
    TEST_NEW_PORT_IN_NUM,
    TEST_NEW_PORT_NUM,
    TEST_OLD5_1_NUM,
    TEST_OLD6_NUM,
    TEST_OLD7_1_NUM,
    TEST_OLD7_NUM,
    TEST_PORT_IN2_NUM,
    TEST_PORT_IN3_NUM,
    TEST_PORT_IN_NUM,
    TEST_RESERVED_NUM,
    TEST_TELNYX_NUM,
    TEST_VITELITY_NUM,
    Doc,
    load_kazoo,
    number_doc,
)

pytestmark = pytest.mark.integration

#: Every fixture number the lookup tests read.
LOOKUP_NUMBERS = (
    TEST_AVAILABLE_NUM,
    TEST_IN_SERVICE_NUM,
    TEST_IN_SERVICE_MDN,
    TEST_IN_SERVICE_BAD_CARRIER_NUM,
    TEST_RESERVED_NUM,
    TEST_PORT_IN_NUM,
    TEST_PORT_IN3_NUM,
    TEST_TELNYX_NUM,
    TEST_VITELITY_NUM,
    TEST_OLD6_NUM,
    TEST_OLD7_NUM,
)


class _Commands(monitoring.CommandListener):
    """Counts the commands a client sends (queries per lookup)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def commands() -> _Commands:
    return _Commands()


@pytest.fixture
def store(mongo_url: str, mongo_db: Database[Doc], commands: _Commands) -> Iterator[Store]:
    """The test's database through a client that counts its commands."""
    client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
        mongo_url, tz_aware=True, event_listeners=[commands]
    )
    try:
        s = Store(client[mongo_db.name])
        s.ensure_indexes()
        commands.names.clear()
        yield s
    finally:
        client.close()


MakeKnm = Callable[..., Knm]


@pytest.fixture
def make_knm(store: Store) -> MakeKnm:
    def make(**settings: Any) -> Knm:
        return Knm(store, Settings(**settings))

    return make


@pytest.fixture
def knm(make_knm: MakeKnm) -> Knm:
    return make_knm()


def lookup(knm: Knm, number: str) -> dict[str, Any]:
    return lookup_account(knm, number).to_json()


def reads(commands: _Commands) -> list[str]:
    return [n for n in commands.names if n in ("find", "aggregate", "count", "distinct")]


# ================================================================================ lookup
class TestForceOutboundFacts:
    """The "is_force_outbound" test facts (knm_force_outbound_tests)."""

    @pytest.mark.parametrize(
        ("number", "expected"),
        [
            (TEST_PORT_IN_NUM, True),  # local + port_in
            (TEST_VITELITY_NUM, False),  # vitelity in_service
            (TEST_IN_SERVICE_NUM, True),  # local in_service
            (TEST_IN_SERVICE_MDN, True),  # mdn in_service
            (TEST_IN_SERVICE_BAD_CARRIER_NUM, False),  # unknown carrier in_service
            (TEST_NEW_PORT_NUM, True),  # only in a pending port request
            (TEST_PORT_IN3_NUM, True),  # bandwidth2 + port_in
        ],
    )
    def test_force_outbound(self, store: Store, knm: Knm, number: str, expected: bool) -> None:
        load_kazoo(store.db, LOOKUP_NUMBERS, port_request=True)
        result = lookup_account(knm, number)
        assert result.ok, result.to_json()
        assert result.account_id == RESELLER
        assert result.props["force_outbound"] is expected

    def test_telnyx_available_is_not_in_service(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_TELNYX_NUM])
        result = lookup_account(knm, TEST_TELNYX_NUM)
        assert not result.ok
        assert result.to_json() == {"error": "not_in_service", "assigned_to": RESELLER}


class TestLookupAccount:
    """``lookup_account``: errors, the port fallback and every property."""

    def test_local_in_service(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        assert lookup(knm, TEST_IN_SERVICE_NUM) == {
            "pending_port": False,
            "local": True,
            "number": TEST_IN_SERVICE_NUM,
            "account_id": RESELLER,
            "inbound_cnam": False,
            "force_outbound": True,
        }

    def test_vitelity_with_cnam_and_prepend(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_VITELITY_NUM])
        assert lookup(knm, TEST_VITELITY_NUM) == {
            "pending_port": False,
            "local": False,
            "number": TEST_VITELITY_NUM,
            "account_id": RESELLER,
            "prepend": "Vitelity",
            "inbound_cnam": False,  # vitelity's should_lookup_cnam is false
            "force_outbound": False,
        }

    def test_inbound_cnam_on_a_carrier_that_looks_up(self, store: Store, knm: Knm) -> None:
        telnyx = number_doc(
            "+14352154007",
            "in_service",
            "knm_telnyx",
            assigned_to=CHILD,
            features={"inbound_cnam": {"inbound_lookup": True}, "force_outbound": True},
        )
        bad_carrier = number_doc(
            "+15551233338",
            "in_service",
            "knm_pacwest",
            assigned_to=CHILD,
            features={"inbound_cnam": {"inbound_lookup": True}},
        )
        load_kazoo(store.db, [TEST_OLD7_NUM], extra=[telnyx, bad_carrier])
        assert lookup(knm, TEST_OLD7_NUM)["inbound_cnam"] is True  # knm_local: true
        telnyx_props = lookup(knm, "+14352154007")
        assert (telnyx_props["inbound_cnam"], telnyx_props["force_outbound"]) == (True, True)
        assert lookup(knm, "+15551233338")["inbound_cnam"] is True  # unknown module: true

    def test_prepend_and_ringback(self, store: Store, knm: Knm) -> None:
        ringback = number_doc(
            "+15551233339",
            "in_service",
            assigned_to=RESELLER,
            features={"local": {}, "ringback": {"early": "media_1", "transfer": "media_2"}},
        )
        load_kazoo(store.db, [TEST_OLD6_NUM], extra=[ringback])
        assert lookup(knm, TEST_OLD6_NUM)["prepend"] == "pre"
        props = lookup(knm, "+15551233339")
        assert (props["ringback_media"], props["transfer_media"]) == ("media_1", "media_2")
        assert "prepend" not in props

    def test_mdn_is_not_local_gap_16(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        props = lookup(knm, TEST_IN_SERVICE_MDN)
        assert (props["local"], props["force_outbound"]) == (False, True)

    def test_port_in_is_a_pending_port(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_PORT_IN_NUM])
        props = lookup(knm, TEST_PORT_IN_NUM)
        assert (props["pending_port"], props["local"]) == (True, True)

    def test_reserved_routes_to_its_owner(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_RESERVED_NUM])
        props = lookup(knm, TEST_RESERVED_NUM)
        assert (props["account_id"], props["pending_port"]) == (RESELLER, False)

    def test_port_out_routes_to_its_owner(self, store: Store, knm: Knm) -> None:
        doc = number_doc("+15551233340", "port_out", "knm_telnyx", assigned_to=RESELLER)
        load_kazoo(store.db, extra=[doc])
        props = lookup(knm, "+15551233340")
        assert (props["account_id"], props["force_outbound"]) == (RESELLER, True)

    def test_pending_port_request(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, port_request=True)
        result = lookup_account(knm, TEST_NEW_PORT_NUM)
        assert result.account_id == RESELLER
        assert result.to_json() == {
            "pending_port": True,
            "local": True,
            "number": TEST_NEW_PORT_NUM,
            "account_id": RESELLER,
            "inbound_cnam": False,
            "force_outbound": True,
        }

    def test_port_request_with_kazoos_account_key(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db)
        store.port_requests.insert_one(
            {
                "_id": "kazoo_port",
                "numbers": [TEST_NEW_PORT_IN_NUM],
                "pvt_port_state": "scheduled",
                "pvt_account_id": CHILD,
            }
        )
        assert lookup(knm, TEST_NEW_PORT_IN_NUM)["account_id"] == CHILD

    def test_finished_port_request_is_not_found(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db)
        store.port_requests.insert_one(
            {
                "_id": PORT_REQUEST_ID,
                "numbers": [TEST_NEW_PORT_NUM],
                "pvt_port_state": "completed",
                "account_id": RESELLER,
            }
        )
        assert lookup(knm, TEST_NEW_PORT_NUM) == {"error": "not_found"}

    def test_ports_are_not_consulted_when_disabled(
        self, store: Store, make_knm: MakeKnm, commands: _Commands
    ) -> None:
        load_kazoo(store.db, port_request=True)
        knm = make_knm(fetch_account_from_ports=False)
        commands.names.clear()
        assert lookup(knm, TEST_NEW_PORT_NUM) == {"error": "not_found"}
        assert reads(commands) == ["find"]

    def test_unassigned(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM, TEST_AVAILABLE_NON_LOCAL_NUM])
        assert lookup(knm, TEST_AVAILABLE_NUM) == {"error": "unassigned"}
        assert lookup(knm, TEST_AVAILABLE_NON_LOCAL_NUM) == {"error": "unassigned"}

    def test_not_in_service_states(self, store: Store, knm: Knm) -> None:
        aging = number_doc("+15551233341", "aging", assigned_to=CHILD)
        load_kazoo(store.db, [BW_EXISTING_DID], extra=[aging])
        assert lookup(knm, BW_EXISTING_DID) == {"error": "not_in_service", "assigned_to": RESELLER}
        assert lookup(knm, "+15551233341") == {"error": "not_in_service", "assigned_to": CHILD}

    def test_account_disabled(self, store: Store, knm: Knm) -> None:
        load_kazoo(
            store.db,
            [TEST_IN_SERVICE_NUM],
            account_overrides={RESELLER: {"pvt_enabled": False}},
        )
        assert lookup(knm, TEST_IN_SERVICE_NUM) == {
            "error": "account_disabled",
            "assigned_to": RESELLER,
        }

    def test_owner_without_account_document_counts_as_enabled(self, store: Store, knm: Knm) -> None:
        doc = number_doc("+15551233342", "in_service", assigned_to="f" * 32)
        load_kazoo(store.db, accounts=False, extra=[doc])
        assert lookup(knm, "+15551233342")["account_id"] == "f" * 32

    def test_not_reconcilable_and_not_found(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db)
        assert lookup(knm, "1000") == {"error": "not_reconcilable"}
        assert lookup(knm, "") == {"error": "not_reconcilable"}
        result = lookup_account(knm, "4156301234")
        assert (result.number, result.to_json()) == ("+14156301234", {"error": "not_found"})

    @pytest.mark.parametrize("dialed", ["8122154006", "18122154006", "+18122154006"])
    def test_any_dialable_form(self, store: Store, knm: Knm, dialed: str) -> None:
        load_kazoo(store.db, [TEST_VITELITY_NUM])
        assert lookup(knm, dialed)["number"] == TEST_VITELITY_NUM

    def test_kazoo_format_document(self, store: Store, knm: Knm) -> None:
        """A KAZOO document (``pvt_module_name: wnm_local``) is migrated as everywhere else."""
        doc = number_doc("+15551233343", "in_service", assigned_to=RESELLER)
        del doc["pvt_carrier_module"]
        doc["pvt_module_name"] = "wnm_local"
        load_kazoo(store.db, extra=[doc])
        props = lookup(knm, "+15551233343")
        assert (props["local"], props["force_outbound"]) == (True, True)

    @pytest.mark.parametrize(
        ("number", "expected"),
        [
            (TEST_IN_SERVICE_NUM, ["find", "find"]),  # the number, its owner
            (TEST_NEW_PORT_NUM, ["find", "find"]),  # the number (absent), the port
            (TEST_AVAILABLE_NUM, ["find"]),  # unassigned: no account read
            (TEST_TELNYX_NUM, ["find"]),  # not in service: no account read
            ("1000", []),  # not reconcilable: nothing read
        ],
    )
    def test_at_most_two_queries(
        self, store: Store, knm: Knm, commands: _Commands, number: str, expected: list[str]
    ) -> None:
        load_kazoo(store.db, LOOKUP_NUMBERS, port_request=True)
        commands.names.clear()
        lookup_account(knm, number)
        assert reads(commands) == expected

    def test_lookup_writes_nothing(self, store: Store, knm: Knm, commands: _Commands) -> None:
        load_kazoo(store.db, LOOKUP_NUMBERS, port_request=True)
        before = {d["_id"]: d for d in store.numbers.find()}
        commands.names.clear()
        for number in (*LOOKUP_NUMBERS, TEST_NEW_PORT_NUM):
            lookup_account(knm, number)
        assert set(commands.names) <= {"find"}
        assert {d["_id"]: d for d in store.numbers.find()} == before


# ================================================================================ billing
class TestBillingQuantities:
    """``kz_services_quantities`` for numbers (the billing rules, "not quantified" included)."""

    def test_local_numbers_are_not_phone_numbers(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        assert billing.quantities(knm, RESELLER) == {
            "account_id": RESELLER,
            "phone_numbers": {},
            "number_carriers": {"knm_local": 1},
            "number_services": {"local": 1},
            "billable": 0,
        }

    def test_telnyx_number_with_features(self, store: Store, knm: Knm) -> None:
        doc = number_doc(
            "+14352154007",
            "in_service",
            "knm_telnyx",
            assigned_to=CHILD,
            features={
                "e911": {"street_address": "140 Main St"},
                "inbound_cnam": {"inbound_lookup": True},
                "outbound_cnam": {"display_name": "CHILD"},
            },
        )
        load_kazoo(store.db, [TEST_OLD7_NUM], extra=[doc])
        assert billing.quantities(knm, CHILD) == {
            "account_id": CHILD,
            "phone_numbers": {"did_us": 1},
            "number_carriers": {"knm_local": 1, "knm_telnyx": 1},
            "number_services": {"e911": 1, "inbound_cnam": 2, "local": 1, "outbound_cnam": 2},
            "billable": 1,
        }

    def test_other_accounts_and_pool_states_are_not_counted(self, store: Store, knm: Knm) -> None:
        theirs = number_doc("+14352154008", "in_service", "knm_telnyx", assigned_to=MASTER)
        load_kazoo(
            store.db,
            [
                TEST_VITELITY_NUM,  # RESELLER, in_service: counted
                TEST_TELNYX_NUM,  # RESELLER but available: not counted
                TEST_EXISTING_TOLL,  # RESELLER but available: not counted
                BW_EXISTING_DID,  # RESELLER but discovery: not counted
                TEST_OLD7_NUM,  # CHILD
                TEST_AVAILABLE_NON_LOCAL_NUM,  # unassigned
            ],
            extra=[theirs],
        )
        assert billing.quantities(knm, RESELLER) == {
            "account_id": RESELLER,
            "phone_numbers": {"did_us": 1},
            "number_carriers": {"knm_vitelity": 1},
            "number_services": {"inbound_cnam": 1, "outbound_cnam": 1, "prepend": 1},
            "billable": 1,
        }
        assert billing.quantities(knm, MASTER)["number_carriers"] == {"knm_telnyx": 1}

    def test_reseller_fixture_set(self, store: Store, knm: Knm) -> None:
        toll = number_doc("+18005551213", "reserved", "knm_telnyx", assigned_to=RESELLER)
        load_kazoo(
            store.db,
            [
                TEST_IN_SERVICE_NUM,
                TEST_IN_SERVICE_MDN,
                TEST_IN_SERVICE_BAD_CARRIER_NUM,
                TEST_IN_SERVICE_WITH_HISTORY_NUM,
                TEST_RESERVED_NUM,
                TEST_PORT_IN_NUM,
                TEST_PORT_IN2_NUM,
                TEST_PORT_IN3_NUM,
                TEST_VITELITY_NUM,
                TEST_OLD5_1_NUM,
                TEST_OLD6_NUM,
                TEST_OLD7_1_NUM,
            ],
            extra=[toll],
        )
        assert billing.quantities(knm, RESELLER) == {
            "account_id": RESELLER,
            # +15551233337 (knm_pacwest): NXX 123 is no US DID, the catch-all "unknown" wins
            "phone_numbers": {"did_us": 4, "tollfree_us": 1, "unknown": 1},
            "number_carriers": {
                "knm_bandwidth2": 2,
                "knm_local": 6,
                "knm_mdn": 1,
                "knm_pacwest": 1,
                "knm_telnyx": 1,
                "knm_vitelity": 2,
            },
            "number_services": {
                "e911": 1,
                "failover": 1,
                "inbound_cnam": 1,
                "local": 7,
                "outbound_cnam": 3,
                "prepend": 2,
            },
            "billable": 6,
        }

    def test_empty_account(self, store: Store, knm: Knm) -> None:
        load_kazoo(store.db)
        assert billing.quantities(knm, CHILD) == {
            "account_id": CHILD,
            "phone_numbers": {},
            "number_carriers": {},
            "number_services": {},
            "billable": 0,
        }

    def test_renamed_to_inventory_becomes_billable(self, store: Store, knm: Knm) -> None:
        """Renaming a local number to ``knm_inventory`` drops the marker: billed."""
        doc = number_doc("+15552233344", "in_service", "knm_inventory", assigned_to=CHILD)
        load_kazoo(store.db, extra=[doc])
        counted = billing.quantities(knm, CHILD)
        assert (counted["phone_numbers"], counted["billable"]) == ({"did_us": 1}, 1)
        assert counted["number_services"] == {}

    def test_one_query(self, store: Store, knm: Knm, commands: _Commands) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM, TEST_VITELITY_NUM])
        commands.names.clear()
        billing.quantities(knm, RESELLER)
        assert reads(commands) == ["find"]


# ================================================================================ the CLI
Run = Callable[..., Result]


@pytest.fixture
def run(mongo_url: str, mongo_db: Database[Doc]) -> Run:
    """``knm ARGS`` in-process against this test's database; checks the exit code."""
    register(cli)  # idempotent: knm.cli may register the commands itself
    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return invoke


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


class TestCli:
    def test_register_is_idempotent(self) -> None:
        register(cli)
        register(cli)
        from knm.cli.numbers import numbers_app

        assert [c.name for c in numbers_app.registered_commands].count("lookup") == 1
        assert [g.name for g in cli.registered_groups].count("billing") == 1

    def test_lookup_json(self, run: Run, mongo_db: Database[Doc]) -> None:
        load_kazoo(mongo_db, [TEST_VITELITY_NUM, TEST_TELNYX_NUM], port_request=True)
        assert json.loads(run("numbers", "lookup", "8122154006", "--json").stdout) == {
            "pending_port": False,
            "local": False,
            "number": TEST_VITELITY_NUM,
            "account_id": RESELLER,
            "prepend": "Vitelity",
            "inbound_cnam": False,
            "force_outbound": False,
        }
        port = json.loads(run("numbers", "lookup", TEST_NEW_PORT_NUM, "--json").stdout)
        assert (port["pending_port"], port["account_id"]) == (True, RESELLER)
        failed = run("numbers", "lookup", TEST_TELNYX_NUM, "--json", code=1)
        assert json.loads(failed.stdout) == {"error": "not_in_service", "assigned_to": RESELLER}
        missing = run("numbers", "lookup", "1000", "--json", code=1)
        assert json.loads(missing.stdout) == {"error": "not_reconcilable"}

    def test_lookup_table_and_one_line_errors(self, run: Run, mongo_db: Database[Doc]) -> None:
        load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM, TEST_TELNYX_NUM, TEST_AVAILABLE_NUM])
        shown = run("numbers", "lookup", TEST_IN_SERVICE_NUM).stdout
        assert RESELLER in shown
        assert "force_outbound" in shown
        assert one_line(run("numbers", "lookup", TEST_TELNYX_NUM, code=1)) == (
            f"knm: error: {TEST_TELNYX_NUM}: not_in_service (assigned to {RESELLER})"
        )
        assert one_line(run("numbers", "lookup", TEST_AVAILABLE_NUM, code=1)) == (
            f"knm: error: {TEST_AVAILABLE_NUM}: unassigned"
        )

    def test_billing_quantities(self, run: Run, mongo_db: Database[Doc]) -> None:
        load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM, TEST_VITELITY_NUM])
        assert json.loads(run("billing", "quantities", RESELLER, "--json").stdout) == {
            "account_id": RESELLER,
            "phone_numbers": {"did_us": 1},
            "number_carriers": {"knm_local": 1, "knm_vitelity": 1},
            "number_services": {"inbound_cnam": 1, "local": 1, "outbound_cnam": 1, "prepend": 1},
            "billable": 1,
        }
        table = run("billing", "quantities", RESELLER).stdout
        assert "knm_vitelity" in table
        assert "billable numbers: 1" in table

    def test_billing_bad_account_is_a_usage_error(self, run: Run) -> None:
        assert "account id must be 32" in one_line(run("billing", "quantities", "nope", code=2))
