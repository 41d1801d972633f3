"""Every cell of the transition table, allowed and refused.

Two levels:
* the engine itself (``knm.states.transition``) for every (current, target) pair, including
  unsupported targets, the MDN rules, each guard and each effect;
* the operations that reach each cell against a real store: ``reserve`` (-> reserved), ``move``
  (-> in_service, discovery numbers from the search cache or a stored discovery doc) and ``create``
  on existing or new numbers (-> available / aging / port_in / reserved / in_service; existing
  numbers must be aging/available/port_in, else 409 number_exists).

Acquisition is observed through a recording carrier module registered for these tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pymongo.database import Database

from carriers.base import Carrier, SearchResult
from carriers.registry import CarrierRegistry, default_registry
from config.settings import Settings
from knm.domain.accounts import Account, AccountDirectory
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.domain.states import TransitionContext, transition
from knm.services.operations import NumberManager
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    CHILD,
    MASTER,
    MODULES,
    RESELLER,
    UNRELATED,
    Doc,
    account_docs,
    failures,
    forbidden,
    invalid_transition,
    load_kazoo,
    no_change_required,
    number_doc,
    number_exists,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
NUM = "+14155550123"
RECORDER = "knm_test_recorder"

ALL_STATES: tuple[NumberState, ...] = tuple(NumberState)
SUPPORTED_TARGETS = (S.RESERVED, S.IN_SERVICE, S.AVAILABLE, S.AGING, S.PORT_IN)
UNSUPPORTED_TARGETS = tuple(s for s in ALL_STATES if s not in SUPPORTED_TARGETS)
#: States in which the fixtures below keep the number assigned to RESELLER.
ASSIGNED_STATES = frozenset({S.RESERVED, S.IN_SERVICE, S.PORT_IN, S.PORT_OUT})

#: (current, target) -> (needs authorization?, acquires?) for the allowed cells.
ALLOWED: dict[tuple[NumberState, NumberState], tuple[bool, bool]] = {
    (S.DISCOVERY, S.RESERVED): (True, True),
    (S.AVAILABLE, S.RESERVED): (True, False),
    (S.RESERVED, S.RESERVED): (True, True),
    (S.IN_SERVICE, S.RESERVED): (True, False),
    (S.DISCOVERY, S.IN_SERVICE): (True, True),
    (S.AVAILABLE, S.IN_SERVICE): (False, False),
    (S.RESERVED, S.IN_SERVICE): (True, False),
    (S.IN_SERVICE, S.IN_SERVICE): (True, False),
    (S.PORT_IN, S.IN_SERVICE): (True, False),
    (S.AGING, S.IN_SERVICE): (False, False),
    (S.AVAILABLE, S.AVAILABLE): (True, False),
    (S.AVAILABLE, S.AGING): (False, False),
    (S.AGING, S.AGING): (False, False),
    (S.RELEASED, S.AGING): (False, False),
    (S.PORT_IN, S.PORT_IN): (False, False),
}


def _accounts() -> AccountDirectory:
    return AccountDirectory(Account.from_document(d) for d in account_docs().values())


def _pn(state: NumberState | None, module: str = "knm_inventory") -> PhoneNumber:
    """A stored record in ``state``; assigned to RESELLER (history [RESELLER]) where that fits."""
    assigned = state in ASSIGNED_STATES
    doc = number_doc(
        NUM,
        state.value if state is not None else "available",
        module,
        assigned_to=RESELLER if assigned else None,
        previously_assigned_to=None if assigned else MASTER,
        history=[RESELLER] if assigned else [],
        used_by="callflow" if assigned else None,
    )
    pn = PhoneNumber.from_document(doc, MODULES)
    if state is None:
        pn.state = None
    assert pn.dirty is False
    return pn


def _ctx(auth_by: str | None = "system", assign_to: str | None = CHILD) -> TransitionContext:
    return TransitionContext(Options(auth_by=auth_by, assign_to=assign_to), _accounts())


def not_related(auth_by: str, owner: str, *, subaccount: bool = False) -> Doc:
    """The 403 of a requester that is not the owner (or assignee) or one of its ancestors."""
    cause = (
        f"account '{auth_by}' is not '{owner}' or one of its ancestors "
        "(nor system or a superduper admin)"
    )
    if subaccount:
        cause += ", and the number is not reserved by one of its ancestors"
    return forbidden(cause)


def _refusal(current: NumberState | None, target: NumberState) -> Doc:
    if target not in SUPPORTED_TARGETS:
        return invalid_transition(None)
    return invalid_transition(f"from {current.value if current else '(nothing)'} to {target}")


def _attempt(pn: PhoneNumber, target: NumberState, ctx: TransitionContext) -> Any:
    try:
        return transition(pn, target, ctx)
    except KnmError as error:
        return {k: v for k, v in error.to_json().items() if v is not None}


# =========================================================================== the engine
CELLS = list(itertools.product([None, *ALL_STATES], ALL_STATES))


@pytest.mark.parametrize(("current", "target"), CELLS, ids=[f"{c}->{t}" for c, t in CELLS])
def test_engine_cell(current: NumberState | None, target: NumberState) -> None:
    """Every (current, target) pair with system authority assigning to CHILD."""
    pn = _pn(current)
    before = pn.model_copy(deep=True)
    outcome = _attempt(pn, target, _ctx())
    cell = (current, target)
    if current is None or cell not in ALLOWED:
        assert outcome == _refusal(current, target)
        assert pn == before
        assert pn.dirty is False
        return
    _needs_auth, acquires = ALLOWED[cell]
    assert outcome is acquires
    assert pn.state == target
    was_assigned = current in ASSIGNED_STATES
    if target == S.AVAILABLE:
        assert pn.assigned_to == before.assigned_to  # only the state is set
    else:
        assert pn.assigned_to == CHILD
        if was_assigned:
            assert pn.previously_assigned_to == RESELLER
            assert pn.used_by is None
        else:
            assert pn.previously_assigned_to == MASTER
    if target == S.RESERVED:
        assert pn.reserve_history == [CHILD, *before.reserve_history]
    else:
        assert pn.reserve_history == before.reserve_history
    assert pn.dirty is (pn != before)


@pytest.mark.parametrize("target", SUPPORTED_TARGETS)
@pytest.mark.parametrize("current", ALL_STATES)
def test_engine_cell_for_mdn(current: NumberState, target: NumberState) -> None:
    """MDNs: never reserved/available/aging/port_in; in_service only from in_service."""
    pn = _pn(current, "knm_mdn")
    before = pn.model_copy(deep=True)
    outcome = _attempt(pn, target, _ctx())
    if target != S.IN_SERVICE:
        assert outcome == invalid_transition(f"from 'MDN' to {target}")
    elif current == S.IN_SERVICE:
        assert outcome is False
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)
        return
    else:
        assert outcome == invalid_transition(f"from {current} to in_service")
    assert pn == before


@pytest.mark.parametrize("target", UNSUPPORTED_TARGETS)
def test_engine_unsupported_target_for_mdn_has_no_cause(target: NumberState) -> None:
    pn = _pn(S.IN_SERVICE, "knm_mdn")
    assert _attempt(pn, target, _ctx()) == invalid_transition(None)


@pytest.mark.parametrize(
    ("current", "target"), list(ALLOWED), ids=[f"{c}->{t}" for c, t in ALLOWED]
)
def test_engine_authorization(current: NumberState, target: NumberState) -> None:
    """An account that is not an ancestor of the owner/assignee: refused exactly where the table
    says "authorize" (available and aging numbers may be bought by anyone)."""
    needs_auth, acquires = ALLOWED[(current, target)]
    pn = _pn(current)
    before = pn.model_copy(deep=True)
    owner = pn.assigned_to or CHILD
    outcome = _attempt(pn, target, _ctx(auth_by=UNRELATED, assign_to=CHILD))
    if needs_auth:
        subaccount = (current, target) == (S.RESERVED, S.IN_SERVICE)
        assert outcome == not_related(UNRELATED, owner, subaccount=subaccount)
        assert pn == before
    else:
        assert outcome is acquires
        assert pn.state == target


@pytest.mark.parametrize(
    ("current", "target"), list(ALLOWED), ids=[f"{c}->{t}" for c, t in ALLOWED]
)
def test_engine_parent_is_authorized(current: NumberState, target: NumberState) -> None:
    """RESELLER manages its own and its descendants' numbers; CHILD is the assignee."""
    pn = _pn(current)
    _needs_auth, acquires = ALLOWED[(current, target)]
    assert _attempt(pn, target, _ctx(auth_by=RESELLER, assign_to=CHILD)) is acquires
    assert pn.state == target


