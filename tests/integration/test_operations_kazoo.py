"""KAZOO's number-manager eunit facts against a real store.

Each test loads only the KAZOO fixture documents it needs (tests/fixtures_kazoo.py) and asserts
states, owners, histories and error objects, both on the operation's result and in the store.
``dirty`` is observed on records that were not written (get, dry runs, records built
directly) and, for written ones, through the store: a write bumps ``pvt_rev``, a no-op does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pymongo.database import Database

from carriers.base import CarrierContext, SearchRequest
from carriers.local import LocalCarrier
from carriers.registry import default_registry
from config.settings import Settings
from knm.domain.accounts import AccountDirectory
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.operations import NumberManager
from knm.services.search import SearchQuery
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    ASSIGN_FAILURE,
    BW_EXISTING_DID,
    CHILD,
    MASTER,
    MODULES,
    NOT_FOUND,
    NOT_RECONCILABLE,
    RANDOM_HEX,
    RESELLER,
    TEST_AVAILABLE_NON_LOCAL_NUM,
    TEST_AVAILABLE_NUM,
    TEST_CREATE_NUM,
    TEST_EXISTING_TOLL,
    TEST_IN_SERVICE_BAD_CARRIER_NUM,
    TEST_IN_SERVICE_MDN,
    TEST_IN_SERVICE_NUM,
    TEST_NEW_PORT_IN_NUM,
    TEST_NEW_PORT_NUM,
    TEST_PORT_IN2_NUM,
    TEST_PORT_IN_NUM,
    TEST_RESERVED_NUM,
    TEST_TELNYX_NUM,
    UNRELATED,
    Doc,
    failures,
    fixture_doc,
    forbidden,
    hidden,
    invalid_transition,
    load_kazoo,
    number_doc,
    number_exists,
    number_is_porting,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
MDN_OPTIONS = Options(mdn_run=True)
ACCOUNTS = (MASTER, RESELLER, CHILD)


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


@pytest.fixture
def nm(store: Store) -> NumberManager:
    return NumberManager(store, Settings())


def _db(store: Store) -> Database[Doc]:
    return store.db


def _only(batch: Any, number: str) -> PhoneNumber:
    assert failures(batch) == {}
    assert list(batch.succeeded) == [number]
    pn: PhoneNumber = batch.succeeded[number]
    return pn


# =========================================================================== create
class TestCreate:
    def test_master_creates_new_number_for_reseller(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by=MASTER, assign_to=RESELLER))
        pn = _only(batch, TEST_CREATE_NUM)
        assert pn.state == S.IN_SERVICE
        assert pn.assigned_to == RESELLER
        assert pn.previously_assigned_to is None
        assert pn.reserve_history == []
        assert pn.carrier_module == "knm_local"
        assert pn.features == {"local": {}}
        assert pn.ported_in is False
        doc = stored(store.db, TEST_CREATE_NUM)
        assert doc is not None
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == RESELLER
        assert doc["pvt_carrier_module"] == "knm_local"
        assert "pvt_reserve_history" not in doc
        assert isinstance(doc["pvt_created"], datetime)
        assert isinstance(doc["pvt_modified"], datetime)
        assert doc["pvt_rev"] == 1

    def test_create_with_unknown_carrier_module(self, store: Store, nm: NumberManager) -> None:
        """KAZOO stored a module it could not load; knm refuses it (no worker would ever
        consume that module's queue), even for an admin, and stores nothing."""
        load_kazoo(store.db)
        options = Options(auth_by=MASTER, assign_to=RESELLER, module_name="blipblop")
        batch = nm.create([TEST_CREATE_NUM], options)
        assert batch.succeeded == {}
        assert failures(batch) == {
            TEST_CREATE_NUM: {
                "error": "carrier_not_found",
                "code": 400,
                "message": "carrier module blipblop is not known",
                "cause": "blipblop",
            }
        }
        assert stored(store.db, TEST_CREATE_NUM) is None

    def test_reseller_with_additions_creates_for_itself(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db)
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by=RESELLER, assign_to=RESELLER))
        pn = _only(batch, TEST_CREATE_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, RESELLER)
        assert stored(store.db, TEST_CREATE_NUM) is not None

    def test_reseller_without_additions_is_forbidden(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, account_overrides={RESELLER: {"pvt_wnm_allow_additions": False}})
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by=RESELLER, assign_to=RESELLER))
        assert batch.succeeded == {}
        assert failures(batch) == {
            TEST_CREATE_NUM: forbidden("creating number in state 'in_service' is not allowed")
        }
        assert stored(store.db, TEST_CREATE_NUM) is None

    def test_admin_creates_available(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = Options(auth_by=MASTER, assign_to=RESELLER, state=S.AVAILABLE)
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert pn.state == S.AVAILABLE
        assert pn.assigned_to is None
        doc = stored(store.db, TEST_CREATE_NUM)
        assert doc is not None
        assert doc["pvt_state"] == "available"
        assert "pvt_assigned_to" not in doc

    def test_create_existing_available_takes_it_over(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.create([TEST_AVAILABLE_NUM], Options(auth_by=MASTER, assign_to=RESELLER))
        pn = _only(batch, TEST_AVAILABLE_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, RESELLER)
        assert pn.reserve_history == []
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == RESELLER
        assert doc["pvt_rev"] == 2
        assert doc["pvt_created"] == fixture_doc(TEST_AVAILABLE_NUM)["pvt_created"]

    @pytest.mark.parametrize("auth_by", ["system", MASTER])
    def test_create_existing_in_service_is_number_exists(
        self, store: Store, nm: NumberManager, auth_by: str
    ) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        batch = nm.create([TEST_IN_SERVICE_NUM], Options(auth_by=auth_by, assign_to=RESELLER))
        assert batch.succeeded == {}
        assert failures(batch) == {TEST_IN_SERVICE_NUM: number_exists(TEST_IN_SERVICE_NUM)}
        assert stored(store.db, TEST_IN_SERVICE_NUM) == fixture_doc(TEST_IN_SERVICE_NUM)

    def test_reseller_without_additions_may_create_port_in(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, account_overrides={RESELLER: {"pvt_wnm_allow_additions": False}})
        options = Options(
            auth_by=RESELLER, assign_to=RESELLER, state=S.PORT_IN, module_name="knm_telnyx"
        )
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert pn.state == S.PORT_IN
        assert pn.assigned_to == RESELLER
        assert pn.carrier_module == "knm_local"  # port_in forces knm_local
        assert pn.ported_in is False
        registry = default_registry()
        assert registry.is_number_billable(pn.carrier_module, nm.carrier_ctx) is False
        doc = stored(store.db, TEST_CREATE_NUM)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_carrier_module"]) == ("port_in", "knm_local")

    def test_dry_run_writes_nothing(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = Options(auth_by=MASTER, assign_to=RESELLER, dry_run=True)
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, RESELLER)
        assert pn.dirty
        assert stored(store.db, TEST_CREATE_NUM) is None

    @pytest.mark.parametrize("auth_by", ["system", MASTER])
    def test_create_mdn(self, store: Store, nm: NumberManager, auth_by: str) -> None:
        load_kazoo(store.db)
        options = Options(
            auth_by=auth_by,
            assign_to=RESELLER,
            module_name="knm_mdn",
            mdn_run=True,
            public_fields={"mobile": {"provider": "tower-of-power", "device_id": "abc"}},
        )
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert pn.state == S.IN_SERVICE
        assert pn.carrier_module == "knm_mdn"
        assert pn.features == {"local": {}}
        assert pn.public == {"mobile": {"provider": "tower-of-power", "device_id": "abc"}}
        doc = stored(store.db, TEST_CREATE_NUM)
        assert doc is not None
        assert doc["mobile"] == {"provider": "tower-of-power", "device_id": "abc"}
        assert doc["pvt_features"] == {"local": {}}

    def test_create_mdn_without_mdn_run_fails_the_guard(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db)
        options = Options(auth_by=MASTER, assign_to=RESELLER, module_name="knm_mdn")
        batch = nm.create([TEST_CREATE_NUM], options)
        assert failures(batch) == {
            TEST_CREATE_NUM: forbidden(
                f"number {TEST_CREATE_NUM} is an MDN: only an MDN run changes it"
            )
        }
        assert stored(store.db, TEST_CREATE_NUM) is None


class TestCreateChecks:
    """ensure_can_create, ensure_can_load_to_create, ensure_numbers_are_not_porting."""

    @pytest.mark.parametrize("state", ["available", "port_in", "aging"])
    def test_existing_number_in_creatable_state(
        self, store: Store, nm: NumberManager, state: str
    ) -> None:
        doc = number_doc(TEST_CREATE_NUM, state, "knm_inventory")
        load_kazoo(store.db, extra=[doc])
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by=MASTER, assign_to=RESELLER))
        pn = _only(batch, TEST_CREATE_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, RESELLER)
        after = stored(store.db, TEST_CREATE_NUM)
        assert after is not None
        assert (after["pvt_state"], after["pvt_rev"]) == ("in_service", 2)

    @pytest.mark.parametrize(
        "state", ["deleted", "discovery", "in_service", "port_out", "released", "reserved"]
    )
    def test_existing_number_in_other_state_exists(
        self, store: Store, nm: NumberManager, state: str
    ) -> None:
        doc = number_doc(TEST_CREATE_NUM, state, "knm_inventory", assigned_to=RESELLER)
        load_kazoo(store.db, extra=[doc])
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by="system", assign_to=RESELLER))
        assert batch.succeeded == {}
        assert failures(batch) == {TEST_CREATE_NUM: number_exists(TEST_CREATE_NUM)}
        assert stored(store.db, TEST_CREATE_NUM) == doc

    def test_no_options_is_forbidden(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        batch = nm.create([TEST_CREATE_NUM], Options(auth_by=None))
        assert failures(batch) == {
            TEST_CREATE_NUM: forbidden("creating number in state 'in_service' is not allowed")
        }

    def test_reseller_for_itself_creates_in_service(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = Options(assign_to=RESELLER, auth_by=RESELLER)
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert pn.state == S.IN_SERVICE

    def test_number_in_active_port_request_is_porting(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, port_request=True)
        batch = nm.create(
            [TEST_NEW_PORT_NUM, TEST_CREATE_NUM], Options(auth_by=MASTER, assign_to=RESELLER)
        )
        assert failures(batch) == {TEST_NEW_PORT_NUM: number_is_porting(TEST_NEW_PORT_NUM)}
        assert list(batch.succeeded) == [TEST_CREATE_NUM]
        assert stored(store.db, TEST_NEW_PORT_NUM) is None

    def test_finished_port_request_does_not_block(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        store.port_requests.insert_one(
            {"_id": "done", "numbers": [TEST_NEW_PORT_NUM], "pvt_port_state": "completed"}
        )
        batch = nm.create([TEST_NEW_PORT_NUM], Options(auth_by=MASTER, assign_to=RESELLER))
        assert _only(batch, TEST_NEW_PORT_NUM).state == S.IN_SERVICE

    def test_mixed_batch_keeps_failures_per_number(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM, TEST_AVAILABLE_NUM])
        batch = nm.create(
            ["1000", TEST_IN_SERVICE_NUM, TEST_AVAILABLE_NUM, TEST_CREATE_NUM, TEST_CREATE_NUM],
            Options(auth_by=MASTER, assign_to=CHILD),
        )
        assert failures(batch) == {
            "1000": NOT_RECONCILABLE,
            TEST_IN_SERVICE_NUM: number_exists(TEST_IN_SERVICE_NUM),
        }
        assert sorted(batch.succeeded) == sorted([TEST_AVAILABLE_NUM, TEST_CREATE_NUM])
        assert all(pn.assigned_to == CHILD for pn in batch.succeeded.values())


# =========================================================================== move
class TestMove:
    @pytest.mark.parametrize("auth_by", ACCOUNTS)
    @pytest.mark.parametrize("assign_to", ACCOUNTS)
    def test_anyone_buys_an_available_local_number(
        self, store: Store, nm: NumberManager, auth_by: str, assign_to: str
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.move([TEST_AVAILABLE_NUM], assign_to, Options(auth_by=auth_by))
        pn = _only(batch, TEST_AVAILABLE_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, assign_to)
        assert pn.previously_assigned_to == RESELLER
        assert pn.reserve_history == []
        assert pn.features == {"local": {}}
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == assign_to
        assert doc["pvt_previously_assigned_to"] == RESELLER
        assert doc["pvt_rev"] == 2

    @pytest.mark.parametrize("auth_by", ACCOUNTS)
    @pytest.mark.parametrize("assign_to", ACCOUNTS)
    def test_anyone_buys_an_available_telnyx_number(
        self, store: Store, nm: NumberManager, auth_by: str, assign_to: str
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NON_LOCAL_NUM])
        batch = nm.move([TEST_AVAILABLE_NON_LOCAL_NUM], assign_to, Options(auth_by=auth_by))
        pn = _only(batch, TEST_AVAILABLE_NON_LOCAL_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, assign_to)
        assert pn.previously_assigned_to == RESELLER
        assert pn.reserve_history == []
        assert pn.features == {}
        assert pn.carrier_module == "knm_telnyx"
        doc = stored(store.db, TEST_AVAILABLE_NON_LOCAL_NUM)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_assigned_to"]) == ("in_service", assign_to)

    def test_unrelated_account_buys_an_available_number(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.move([TEST_AVAILABLE_NUM], UNRELATED, Options(auth_by=UNRELATED))
        assert _only(batch, TEST_AVAILABLE_NUM).assigned_to == UNRELATED

    def test_reserved_number_child_then_system_then_unrelated(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_RESERVED_NUM])
        pn = _only(nm.move([TEST_RESERVED_NUM], CHILD, Options(auth_by=CHILD)), TEST_RESERVED_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)
        assert pn.previously_assigned_to == RESELLER
        assert pn.reserve_history == [RESELLER]
        doc = stored(store.db, TEST_RESERVED_NUM)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_assigned_to"], doc["pvt_rev"]) == (
            "in_service",
            CHILD,
            2,
        )

        pn = _only(nm.move([TEST_RESERVED_NUM], CHILD), TEST_RESERVED_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)
        doc = stored(store.db, TEST_RESERVED_NUM)
        assert doc is not None
        assert doc["pvt_rev"] == 2  # already in service for CHILD: nothing to write

        batch = nm.move([TEST_RESERVED_NUM], UNRELATED, Options(auth_by=UNRELATED))
        assert failures(batch) == {
            TEST_RESERVED_NUM: hidden(TEST_RESERVED_NUM, "in_service", UNRELATED, CHILD)
        }
        pn = _only(nm.move([TEST_RESERVED_NUM], UNRELATED), TEST_RESERVED_NUM)
        assert (pn.state, pn.assigned_to, pn.previously_assigned_to) == (
            S.IN_SERVICE,
            UNRELATED,
            CHILD,
        )

    def test_unrelated_may_not_take_resellers_reserved_number(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_RESERVED_NUM])
        batch = nm.move([TEST_RESERVED_NUM], UNRELATED, Options(auth_by=UNRELATED))
        assert failures(batch) == {
            TEST_RESERVED_NUM: hidden(TEST_RESERVED_NUM, "reserved", UNRELATED, RESELLER)
        }
        assert stored(store.db, TEST_RESERVED_NUM) == fixture_doc(TEST_RESERVED_NUM)
        pn = _only(nm.move([TEST_RESERVED_NUM], UNRELATED), TEST_RESERVED_NUM)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, UNRELATED)

    def test_public_fields_replace_the_public_part(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        assert fixture_doc(TEST_AVAILABLE_NUM)["my_key"] == "my string"
        options = Options(public_fields={"my_key": 42, "a": "b"})
        pn = _only(nm.move([TEST_AVAILABLE_NUM], RESELLER, options), TEST_AVAILABLE_NUM)
        assert pn.public == {"my_key": 42, "a": "b"}
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert (doc["my_key"], doc["a"]) == (42, "b")

    def test_move_non_existent_mdn_is_not_found(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = Options(module_name="knm_mdn", mdn_run=True)
        batch = nm.move([TEST_CREATE_NUM], RESELLER, options)
        assert batch.succeeded == {}
        assert failures(batch) == {TEST_CREATE_NUM: NOT_FOUND}
        assert stored(store.db, TEST_CREATE_NUM) is None

    def test_move_to_a_non_account_is_assign_failure(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.move([TEST_AVAILABLE_NUM], "not-an-account")
        assert failures(batch) == {TEST_AVAILABLE_NUM: ASSIGN_FAILURE}

    def test_discovered_number_is_acquired_from_its_carrier(
        self, store: Store, mongo_db: Database[Doc]
    ) -> None:
        """A managed-inventory search result is a discovery number; activation acquires it."""
        load_kazoo(mongo_db)
        knm = Knm(store, Settings())
        knm.generate_numbers("managed", RESELLER, 14155550100, 2)
        results = knm.search(
            SearchQuery(prefix="415555", quantity=2, account_id=RESELLER, carriers=["knm_managed"])
        )
        assert [(r.number, r.state) for r in results] == [
            ("+14155550100", S.DISCOVERY),
            ("+14155550101", S.DISCOVERY),
        ]
        batch = knm.numbers.move(["+14155550100"], CHILD, Options(auth_by=RESELLER))
        pn = _only(batch, "+14155550100")
        assert (pn.state, pn.assigned_to, pn.carrier_module) == (
            S.IN_SERVICE,
            CHILD,
            "knm_managed",
        )
        inventory = mongo_db["numbers_managed"].find_one({"_id": "+14155550100"})
        assert inventory is not None
        assert (inventory["pvt_state"], inventory["pvt_assigned_to"]) == ("in_service", CHILD)
        doc = stored(mongo_db, "+14155550100")
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_carrier_module"], doc["pvt_rev"]) == (
            "in_service",
            "knm_managed",
            1,
        )
        # Not discovered: not found.
        batch = knm.numbers.move(["+14155550199"], CHILD)
        assert failures(batch) == {"+14155550199": NOT_FOUND}


# =========================================================================== reserve
class TestReserve:
    def test_available_reserved_for_reseller(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.reserve([TEST_AVAILABLE_NUM], Options(assign_to=RESELLER))
        pn = _only(batch, TEST_AVAILABLE_NUM)
        assert (pn.state, pn.assigned_to) == (S.RESERVED, RESELLER)
        assert pn.reserve_history == [RESELLER]
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert doc["pvt_reserve_history"] == [RESELLER]
        assert doc["pvt_state"] == "reserved"

    def test_in_service_rereserved_for_owner_then_for_child(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        pn = _only(
            nm.reserve([TEST_IN_SERVICE_NUM], Options(assign_to=RESELLER)), TEST_IN_SERVICE_NUM
        )
        assert (pn.state, pn.assigned_to) == (S.RESERVED, RESELLER)
        assert pn.reserve_history == [RESELLER]
        assert pn.used_by == "callflow"  # same owner: used_by kept

        doc = number_doc(
            TEST_IN_SERVICE_NUM,
            "in_service",
            assigned_to=RESELLER,
            history=[RESELLER],
            used_by="callflow",
            rev=5,
        )
        store.numbers.replace_one({"_id": TEST_IN_SERVICE_NUM}, doc)
        pn = _only(nm.reserve([TEST_IN_SERVICE_NUM], Options(assign_to=CHILD)), TEST_IN_SERVICE_NUM)
        assert (pn.state, pn.assigned_to) == (S.RESERVED, CHILD)
        assert pn.reserve_history == [CHILD, RESELLER]
        assert pn.previously_assigned_to == RESELLER
        assert pn.used_by is None
        after = stored(store.db, TEST_IN_SERVICE_NUM)
        assert after is not None
        assert after["pvt_reserve_history"] == [CHILD, RESELLER]
        assert "pvt_used_by" not in after
        assert after["pvt_rev"] == 6

    def test_mdn_cannot_be_reserved(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        batch = nm.reserve([TEST_IN_SERVICE_MDN], Options())
        assert failures(batch) == {TEST_IN_SERVICE_MDN: ASSIGN_FAILURE}
        batch = nm.reserve([TEST_IN_SERVICE_MDN], Options(assign_to=RESELLER, mdn_run=True))
        assert failures(batch) == {
            TEST_IN_SERVICE_MDN: invalid_transition("from 'MDN' to reserved")
        }
        assert stored(store.db, TEST_IN_SERVICE_MDN) == fixture_doc(TEST_IN_SERVICE_MDN)

    def test_assign_to_is_checked_after_the_fetch(self, store: Store, nm: NumberManager) -> None:
        """Only fetched numbers fail assign_failure; the others keep their own reason."""
        load_kazoo(store.db, [TEST_AVAILABLE_NUM, TEST_IN_SERVICE_NUM])
        batch = nm.reserve(
            ["1000", TEST_CREATE_NUM, TEST_AVAILABLE_NUM, TEST_IN_SERVICE_NUM],
            Options(auth_by=CHILD),
        )
        assert batch.succeeded == {}
        assert failures(batch) == {
            "1000": NOT_RECONCILABLE,
            TEST_CREATE_NUM: NOT_FOUND,
            TEST_AVAILABLE_NUM: ASSIGN_FAILURE,
            TEST_IN_SERVICE_NUM: hidden(TEST_IN_SERVICE_NUM, "in_service", CHILD, RESELLER),
        }
        assert stored(store.db, TEST_AVAILABLE_NUM) == fixture_doc(TEST_AVAILABLE_NUM)


# =========================================================================== get
class TestGet:
    @pytest.mark.parametrize("auth_by", [RESELLER, MASTER, RANDOM_HEX, UNRELATED, "system"])
    def test_available_number_is_visible_to_all(
        self, store: Store, nm: NumberManager, auth_by: str
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        pn = _only(nm.get([TEST_AVAILABLE_NUM], Options(auth_by=auth_by)), TEST_AVAILABLE_NUM)
        assert pn.dirty is False
        assert pn.carrier_module == "knm_local"
        assert pn.state == S.AVAILABLE
        assert pn.public == {"my_key": "my string"}

    def test_assigned_number_is_hidden_from_unrelated(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        for auth_by in (RANDOM_HEX, UNRELATED, CHILD):
            batch = nm.get([TEST_IN_SERVICE_NUM], Options(auth_by=auth_by))
            assert failures(batch) == {
                TEST_IN_SERVICE_NUM: hidden(TEST_IN_SERVICE_NUM, "in_service", auth_by, RESELLER)
            }, auth_by
        for auth_by in (RESELLER, MASTER, "system"):
            pn = _only(nm.get([TEST_IN_SERVICE_NUM], Options(auth_by=auth_by)), TEST_IN_SERVICE_NUM)
            assert pn.dirty is False

    def test_module_name_option_is_applied_to_fetched_numbers(
        self, store: Store, nm: NumberManager
    ) -> None:
        """module_name is also applied to existing numbers loaded by get (not saved)."""
        load_kazoo(store.db, [TEST_AVAILABLE_NUM, TEST_AVAILABLE_NON_LOCAL_NUM])
        batch = nm.get(
            [TEST_AVAILABLE_NUM, TEST_AVAILABLE_NON_LOCAL_NUM], Options(module_name="knm_telnyx")
        )
        local = batch.succeeded[TEST_AVAILABLE_NUM]
        assert (local.carrier_module, local.features, local.dirty) == ("knm_telnyx", {}, True)
        telnyx = batch.succeeded[TEST_AVAILABLE_NON_LOCAL_NUM]
        assert (telnyx.carrier_module, telnyx.dirty) == ("knm_telnyx", False)
        assert stored(store.db, TEST_AVAILABLE_NUM) == fixture_doc(TEST_AVAILABLE_NUM)

    def test_reserved_by_superduper_admin_is_visible_to_anyone(
        self, store: Store, nm: NumberManager
    ) -> None:
        """is_reserved_from_parent holds when the owner is a superduper admin."""
        doc = number_doc(TEST_CREATE_NUM, "reserved", assigned_to=MASTER, history=[MASTER])
        load_kazoo(store.db, extra=[doc])
        for auth_by in (UNRELATED, CHILD, None):
            pn = _only(nm.get([TEST_CREATE_NUM], Options(auth_by=auth_by)), TEST_CREATE_NUM)
            assert (pn.state, pn.assigned_to) == (S.RESERVED, MASTER)

    def test_unreconcilable_keyed_by_input(self, store: Store, nm: NumberManager) -> None:
        batch = nm.get(["1000"])
        assert batch.succeeded == {}
        assert failures(batch) == {"1000": NOT_RECONCILABLE}

    def test_not_found_keyed_by_normalized_number(self, store: Store, nm: NumberManager) -> None:
        batch = nm.get(["4156301234"])
        assert batch.succeeded == {}
        assert failures(batch) == {"+14156301234": NOT_FOUND}

    def test_mixed_list_one_result_per_distinct_number(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        batch = nm.get(
            ["1000", "4156301234", "+14156301234", TEST_AVAILABLE_NUM, "14156301234", "1000"]
        )
        assert list(batch.succeeded) == [TEST_AVAILABLE_NUM]
        assert failures(batch) == {"1000": NOT_RECONCILABLE, "+14156301234": NOT_FOUND}


# =========================================================================== MDN
class TestMdn:
    def test_move_mdn_in_service_to_master(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        dry = nm.move([TEST_IN_SERVICE_MDN], MASTER, MDN_OPTIONS.but(dry_run=True))
        assert _only(dry, TEST_IN_SERVICE_MDN).dirty is True
        pn = _only(nm.move([TEST_IN_SERVICE_MDN], MASTER, MDN_OPTIONS), TEST_IN_SERVICE_MDN)
        assert (pn.state, pn.assigned_to, pn.previously_assigned_to) == (
            S.IN_SERVICE,
            MASTER,
            RESELLER,
        )
        doc = stored(store.db, TEST_IN_SERVICE_MDN)
        assert doc is not None
        assert (doc["pvt_assigned_to"], doc["pvt_rev"]) == (MASTER, 2)

    def test_release_mdn_deletes_it(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        pn = _only(nm.release([TEST_IN_SERVICE_MDN], MDN_OPTIONS), TEST_IN_SERVICE_MDN)
        assert pn.state == S.DELETED
        assert pn.assigned_to is None
        assert stored(store.db, TEST_IN_SERVICE_MDN) is None

    def test_reserve_mdn_with_default_options_fails(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        batch = nm.reserve([TEST_IN_SERVICE_MDN], Options())
        assert batch.succeeded == {}
        assert TEST_IN_SERVICE_MDN in batch.failed
        assert stored(store.db, TEST_IN_SERVICE_MDN) == fixture_doc(TEST_IN_SERVICE_MDN)

    def test_create_mdn(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = MDN_OPTIONS.but(module_name="knm_mdn", assign_to=RESELLER)
        pn = _only(nm.create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert (pn.state, pn.features) == (S.IN_SERVICE, {"local": {}})

    @pytest.mark.parametrize(
        ("auth_by", "mdn_run", "number", "allowed"),
        [
            (MASTER, True, TEST_IN_SERVICE_MDN, True),
            (MASTER, True, TEST_IN_SERVICE_NUM, False),
            (MASTER, False, TEST_IN_SERVICE_MDN, False),
            (MASTER, False, TEST_IN_SERVICE_NUM, True),
            ("system", True, TEST_IN_SERVICE_MDN, True),
            ("system", True, TEST_IN_SERVICE_NUM, True),
            ("system", False, TEST_IN_SERVICE_MDN, True),
            ("system", False, TEST_IN_SERVICE_NUM, True),
        ],
    )
    def test_mdn_run_save_guard(
        self,
        store: Store,
        nm: NumberManager,
        auth_by: str,
        mdn_run: bool,
        number: str,
        allowed: bool,
    ) -> None:
        load_kazoo(store.db, [number])
        batch = nm.update(
            [number],
            [lambda pn: pn.update_public({"*": 42})],
            Options(auth_by=auth_by, mdn_run=mdn_run),
        )
        doc = stored(store.db, number)
        assert doc is not None
        if allowed:
            assert _only(batch, number).public == {"*": 42}
            assert (doc["*"], doc["pvt_rev"]) == (42, 2)
        else:
            assert batch.succeeded == {}
            cause = (
                f"an MDN run changes only MDNs and number {number} is not one"
                if mdn_run
                else f"number {number} is an MDN: only an MDN run changes it"
            )
            assert failures(batch) == {number: forbidden(cause)}
            assert doc == fixture_doc(number)

    def test_mdn_guard_ignores_unchanged_numbers(self, store: Store, nm: NumberManager) -> None:
        """Only dirty records go through the guard (the save pipeline's persist step)."""
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN])
        batch = nm.update([TEST_IN_SERVICE_MDN], [], Options(auth_by=MASTER))
        assert _only(batch, TEST_IN_SERVICE_MDN).dirty is False


# =========================================================================== used_by
class TestUsedBy:
    def test_assign_to_app(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        before = PhoneNumber.from_document(fixture_doc(TEST_IN_SERVICE_NUM), MODULES)
        assert before.dirty is False
        dry = nm.assign_to_app([TEST_IN_SERVICE_NUM], "my_app", Options(dry_run=True))
        assert _only(dry, TEST_IN_SERVICE_NUM).dirty is True
        pn = _only(nm.assign_to_app([TEST_IN_SERVICE_NUM], "my_app"), TEST_IN_SERVICE_NUM)
        assert pn.used_by == "my_app"
        doc = stored(store.db, TEST_IN_SERVICE_NUM)
        assert doc is not None
        assert (doc["pvt_used_by"], doc["pvt_rev"]) == ("my_app", 2)
        assert doc["pvt_modified"] > fixture_doc(TEST_IN_SERVICE_NUM)["pvt_modified"]

    def test_assign_to_no_app_clears(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        pn = _only(nm.assign_to_app([TEST_IN_SERVICE_NUM], None), TEST_IN_SERVICE_NUM)
        assert pn.used_by is None
        doc = stored(store.db, TEST_IN_SERVICE_NUM)
        assert doc is not None
        assert "pvt_used_by" not in doc
        assert doc["pvt_rev"] == 2

    def test_used_by_dirty_rules_number_in_use(self) -> None:
        doc = fixture_doc(TEST_IN_SERVICE_NUM)
        pn = PhoneNumber.from_document(doc, MODULES)
        assert (pn.used_by, pn.dirty) == ("callflow", False)
        pn.set_used_by(None)
        assert (pn.used_by, pn.dirty) == (None, True)
        pn = PhoneNumber.from_document(doc, MODULES)
        pn.set_used_by("my_app")
        assert (pn.used_by, pn.dirty) == ("my_app", True)
        pn = PhoneNumber.from_document(doc, MODULES)
        pn.set_used_by("my_app")
        pn._dirty = False  # as after a save
        pn.set_used_by(None)
        assert (pn.used_by, pn.dirty) == (None, True)

    def test_used_by_dirty_rules_unused_mdn(self) -> None:
        doc = fixture_doc(TEST_IN_SERVICE_MDN)
        pn = PhoneNumber.from_document(doc, MODULES)
        assert (pn.used_by, pn.dirty) == (None, False)
        pn.set_used_by(None)
        assert (pn.used_by, pn.dirty) == (None, False)
        pn.set_used_by("my_app")
        assert (pn.used_by, pn.dirty) == ("my_app", True)
        pn._dirty = False
        pn.set_used_by(None)
        assert (pn.used_by, pn.dirty) == (None, True)

    def test_used_by_unchanged_is_not_written(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_MDN, TEST_IN_SERVICE_NUM])
        dry = nm.assign_to_app(
            [TEST_IN_SERVICE_MDN, TEST_IN_SERVICE_NUM], None, Options(dry_run=True)
        )
        assert failures(dry) == {}
        assert dry.succeeded[TEST_IN_SERVICE_MDN].dirty is False
        assert dry.succeeded[TEST_IN_SERVICE_NUM].dirty is True
        nm.assign_to_app([TEST_IN_SERVICE_MDN], None)
        assert stored(store.db, TEST_IN_SERVICE_MDN) == fixture_doc(TEST_IN_SERVICE_MDN)
        nm.assign_to_app([TEST_IN_SERVICE_NUM], "callflow")
        assert stored(store.db, TEST_IN_SERVICE_NUM) == fixture_doc(TEST_IN_SERVICE_NUM)

    def test_changing_owner_clears_used_by(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_BAD_CARRIER_NUM])
        pn = _only(
            nm.move([TEST_IN_SERVICE_BAD_CARRIER_NUM], CHILD), TEST_IN_SERVICE_BAD_CARRIER_NUM
        )
        assert (pn.assigned_to, pn.used_by) == (CHILD, None)
        doc = stored(store.db, TEST_IN_SERVICE_BAD_CARRIER_NUM)
        assert doc is not None
        assert "pvt_used_by" not in doc


# =========================================================================== local numbers
class TestLocalSearchAndInfo:
    def test_local_find_numbers_without_account_is_not_available(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM], accounts=False)
        carrier = LocalCarrier(CarrierContext(store.db, Settings()))
        assert carrier.find_numbers(SearchRequest(prefix="415", quantity=1)) == []
        assert carrier.find_numbers(SearchRequest(prefix="+1555", quantity=1)) == []

    def test_account_search_finds_local_and_reserved_numbers(self, store: Store) -> None:
        load_kazoo(
            store.db,
            [TEST_AVAILABLE_NUM, TEST_EXISTING_TOLL, TEST_RESERVED_NUM, TEST_IN_SERVICE_NUM],
        )
        knm = Knm(store, Settings())
        found = knm.search(SearchQuery(prefix="555", quantity=5, account_id=CHILD))
        assert [(r.number, r.carrier_module, r.state) for r in found] == [
            (TEST_AVAILABLE_NUM, "knm_local", S.AVAILABLE)
        ]
        # CHILD sees what its reseller reserved (knm_reserved_reseller) and may activate it.
        found = knm.search(SearchQuery(prefix="425", quantity=5, account_id=CHILD))
        assert [(r.number, r.state) for r in found] == [(TEST_RESERVED_NUM, S.RESERVED)]
        pn = _only(
            knm.numbers.move([TEST_RESERVED_NUM], CHILD, Options(auth_by=CHILD)),
            TEST_RESERVED_NUM,
        )
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)

    def test_info_facts(self, store: Store) -> None:
        load_kazoo(store.db)
        knm = Knm(store, Settings())
        accounts = AccountDirectory(store.find_accounts([MASTER, RESELLER, CHILD]))
        for account, reseller in ((RESELLER, RESELLER), (CHILD, RESELLER), (CHILD, None)):
            modules = knm.searcher.carriers_for(
                accounts.get(account), accounts.get(reseller) if reseller else None
            )
            assert "knm_local" in modules
            assert knm.numbers.carriers.max_prefix_length(modules, knm.numbers.carrier_ctx) == 10
        assert {S.IN_SERVICE, S.RESERVED, S.AVAILABLE} <= set(
            accounts.allowed_creation_states(MASTER)
        )
        assert accounts.allowed_creation_states(RESELLER) == (S.IN_SERVICE, S.RESERVED)
        assert accounts.allowed_creation_states(CHILD) == ()

    def test_is_number_billable(self, store: Store) -> None:
        registry = default_registry()
        ctx = CarrierContext(store.db, Settings())
        assert registry.is_number_billable("knm_local", ctx) is False
        pn = PhoneNumber.from_document(
            {**fixture_doc(TEST_AVAILABLE_NUM), "pvt_carrier_module": "wnm_pacwest"}, MODULES
        )
        assert pn.carrier_module == "knm_pacwest"
        assert registry.is_number_billable(pn.carrier_module, ctx) is True


# =========================================================================== ports
class TestPortRequest:
    @pytest.mark.parametrize("number", [TEST_PORT_IN_NUM, TEST_PORT_IN2_NUM])
    def test_port_in_number_completes(self, store: Store, nm: NumberManager, number: str) -> None:
        load_kazoo(store.db, [number])
        options = Options(auth_by=MASTER, assign_to=RESELLER, ported_in=True)
        pn = _only(nm.create([number], options), number)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, RESELLER)
        assert pn.reserve_history == [RESELLER]
        assert pn.carrier_module == "knm_local"
        assert pn.ported_in is True
        assert default_registry().is_number_billable(pn.carrier_module, nm.carrier_ctx) is False
        doc = stored(store.db, number)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_ported_in"], doc["pvt_reserve_history"]) == (
            "in_service",
            True,
            [RESELLER],
        )

    def test_available_number_ported_in(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        options = Options(auth_by=MASTER, assign_to=RESELLER, ported_in=True)
        pn = _only(nm.create([TEST_AVAILABLE_NUM], options), TEST_AVAILABLE_NUM)
        assert (pn.state, pn.assigned_to, pn.ported_in) == (S.IN_SERVICE, RESELLER, True)
        assert pn.reserve_history == []
        assert pn.carrier_module == "knm_local"

    @pytest.mark.parametrize("number", [TEST_NEW_PORT_IN_NUM, TEST_NEW_PORT_NUM])
    def test_new_number_ported_in(self, store: Store, nm: NumberManager, number: str) -> None:
        """ported_in skips the "is porting" check (TEST_NEW_PORT_NUM is in an active port)."""
        load_kazoo(store.db, port_request=True)
        options = Options(auth_by=MASTER, assign_to=RESELLER, ported_in=True)
        pn = _only(nm.create([number], options), number)
        assert (pn.state, pn.assigned_to, pn.ported_in) == (S.IN_SERVICE, RESELLER, True)
        assert pn.carrier_module == "knm_local"
        doc = stored(store.db, number)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_ported_in"]) == ("in_service", True)

    def test_ported_in_bypasses_creation_permission(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, account_overrides={CHILD: {"pvt_wnm_allow_additions": False}})
        options = Options(auth_by=CHILD, assign_to=CHILD, ported_in=True)
        pn = _only(nm.create([TEST_NEW_PORT_IN_NUM], options), TEST_NEW_PORT_IN_NUM)
        assert (pn.state, pn.ported_in) == (S.IN_SERVICE, True)

    def test_ported_in_module_comes_from_config(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_PORT_IN_NUM, TEST_PORT_IN2_NUM])
        nm = NumberManager(store, Settings(port_in_module_name="knm_inventory"))
        options = Options(assign_to=RESELLER, ported_in=True)
        pn = _only(nm.create([TEST_PORT_IN_NUM], options), TEST_PORT_IN_NUM)
        assert pn.carrier_module == "knm_inventory"
        assert pn.features == {}
        pn = _only(
            nm.create([TEST_PORT_IN2_NUM], options.but(module_name="knm_local")),
            TEST_PORT_IN2_NUM,
        )
        assert pn.carrier_module == "knm_local"
        new = _only(nm.create([TEST_NEW_PORT_IN_NUM], options), TEST_NEW_PORT_IN_NUM)
        assert new.carrier_module == "knm_inventory"

    @pytest.mark.parametrize("auth_by", [MASTER, "system"])
    def test_available_created_without_ported_in(
        self, store: Store, nm: NumberManager, auth_by: str
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM])
        options = Options(auth_by=auth_by, assign_to=RESELLER)
        pn = _only(nm.create([TEST_AVAILABLE_NUM], options), TEST_AVAILABLE_NUM)
        assert (pn.state, pn.ported_in) == (S.IN_SERVICE, False)
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert doc["pvt_ported_in"] is False

    def test_create_port_in_for_new_number(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db)
        options = Options(auth_by=RESELLER, assign_to=RESELLER, state=S.PORT_IN)
        pn = _only(nm.create([TEST_NEW_PORT_IN_NUM], options), TEST_NEW_PORT_IN_NUM)
        assert (pn.state, pn.assigned_to, pn.ported_in) == (S.PORT_IN, RESELLER, False)
        # the port completes: port_in -> in_service through create(ported_in)
        options = Options(assign_to=RESELLER, ported_in=True, public_fields={"port_id": "p1"})
        pn = _only(nm.create([TEST_NEW_PORT_IN_NUM], options), TEST_NEW_PORT_IN_NUM)
        assert (pn.state, pn.ported_in, pn.public) == (S.IN_SERVICE, True, {"port_id": "p1"})
        doc = stored(store.db, TEST_NEW_PORT_IN_NUM)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_rev"], doc["port_id"]) == ("in_service", 2, "p1")


# =========================================================================== update
class TestUpdate:
    def test_update_bypasses_the_state_engine(self, store: Store, nm: NumberManager) -> None:
        """The port "compatibility transition": port_in -> in_service by explicit setters."""
        load_kazoo(store.db, [TEST_PORT_IN_NUM], accounts=False)
        setters = [
            lambda pn: pn.set_state(S.IN_SERVICE),
            lambda pn: pn.set_ported_in(True),
            lambda pn: pn.update_public({"portin_reason": "first inbound call"}),
        ]
        pn = _only(nm.update([TEST_PORT_IN_NUM], setters), TEST_PORT_IN_NUM)
        assert (pn.state, pn.ported_in, pn.assigned_to) == (S.IN_SERVICE, True, RESELLER)
        doc = stored(store.db, TEST_PORT_IN_NUM)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_ported_in"], doc["portin_reason"], doc["pvt_rev"]) == (
            "in_service",
            True,
            "first inbound call",
            2,
        )

    def test_update_without_setters_changes_nothing(self, store: Store, nm: NumberManager) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM], accounts=False)
        pn = _only(nm.update([TEST_IN_SERVICE_NUM], []), TEST_IN_SERVICE_NUM)
        assert pn.dirty is False
        assert stored(store.db, TEST_IN_SERVICE_NUM) == fixture_doc(TEST_IN_SERVICE_NUM)

    def test_update_doc_merges_and_reset_doc_replaces(
        self, store: Store, nm: NumberManager
    ) -> None:
        load_kazoo(store.db, [TEST_AVAILABLE_NUM], accounts=False)
        merged = _only(
            nm.update([TEST_AVAILABLE_NUM], [lambda pn: pn.update_public({"a": {"b": 1}})]),
            TEST_AVAILABLE_NUM,
        )
        assert merged.public == {"my_key": "my string", "a": {"b": 1}}
        replaced = _only(
            nm.update([TEST_AVAILABLE_NUM], [lambda pn: pn.reset_public({"c": 2, "id": "x"})]),
            TEST_AVAILABLE_NUM,
        )
        assert replaced.public == {"c": 2}  # "id" is stripped
        doc = stored(store.db, TEST_AVAILABLE_NUM)
        assert doc is not None
        assert (doc["c"], doc["pvt_rev"], "my_key" in doc, "a" in doc) == (2, 3, False, False)


def test_bw_discovery_doc_is_hidden_from_child(store: Store, nm: NumberManager) -> None:
    """A stored discovery doc assigned to RESELLER is not visible to its sub-account."""
    load_kazoo(store.db, [BW_EXISTING_DID, TEST_TELNYX_NUM])
    batch = nm.get([BW_EXISTING_DID, TEST_TELNYX_NUM], Options(auth_by=CHILD))
    refusal = hidden(BW_EXISTING_DID, "discovery", CHILD, RESELLER)
    assert failures(batch) == {BW_EXISTING_DID: refusal}
    assert list(batch.succeeded) == [TEST_TELNYX_NUM]  # available: visible to everyone
