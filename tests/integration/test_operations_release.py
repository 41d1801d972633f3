"""Release: the unwind and its configuration (should_age, should_permanently_delete,
released_state), authorization, and the carrier disconnect (knm_managed inventory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pymongo.database import Database

from carriers.base import Carrier
from carriers.registry import CarrierRegistry, default_registry
from config.settings import Settings
from knm.domain import errors
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.operations import NumberManager
from knm.services.search import SearchQuery
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    CHILD,
    MASTER,
    MODIFIED,
    NOT_FOUND,
    RESELLER,
    TEST_AVAILABLE_NON_LOCAL_NUM,
    TEST_AVAILABLE_NUM,
    TEST_IN_SERVICE_BAD_CARRIER_NUM,
    TEST_IN_SERVICE_MDN,
    TEST_IN_SERVICE_NUM,
    TEST_IN_SERVICE_WITH_HISTORY_NUM,
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
    not_related,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
NUM = "+14155550142"
RECORDER = "knm_release_recorder"
FAILING = "knm_release_failing"


class Recorder(Carrier):
    name: ClassVar[str] = RECORDER
    disconnected: ClassVar[list[str]] = []

    def disconnect_number(self, pn: PhoneNumber) -> None:
        Recorder.disconnected.append(pn.number)


class Failing(Carrier):
    name: ClassVar[str] = FAILING

    def disconnect_number(self, pn: PhoneNumber) -> None:
        raise errors.by_carrier(pn.number)


@pytest.fixture
def registry() -> Iterator[CarrierRegistry]:
    Recorder.disconnected.clear()
    registry = default_registry()
    registry.register(Recorder)
    registry.register(Failing)
    yield registry
    Recorder.disconnected.clear()


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


@pytest.fixture
def nm(store: Store, registry: CarrierRegistry) -> NumberManager:
    return NumberManager(store, Settings(), registry)


def _manager(store: Store, registry: CarrierRegistry, **settings: Any) -> NumberManager:
    return NumberManager(store, Settings(**settings), registry)


def _only(batch: Any, number: str) -> PhoneNumber:
    assert failures(batch) == {}
    assert list(batch.succeeded) == [number]
    pn: PhoneNumber = batch.succeeded[number]
    return pn


def _doc(store: Store, number: str) -> Doc:
    doc = stored(store.db, number)
    assert doc is not None
    return doc


# =========================================================================== release consequences
def test_local_in_service_single_history_is_deleted(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_IN_SERVICE_NUM], accounts=False)
    pn = _only(nm.release([TEST_IN_SERVICE_NUM]), TEST_IN_SERVICE_NUM)
    assert pn.state == S.DELETED
    assert pn.assigned_to is None
    assert pn.previously_assigned_to == RESELLER
    assert pn.reserve_history == []
    assert pn.used_by is None
    assert stored(store.db, TEST_IN_SERVICE_NUM) is None


def test_local_in_service_with_history_goes_back_to_previous_reserver(
    store: Store, nm: NumberManager
) -> None:
    doc = fixture_doc(TEST_IN_SERVICE_WITH_HISTORY_NUM)
    doc.update({"cnam": {"display_name": "X"}, "my_key": 1, "pvt_used_by": "callflow"})
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([TEST_IN_SERVICE_WITH_HISTORY_NUM]), TEST_IN_SERVICE_WITH_HISTORY_NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, MASTER, [MASTER])
    assert pn.features == {"local": {}}
    assert pn.public == {}
    assert pn.previously_assigned_to == RESELLER
    assert pn.used_by is None
    after = _doc(store, TEST_IN_SERVICE_WITH_HISTORY_NUM)
    assert after["pvt_state"] == "reserved"
    assert after["pvt_assigned_to"] == MASTER
    assert after["pvt_reserve_history"] == [MASTER]
    assert after["pvt_previously_assigned_to"] == RESELLER
    assert after["pvt_features"] == {"local": {}}
    assert "cnam" not in after
    assert "my_key" not in after
    assert "pvt_used_by" not in after
    assert after["pvt_rev"] == 2
    assert after["pvt_modified"] > MODIFIED


def test_long_history_unwinds_one_step(store: Store, nm: NumberManager) -> None:
    doc = number_doc(
        NUM, "in_service", RECORDER, assigned_to=CHILD, history=[CHILD, RESELLER, MASTER]
    )
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (
        S.RESERVED,
        RESELLER,
        [RESELLER, MASTER],
    )
    assert Recorder.disconnected == []  # still assigned: not disconnected
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, MASTER, [MASTER])
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.AVAILABLE, None, [])
    assert pn.previously_assigned_to == MASTER
    assert Recorder.disconnected == [NUM]
    after = _doc(store, NUM)
    assert (after["pvt_state"], after["pvt_rev"]) == ("available", 4)
    assert "pvt_assigned_to" not in after


def test_available_local_number_is_deleted(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_AVAILABLE_NUM], accounts=False)
    pn = _only(nm.release([TEST_AVAILABLE_NUM]), TEST_AVAILABLE_NUM)
    assert pn.state == S.DELETED
    assert stored(store.db, TEST_AVAILABLE_NUM) is None


def test_available_telnyx_number_cannot_be_released(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_AVAILABLE_NON_LOCAL_NUM, TEST_TELNYX_NUM], accounts=False)
    batch = nm.release([TEST_AVAILABLE_NON_LOCAL_NUM, TEST_TELNYX_NUM])
    assert batch.succeeded == {}
    assert failures(batch) == {
        TEST_AVAILABLE_NON_LOCAL_NUM: invalid_transition("from available to available"),
        TEST_TELNYX_NUM: invalid_transition("from available to available"),
    }
    assert _doc(store, TEST_TELNYX_NUM) == fixture_doc(TEST_TELNYX_NUM)


def test_unknown_carrier_module_goes_back_to_available(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_IN_SERVICE_BAD_CARRIER_NUM], accounts=False)
    pn = _only(nm.release([TEST_IN_SERVICE_BAD_CARRIER_NUM]), TEST_IN_SERVICE_BAD_CARRIER_NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.AVAILABLE, None, [])
    assert pn.previously_assigned_to == RESELLER
    assert pn.used_by is None
    after = _doc(store, TEST_IN_SERVICE_BAD_CARRIER_NUM)
    assert after["pvt_state"] == "available"
    assert after["pvt_carrier_module"] == "knm_pacwest"
    assert after["pvt_previously_assigned_to"] == RESELLER
    for key in ("pvt_assigned_to", "pvt_reserve_history", "pvt_used_by", "pvt_features"):
        assert key not in after


def test_mdn_is_deleted(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_IN_SERVICE_MDN], accounts=False)
    pn = _only(nm.release([TEST_IN_SERVICE_MDN], Options(mdn_run=True)), TEST_IN_SERVICE_MDN)
    assert pn.state == S.DELETED
    assert stored(store.db, TEST_IN_SERVICE_MDN) is None


def test_features_and_public_fields_are_wiped(store: Store, nm: NumberManager) -> None:
    e911 = {"street_address": "1 Main St", "locality": "SF", "region": "CA", "postal_code": "9"}
    doc = number_doc(
        NUM,
        "in_service",
        RECORDER,
        assigned_to=RESELLER,
        history=[RESELLER],
        features={"e911": e911, "outbound_cnam": {"display_name": "X"}},
        public={"e911": e911, "cnam": {"display_name": "X"}, "custom": [1]},
        pvt_features_denied=["failover"],
    )
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.features, pn.public) == ({}, {})
    after = _doc(store, NUM)
    assert "pvt_features" not in after
    assert not {"e911", "cnam", "custom"} & set(after)
    assert after["pvt_features_denied"] == ["failover"]  # only features and public are reset


@pytest.mark.parametrize("state", [S.RESERVED, S.PORT_IN, S.IN_SERVICE, S.RELEASED])
def test_releasable_states(store: Store, nm: NumberManager, state: NumberState) -> None:
    assigned = state != S.RELEASED
    doc = number_doc(
        NUM,
        state.value,
        RECORDER,
        assigned_to=RESELLER if assigned else None,
        history=[RESELLER] if assigned else [],
    )
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.AVAILABLE, None, [])
    assert Recorder.disconnected == [NUM]
    assert _doc(store, NUM)["pvt_state"] == "available"


@pytest.mark.parametrize("state", [S.DISCOVERY, S.AVAILABLE, S.AGING, S.PORT_OUT, S.DELETED])
def test_unreleasable_states(store: Store, nm: NumberManager, state: NumberState) -> None:
    doc = number_doc(NUM, state.value, RECORDER)
    load_kazoo(store.db, accounts=False, extra=[doc])
    batch = nm.release([NUM])
    assert failures(batch) == {NUM: invalid_transition(f"from {state} to available")}
    assert _doc(store, NUM) == doc
    assert Recorder.disconnected == []


@pytest.mark.parametrize("state", list(NumberState))
def test_local_numbers_release_from_any_state(
    store: Store, nm: NumberManager, state: NumberState
) -> None:
    assigned = state in (S.RESERVED, S.IN_SERVICE, S.PORT_IN, S.PORT_OUT)
    doc = number_doc(
        NUM,
        state.value,
        assigned_to=RESELLER if assigned else None,
        history=[RESELLER] if assigned else [],
    )
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([NUM]), NUM)
    assert pn.state == S.DELETED
    assert stored(store.db, NUM) is None


def test_not_found_and_not_reconcilable(store: Store, nm: NumberManager) -> None:
    batch = nm.release(["1000", NUM])
    assert failures(batch) == {"1000": {"error": "not_reconcilable"}, NUM: NOT_FOUND}


def test_disconnect_failure_fails_the_number_and_writes_nothing(
    store: Store, nm: NumberManager
) -> None:
    doc = number_doc(NUM, "in_service", FAILING, assigned_to=RESELLER, history=[RESELLER])
    load_kazoo(store.db, accounts=False, extra=[doc])
    batch = nm.release([NUM])
    assert failures(batch) == {
        NUM: {
            "error": "unspecified_fault",
            "code": 500,
            "message": "fault by carrier",
            "cause": NUM,
        }
    }
    assert _doc(store, NUM) == doc


# =========================================================================== configuration
def test_should_age_ages_non_local_numbers(store: Store, registry: CarrierRegistry) -> None:
    nm = _manager(store, registry, should_age=True)
    inventory = number_doc(
        NUM, "in_service", "knm_inventory", assigned_to=RESELLER, history=[RESELLER]
    )
    load_kazoo(
        store.db,
        [TEST_IN_SERVICE_BAD_CARRIER_NUM, TEST_IN_SERVICE_NUM, TEST_IN_SERVICE_WITH_HISTORY_NUM],
        accounts=False,
        extra=[inventory],
    )
    numbers = [
        NUM,
        TEST_IN_SERVICE_BAD_CARRIER_NUM,
        TEST_IN_SERVICE_NUM,
        TEST_IN_SERVICE_WITH_HISTORY_NUM,
    ]
    batch = nm.release(numbers)
    assert failures(batch) == {}
    states = {n: (pn.state, pn.assigned_to) for n, pn in batch.succeeded.items()}
    assert states == {
        NUM: (S.AGING, None),
        TEST_IN_SERVICE_BAD_CARRIER_NUM: (S.AGING, None),
        TEST_IN_SERVICE_NUM: (S.DELETED, None),  # local: deleted regardless
        TEST_IN_SERVICE_WITH_HISTORY_NUM: (S.RESERVED, MASTER),  # still assigned: not aged
    }
    for number in (NUM, TEST_IN_SERVICE_BAD_CARRIER_NUM):
        after = _doc(store, number)
        assert after["pvt_state"] == "aging"
        assert "pvt_assigned_to" not in after
        assert after["pvt_previously_assigned_to"] == RESELLER
        assert after["pvt_modified"] > MODIFIED  # the aging clock starts now
    assert stored(store.db, TEST_IN_SERVICE_NUM) is None
    assert _doc(store, TEST_IN_SERVICE_WITH_HISTORY_NUM)["pvt_state"] == "reserved"


def test_should_permanently_delete(store: Store, registry: CarrierRegistry) -> None:
    nm = _manager(store, registry, should_permanently_delete=True, should_age=True)
    kept = number_doc(
        "+14155550143", "in_service", RECORDER, assigned_to=CHILD, history=[CHILD, RESELLER]
    )
    load_kazoo(store.db, [TEST_IN_SERVICE_BAD_CARRIER_NUM], accounts=False, extra=[kept])
    batch = nm.release([TEST_IN_SERVICE_BAD_CARRIER_NUM, "+14155550143"])
    assert failures(batch) == {}
    assert batch.succeeded[TEST_IN_SERVICE_BAD_CARRIER_NUM].state == S.DELETED
    assert stored(store.db, TEST_IN_SERVICE_BAD_CARRIER_NUM) is None
    back = batch.succeeded["+14155550143"]
    assert (back.state, back.assigned_to) == (S.RESERVED, RESELLER)
    assert _doc(store, "+14155550143")["pvt_state"] == "reserved"
    assert Recorder.disconnected == []


def test_released_state_released(store: Store, registry: CarrierRegistry) -> None:
    nm = _manager(store, registry, released_state="released", should_age=True)
    load_kazoo(
        store.db,
        [TEST_IN_SERVICE_BAD_CARRIER_NUM, TEST_AVAILABLE_NON_LOCAL_NUM, TEST_IN_SERVICE_NUM],
        accounts=False,
    )
    batch = nm.release(
        [TEST_IN_SERVICE_BAD_CARRIER_NUM, TEST_AVAILABLE_NON_LOCAL_NUM, TEST_IN_SERVICE_NUM]
    )
    assert failures(batch) == {
        TEST_AVAILABLE_NON_LOCAL_NUM: invalid_transition("from available to released")
    }
    released = batch.succeeded[TEST_IN_SERVICE_BAD_CARRIER_NUM]
    assert (released.state, released.assigned_to) == (S.RELEASED, None)  # not aged
    assert _doc(store, TEST_IN_SERVICE_BAD_CARRIER_NUM)["pvt_state"] == "released"
    assert batch.succeeded[TEST_IN_SERVICE_NUM].state == S.DELETED
    # a released number may be released again (-> released_state) ...
    again = _only(nm.release([TEST_IN_SERVICE_BAD_CARRIER_NUM]), TEST_IN_SERVICE_BAD_CARRIER_NUM)
    assert again.state == S.RELEASED
    # ... and aged by the engine (released -> aging), but never bought directly.
    batch = NumberManager(store, Settings(), registry).move(
        [TEST_IN_SERVICE_BAD_CARRIER_NUM], CHILD
    )
    assert failures(batch) == {
        TEST_IN_SERVICE_BAD_CARRIER_NUM: invalid_transition("from released to in_service")
    }


def test_released_number_goes_to_available_by_default(store: Store, nm: NumberManager) -> None:
    doc = number_doc(NUM, "released", RECORDER, previously_assigned_to=RESELLER)
    load_kazoo(store.db, accounts=False, extra=[doc])
    pn = _only(nm.release([NUM]), NUM)
    assert (pn.state, pn.assigned_to) == (S.AVAILABLE, None)
    assert _doc(store, NUM)["pvt_state"] == "available"


def test_managed_number_returns_to_the_inventory(store: Store, registry: CarrierRegistry) -> None:
    load_kazoo(store.db)
    knm = Knm(store, Settings(), registry)
    knm.generate_numbers("managed", RESELLER, 14155550170, 1)
    number = "+14155550170"
    found = knm.search(SearchQuery(prefix="4155550", account_id=RESELLER, carriers=["knm_managed"]))
    assert [(r.number, r.state) for r in found] == [(number, S.DISCOVERY)]
    _only(knm.numbers.move([number], CHILD, Options(auth_by=RESELLER)), number)
    inventory = store.db["numbers_managed"].find_one({"_id": number})
    assert inventory is not None
    assert (inventory["pvt_state"], inventory["pvt_assigned_to"]) == ("in_service", CHILD)

    pn = _only(knm.numbers.release([number], Options(auth_by=RESELLER)), number)
    assert (pn.state, pn.assigned_to) == (S.AVAILABLE, None)
    inventory = store.db["numbers_managed"].find_one({"_id": number})
    assert inventory is not None
    assert (inventory["pvt_state"], inventory["pvt_assigned_to"]) == ("available", None)
    after = _doc(store, number)
    assert (after["pvt_state"], after["pvt_carrier_module"]) == ("available", "knm_managed")


# =========================================================================== authorization
@pytest.mark.parametrize(
    ("auth_by", "allowed"),
    [
        ("system", True),
        (MASTER, True),  # superduper admin
        (RESELLER, True),  # parent of the owner
        (CHILD, True),  # the owner
        (ACCOUNT_4, False),  # a descendant of the owner
        (UNRELATED, False),
        (None, False),
    ],
)
def test_release_authorization(
    store: Store, nm: NumberManager, auth_by: str | None, allowed: bool
) -> None:
    doc = number_doc(NUM, "in_service", RECORDER, assigned_to=CHILD, history=[CHILD])
    load_kazoo(store.db, extra=[doc])
    batch = nm.release([NUM], Options(auth_by=auth_by))
    if allowed:
        pn = _only(batch, NUM)
        assert (pn.state, pn.assigned_to) == (S.AVAILABLE, None)
        assert _doc(store, NUM)["pvt_state"] == "available"
    else:
        refusal = (
            hidden(NUM, "in_service", auth_by, CHILD)
            if auth_by is not None
            else forbidden(f"number {NUM} is in_service and the requester is unknown")
        )
        assert failures(batch) == {NUM: refusal}
        assert _doc(store, NUM) == doc


def test_reserved_from_parent_does_not_authorize_release(store: Store, nm: NumberManager) -> None:
    """CHILD may activate RESELLER's reserved number but not release it."""
    load_kazoo(store.db, [TEST_RESERVED_NUM])
    batch = nm.get([TEST_RESERVED_NUM], Options(auth_by=CHILD))
    assert failures(batch) == {}
    batch = nm.release([TEST_RESERVED_NUM], Options(auth_by=CHILD))
    assert failures(batch) == {TEST_RESERVED_NUM: not_related(CHILD, RESELLER)}
    assert _doc(store, TEST_RESERVED_NUM) == fixture_doc(TEST_RESERVED_NUM)


def test_unassigned_number_release_needs_an_admin(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db, [TEST_AVAILABLE_NUM])
    batch = nm.release([TEST_AVAILABLE_NUM], Options(auth_by=RESELLER))
    assert failures(batch) == {
        TEST_AVAILABLE_NUM: forbidden(
            f"number {TEST_AVAILABLE_NUM} is assigned to no account: only system or a "
            "superduper admin may do this"
        )
    }
    assert _doc(store, TEST_AVAILABLE_NUM) == fixture_doc(TEST_AVAILABLE_NUM)
    pn = _only(nm.release([TEST_AVAILABLE_NUM], Options(auth_by=MASTER)), TEST_AVAILABLE_NUM)
    assert pn.state == S.DELETED