def test_engine_undefined_auth_is_refused() -> None:
    pn = _pn(S.IN_SERVICE)
    assert _attempt(pn, S.RESERVED, _ctx(auth_by=None)) == forbidden("the requester is unknown")


def test_engine_reserved_by_parent_may_be_taken_by_descendant() -> None:
    """authorize_subaccount: CHILD and ACCOUNT_4 take RESELLER's reservation; UNRELATED may not."""
    for auth_by in (CHILD, "account0000000000000000000000004"):
        pn = _pn(S.RESERVED)
        assert _attempt(pn, S.IN_SERVICE, _ctx(auth_by=auth_by, assign_to=auth_by)) is False
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, auth_by)
    pn = _pn(S.RESERVED)
    assert _attempt(pn, S.IN_SERVICE, _ctx(auth_by=UNRELATED, assign_to=UNRELATED)) == not_related(
        UNRELATED, RESELLER, subaccount=True
    )
    # ... but taking the reservation only works for in_service, not for re-reserving it.
    pn = _pn(S.RESERVED)
    assert _attempt(pn, S.RESERVED, _ctx(auth_by=CHILD, assign_to=CHILD)) == not_related(
        CHILD, RESELLER
    )


def test_engine_reserved_by_superduper_admin_may_be_taken_by_anyone() -> None:
    pn = _pn(S.RESERVED)
    pn.assigned_to = MASTER
    assert _attempt(pn, S.IN_SERVICE, _ctx(auth_by=UNRELATED, assign_to=UNRELATED)) is False
    assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, UNRELATED)


def test_engine_reserved_not_assigning_to_self() -> None:
    pn = _pn(S.RESERVED)
    assert _attempt(pn, S.RESERVED, _ctx(assign_to=None)) == forbidden("can not assign to self")
    assert _attempt(pn, S.RESERVED, _ctx(assign_to=RESELLER)) == no_change_required(NUM)
    assert pn.dirty is False


def test_engine_in_service_to_its_owner_is_a_noop_even_unauthorized() -> None:
    pn = _pn(S.IN_SERVICE)
    assert _attempt(pn, S.IN_SERVICE, _ctx(auth_by=UNRELATED, assign_to=RESELLER)) is False
    assert (pn.state, pn.assigned_to, pn.used_by, pn.dirty) == (
        S.IN_SERVICE,
        RESELLER,
        "callflow",
        False,
    )


def test_engine_available_to_available_keeps_it_unassigned() -> None:
    pn = _pn(S.AVAILABLE)
    assert _attempt(pn, S.AVAILABLE, _ctx()) is False
    assert (pn.assigned_to, pn.dirty) == (None, False)


def test_engine_history_head_is_not_repeated() -> None:
    pn = _pn(S.IN_SERVICE)
    assert _attempt(pn, S.RESERVED, _ctx(assign_to=RESELLER)) is False
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, RESELLER, [RESELLER])
    assert pn.used_by == "callflow"


# =========================================================================== operations
class Recorder(Carrier):
    """A carrier module that only records what it was asked to do."""

    name: ClassVar[str] = RECORDER
    acquired: ClassVar[list[str]] = []
    disconnected: ClassVar[list[str]] = []

    def acquire_number(self, pn: PhoneNumber) -> None:
        Recorder.acquired.append(pn.number)

    def disconnect_number(self, pn: PhoneNumber) -> None:
        Recorder.disconnected.append(pn.number)


@pytest.fixture
def registry() -> Iterator[CarrierRegistry]:
    Recorder.acquired.clear()
    Recorder.disconnected.clear()
    registry = default_registry()
    registry.register(Recorder)
    yield registry
    Recorder.acquired.clear()
    Recorder.disconnected.clear()


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


@pytest.fixture
def nm(store: Store, registry: CarrierRegistry) -> NumberManager:
    return NumberManager(store, Settings(), registry)


def _stored_in(db: Database[Doc], state: NumberState, module: str = RECORDER) -> Doc:
    """Store NUM in ``state`` (assigned to RESELLER where that fits) and return the doc."""
    assigned = state in ASSIGNED_STATES
    doc = number_doc(
        NUM,
        state.value,
        module,
        assigned_to=RESELLER if assigned else None,
        previously_assigned_to=None if assigned else MASTER,
        history=[RESELLER] if assigned else [],
    )
    load_kazoo(db, accounts=False, extra=[doc])
    return doc


def _check_written(
    db: Database[Doc],
    batch: Any,
    state: NumberState,
    assigned_to: str | None,
    history: list[str],
    *,
    rev: int = 2,
) -> None:
    assert failures(batch) == {}
    pn = batch.succeeded[NUM]
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (state, assigned_to, history)
    doc = stored(db, NUM)
    assert doc is not None
    assert doc["pvt_state"] == state.value
    assert doc.get("pvt_assigned_to") == assigned_to
    assert doc.get("pvt_reserve_history", []) == history
    assert doc["pvt_rev"] == rev


def _check_refused(db: Database[Doc], batch: Any, error: Doc, doc: Doc | None) -> None:
    assert batch.succeeded == {}
    assert failures(batch) == {NUM: error}
    assert stored(db, NUM) == doc
    assert Recorder.acquired == []


# --------------------------------------------------------------------- -> reserved via reserve
RESERVE_OK: dict[NumberState, list[str]] = {
    S.DISCOVERY: [CHILD],
    S.AVAILABLE: [CHILD],
    S.RESERVED: [CHILD, RESELLER],
    S.IN_SERVICE: [CHILD, RESELLER],
}


@pytest.mark.parametrize("current", ALL_STATES)
def test_reserve_from(store: Store, nm: NumberManager, current: NumberState) -> None:
    doc = _stored_in(store.db, current)
    batch = nm.reserve([NUM], Options(assign_to=CHILD))
    if current in RESERVE_OK:
        _check_written(store.db, batch, S.RESERVED, CHILD, RESERVE_OK[current])
        acquires = ALLOWED[(current, S.RESERVED)][1]
        assert Recorder.acquired == ([NUM] if acquires else [])
    else:
        _check_refused(store.db, batch, invalid_transition(f"from {current} to reserved"), doc)


def test_reserve_reserved_for_its_owner_is_no_change(store: Store, nm: NumberManager) -> None:
    doc = _stored_in(store.db, S.RESERVED)
    batch = nm.reserve([NUM], Options(assign_to=RESELLER))
    _check_refused(store.db, batch, no_change_required(NUM), doc)


def test_reserve_discovery_with_unknown_module_fails(store: Store, nm: NumberManager) -> None:
    """Acquiring through a module knm does not know fails and changes nothing."""
    doc = _stored_in(store.db, S.DISCOVERY, "knm_pacwest")
    batch = nm.reserve([NUM], Options(assign_to=CHILD))
    assert failures(batch) == {
        NUM: {
            "error": "carrier_not_found",
            "code": 400,
            "message": "carrier module knm_pacwest is not known",
            "cause": "knm_pacwest",
        }
    }
    assert stored(store.db, NUM) == doc


# ------------------------------------------------------------------- -> in_service via move
MOVE_OK = {S.DISCOVERY, S.AVAILABLE, S.RESERVED, S.IN_SERVICE, S.PORT_IN, S.AGING}


@pytest.mark.parametrize("current", ALL_STATES)
def test_move_from(store: Store, nm: NumberManager, current: NumberState) -> None:
    doc = _stored_in(store.db, current)
    batch = nm.move([NUM], CHILD)
    if current in MOVE_OK:
        history = [RESELLER] if current in ASSIGNED_STATES else []
        _check_written(store.db, batch, S.IN_SERVICE, CHILD, history)
        acquires = ALLOWED[(current, S.IN_SERVICE)][1]
        assert Recorder.acquired == ([NUM] if acquires else [])
    else:
        _check_refused(store.db, batch, invalid_transition(f"from {current} to in_service"), doc)


def test_move_discovered_number_from_search_cache(store: Store, nm: NumberManager) -> None:
    nm.search_cache.put(
        "US-415-q", [SearchResult(NUM, RECORDER, S.DISCOVERY, {"order_ref": "o-1"})]
    )
    batch = nm.move([NUM], CHILD, Options(auth_by="system"))
    _check_written(store.db, batch, S.IN_SERVICE, CHILD, [], rev=1)
    assert Recorder.acquired == [NUM]
    doc = stored(store.db, NUM)
    assert doc is not None
    assert (doc["pvt_carrier_module"], doc["pvt_carrier_data"]) == (RECORDER, {"order_ref": "o-1"})


def test_move_discovered_number_needs_authorization(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db)
    nm.search_cache.put("US-415-q", [SearchResult(NUM, RECORDER, S.DISCOVERY, {})])
    batch = nm.move([NUM], CHILD, Options(auth_by=UNRELATED))
    _check_refused(store.db, batch, not_related(UNRELATED, CHILD), None)
    batch = nm.move([NUM], CHILD, Options(auth_by=RESELLER))
    _check_written(store.db, batch, S.IN_SERVICE, CHILD, [], rev=1)


def test_move_discovered_mdn_is_refused(store: Store, nm: NumberManager) -> None:
    nm.search_cache.put("US-415-q", [SearchResult(NUM, "knm_mdn", S.DISCOVERY, {})])
    batch = nm.move([NUM], CHILD, Options(mdn_run=True))
    _check_refused(store.db, batch, invalid_transition("from discovery to in_service"), None)


@pytest.mark.parametrize("current", [S.AVAILABLE, S.PORT_IN, S.AGING, S.RESERVED])
def test_move_mdn_not_in_service_is_refused(
    store: Store, nm: NumberManager, current: NumberState
) -> None:
    doc = _stored_in(store.db, current, "knm_mdn")
    batch = nm.move([NUM], CHILD, Options(mdn_run=True))
    _check_refused(store.db, batch, invalid_transition(f"from {current} to in_service"), doc)


# ------------------------------------------------- -> available/aging/port_in/... via create
CREATE_TARGETS = (S.AVAILABLE, S.AGING, S.PORT_IN, S.RESERVED, S.IN_SERVICE)


def _create_options(target: NumberState) -> Options:
    return Options(auth_by="system", assign_to=CHILD, state=target)


@pytest.mark.parametrize("target", CREATE_TARGETS)
@pytest.mark.parametrize("current", ALL_STATES)
def test_create_on_existing(
    store: Store, nm: NumberManager, current: NumberState, target: NumberState
) -> None:
    doc = _stored_in(store.db, current)
    batch = nm.create([NUM], _create_options(target))
    if current not in (S.AGING, S.AVAILABLE, S.PORT_IN):
        _check_refused(store.db, batch, number_exists(NUM), doc)
        return
    if (current, target) not in ALLOWED:
        _check_refused(store.db, batch, invalid_transition(f"from {current} to {target}"), doc)
        return
    history = [RESELLER] if current in ASSIGNED_STATES else []
    if target == S.RESERVED:
        history = [CHILD, *history]
    owner = None if target == S.AVAILABLE else CHILD
    rev = 1 if (current, target) == (S.AVAILABLE, S.AVAILABLE) else 2  # nothing changed
    _check_written(store.db, batch, target, owner, history, rev=rev)
    assert Recorder.acquired == []


@pytest.mark.parametrize("target", CREATE_TARGETS)
def test_create_new_number_in(store: Store, nm: NumberManager, target: NumberState) -> None:
    """A new number starts in the target state and goes through the same-state rule."""
    batch = nm.create([NUM], _create_options(target).but(module_name=RECORDER))
    owner = None if target == S.AVAILABLE else CHILD
    history = [CHILD] if target == S.RESERVED else []
    _check_written(store.db, batch, target, owner, history, rev=1)
    doc = stored(store.db, NUM)
    assert doc is not None
    assert doc["pvt_carrier_module"] == ("knm_local" if target == S.PORT_IN else RECORDER)
    assert Recorder.acquired == ([NUM] if target == S.RESERVED else [])


def test_create_new_reserved_with_unknown_module_fails(store: Store, nm: NumberManager) -> None:
    batch = nm.create([NUM], _create_options(S.RESERVED).but(module_name="knm_pacwest"))
    assert failures(batch)[NUM]["error"] == "carrier_not_found"
    assert stored(store.db, NUM) is None


@pytest.mark.parametrize("target", [S.AVAILABLE, S.AGING, S.PORT_IN, S.RESERVED])
def test_create_on_existing_mdn_is_refused(
    store: Store, nm: NumberManager, target: NumberState
) -> None:
    doc = _stored_in(store.db, S.AVAILABLE, "knm_mdn")
    batch = nm.create([NUM], _create_options(target).but(mdn_run=True))
    _check_refused(store.db, batch, invalid_transition(f"from 'MDN' to {target}"), doc)


def test_create_with_unsupported_state_is_forbidden(store: Store, nm: NumberManager) -> None:
    """Unsupported creation states never reach the engine: they are not allowed creation states."""
    for state in (S.RELEASED, S.DELETED, S.DISCOVERY, S.PORT_OUT):
        batch = nm.create([NUM], _create_options(state))
        assert failures(batch) == {
            NUM: forbidden(f"creating number in state '{state}' is not allowed")
        }
    assert stored(store.db, NUM) is None


def test_create_in_reserved_for_no_one_is_refused(store: Store, nm: NumberManager) -> None:
    """Without an account to assign to, create fails first with assign_failure."""
    batch = nm.create([NUM], Options(state=S.RESERVED))
    assert failures(batch)[NUM]["error"] == "assign_failure"
