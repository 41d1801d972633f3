"""Every cell of the state table, without a server: for each event, each source state (or none)
and each target, whether the transition is allowed or which error refuses it, and what it does
to the record and which calls it leaves to the services.

The expectations below are written out from KAZOO's behaviour, independently of the table, so
a row that changes shows up here as a cell that changed.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from knm.domain.accounts import Account, AccountDirectory
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber, utcnow
from knm.domain.options import Options
from knm.domain.states import (
    TABLE,
    Call,
    Effect,
    Event,
    Guard,
    ReleasePolicy,
    Transition,
    TransitionContext,
    apply,
    creation_module,
    creation_refusal,
    creation_state,
    find,
    run,
    stored_changes,
    take_over_options,
)
from tests.fixtures_kazoo import (
    CHILD,
    MASTER,
    MODULES,
    RESELLER,
    UNRELATED,
    Doc,
    account_docs,
    forbidden,
    invalid_transition,
    no_change_required,
    number_doc,
    number_exists,
)

S = NumberState
NUM = "+14155550123"
SOURCES: tuple[NumberState | None, ...] = (None, *NumberState)
TARGETS = (S.RESERVED, S.IN_SERVICE, S.AVAILABLE, S.AGING, S.PORT_IN)
#: States in which the records below are assigned to RESELLER (history [RESELLER]).
ASSIGNED = frozenset({S.RESERVED, S.IN_SERVICE, S.PORT_IN, S.PORT_OUT})

#: MOVE, the allowed cells: (source, target) -> (authorized only?, the carrier acquires?).
MOVES: dict[tuple[NumberState, NumberState], tuple[bool, bool]] = {
    (S.DISCOVERY, S.RESERVED): (True, True),
    (S.AVAILABLE, S.RESERVED): (True, False),
    (S.RESERVED, S.RESERVED): (True, True),
    (S.IN_SERVICE, S.RESERVED): (True, False),
    (S.DISCOVERY, S.IN_SERVICE): (True, True),
    (S.AVAILABLE, S.IN_SERVICE): (False, False),  # anyone may buy an available number
    (S.RESERVED, S.IN_SERVICE): (True, False),
    (S.IN_SERVICE, S.IN_SERVICE): (True, False),
    (S.PORT_IN, S.IN_SERVICE): (True, False),
    (S.AGING, S.IN_SERVICE): (False, False),  # re-buying a released number
    (S.AVAILABLE, S.AVAILABLE): (True, False),
    (S.AVAILABLE, S.AGING): (False, False),
    (S.AGING, S.AGING): (False, False),
    (S.RELEASED, S.AGING): (False, False),
    (S.PORT_IN, S.PORT_IN): (False, False),
}
#: Cells an MDN may take: in service from in service only.
MDN_MOVES = {(S.IN_SERVICE, S.IN_SERVICE)}


def accounts() -> AccountDirectory:
    return AccountDirectory(Account.from_document(d) for d in account_docs().values())


def ctx(
    auth_by: str | None = "system",
    assign_to: str | None = CHILD,
    policy: ReleasePolicy | None = None,
    **options: Any,
) -> TransitionContext:
    opts = Options(auth_by=auth_by, assign_to=assign_to, **options)
    return TransitionContext(opts, accounts(), policy or ReleasePolicy())


def record(
    source: NumberState | None,
    module: str = "knm_inventory",
    history: list[str] | None = None,
    **extra: Any,
) -> PhoneNumber:
    """A stored record in ``source`` (None: stored without a state), clean."""
    assigned = source in ASSIGNED
    doc = number_doc(
        NUM,
        source.value if source is not None else "available",
        module,
        assigned_to=RESELLER if assigned else None,
        previously_assigned_to=None if assigned else MASTER,
        history=history if history is not None else ([RESELLER] if assigned else []),
        used_by="callflow" if assigned else None,
        **extra,
    )
    pn = PhoneNumber.from_document(doc, MODULES)
    if source is None:
        pn.state = None
    assert not pn.dirty
    return pn


def attempt(
    event: Event, pn: PhoneNumber, context: TransitionContext, target: NumberState | None = None
) -> Transition | Doc | None:
    try:
        return run(event, pn, context, target)
    except KnmError as error:
        return {k: v for k, v in error.to_json().items() if v is not None}


def label(cell: tuple[Any, ...]) -> str:
    return "->".join(str(part) for part in cell)


# ======================================================================================== MOVE
MOVE_CELLS = list(itertools.product(SOURCES, NumberState))


@pytest.mark.parametrize(("source", "target"), MOVE_CELLS, ids=map(label, MOVE_CELLS))
def test_move(source: NumberState | None, target: NumberState) -> None:
    pn = record(source)
    before = pn.model_copy(deep=True)
    outcome = attempt(Event.MOVE, pn, ctx(), target)
    if target not in TARGETS:
        assert outcome == invalid_transition(None)  # an unsupported target: no cause
    elif source is None or (source, target) not in MOVES:
        assert outcome == invalid_transition(f"from {source or '(nothing)'} to {target}")
    else:
        _authorized, acquires = MOVES[(source, target)]
        assert isinstance(outcome, Transition)
        assert (Call.ACQUIRE in outcome.after) is acquires
        assert outcome.before == outcome.settle == ()
        assert pn.state == target
        if target == S.AVAILABLE:
            assert (pn.assigned_to, pn.previously_assigned_to) == (None, MASTER)
        else:
            previous = RESELLER if source in ASSIGNED else MASTER
            assert (pn.assigned_to, pn.previously_assigned_to) == (CHILD, previous)
            assert pn.used_by is None
        history = (
            [CHILD, *before.reserve_history] if target == S.RESERVED else before.reserve_history
        )
        assert pn.reserve_history == history
        assert (pn.features, pn.public, pn.deleted) == (before.features, before.public, False)
        assert pn.dirty is (pn != before)
        return
    assert pn == before
    assert not pn.dirty


@pytest.mark.parametrize(("source", "target"), list(MOVES), ids=map(label, MOVES))
def test_move_authorization(source: NumberState, target: NumberState) -> None:
    """An unrelated requester is refused exactly where the cell needs authorization."""
    authorized_only, _acquires = MOVES[(source, target)]
    pn = record(source)
    before = pn.model_copy(deep=True)
    outcome = attempt(Event.MOVE, pn, ctx(auth_by=UNRELATED), target)
    if not authorized_only:
        assert isinstance(outcome, Transition)
        assert pn.state == target
        return
    owner = pn.assigned_to or CHILD
    cause = (
        f"account '{UNRELATED}' is not '{owner}' or one of its ancestors "
        "(nor system or a superduper admin)"
    )
    if (source, target) == (S.RESERVED, S.IN_SERVICE):
        cause += ", and the number is not reserved by one of its ancestors"
    assert outcome == forbidden(cause)
    assert pn == before


@pytest.mark.parametrize(("source", "target"), MOVE_CELLS, ids=map(label, MOVE_CELLS))
def test_move_an_mdn(source: NumberState | None, target: NumberState) -> None:
    pn = record(source, "knm_mdn")
    before = pn.model_copy(deep=True)
    outcome = attempt(Event.MOVE, pn, ctx(), target)
    if target not in TARGETS:
        assert outcome == invalid_transition(None)
    elif target != S.IN_SERVICE:
        assert outcome == invalid_transition(f"from 'MDN' to {target}")
    elif (source, target) in MDN_MOVES:
        assert isinstance(outcome, Transition)
        assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)
        return
    else:
        assert outcome == invalid_transition(f"from {source or '(nothing)'} to {target}")
    assert pn == before


def test_move_guards_with_nothing_to_do_or_no_target_account() -> None:
    owned = record(S.IN_SERVICE)
    assert (
        attempt(Event.MOVE, owned, ctx(auth_by=UNRELATED, assign_to=RESELLER), S.IN_SERVICE) is None
    )
    assert not owned.dirty  # already there: a success that changes nothing, authorized or not
    reserved = record(S.RESERVED)
    assert attempt(Event.MOVE, reserved, ctx(assign_to=None), S.RESERVED) == forbidden(
        "can not assign to self"
    )
    assert attempt(Event.MOVE, reserved, ctx(assign_to=RESELLER), S.RESERVED) == no_change_required(
        NUM
    )
    # a descendant takes its ancestor's reservation in service (not by re-reserving it)
    taken = record(S.RESERVED)
    assert isinstance(
        attempt(Event.MOVE, taken, ctx(auth_by=CHILD, assign_to=CHILD), S.IN_SERVICE), Transition
    )
    assert (taken.state, taken.assigned_to) == (S.IN_SERVICE, CHILD)
    assert attempt(Event.MOVE, record(S.RESERVED), ctx(auth_by=CHILD), S.RESERVED) == forbidden(
        f"account '{CHILD}' is not '{RESELLER}' or one of its ancestors "
        "(nor system or a superduper admin)"
    )


# ====================================================================================== CREATE
@pytest.mark.parametrize("target", list(NumberState))
def test_create(target: NumberState) -> None:
    """A new number is built in its target state by that state's same-state rule."""
    pn = PhoneNumber.new(NUM, "knm_inventory", modules=MODULES)
    outcome = attempt(Event.CREATE, pn, ctx(), target)
    if target not in TARGETS:
        assert outcome == invalid_transition(None)
        return
    assert isinstance(outcome, Transition)
    same = find(Event.MOVE, target, target)
    assert (outcome.guards, outcome.effects, outcome.after) == (
        same.guards,
        same.effects,
        same.after,
    )
    assert pn.state == target
    assert pn.assigned_to == (None if target == S.AVAILABLE else CHILD)
    assert pn.reserve_history == ([CHILD] if target == S.RESERVED else [])
    assert (Call.ACQUIRE in outcome.after) is (target == S.RESERVED)
    unrelated = PhoneNumber.new(NUM, "knm_inventory", modules=MODULES)
    refused = attempt(Event.CREATE, unrelated, ctx(auth_by=UNRELATED), target)
    if target in (S.RESERVED, S.IN_SERVICE, S.AVAILABLE):
        assert refused == forbidden(
            f"account '{UNRELATED}' is not '{CHILD}' or one of its ancestors "
            "(nor system or a superduper admin)"
        )
    else:
        assert isinstance(refused, Transition)


@pytest.mark.parametrize("target", TARGETS)
def test_create_an_mdn(target: NumberState) -> None:
    pn = PhoneNumber.new(NUM, "knm_mdn", modules=MODULES)
    outcome = attempt(Event.CREATE, pn, ctx(), target)
    if target == S.IN_SERVICE:
        assert isinstance(outcome, Transition)
        assert pn.features == {"local": {}}
    else:
        assert outcome == invalid_transition(f"from 'MDN' to {target}")


@pytest.mark.parametrize("source", SOURCES)
def test_take_over(source: NumberState | None) -> None:
    pn = record(source)
    outcome = attempt(Event.TAKE_OVER, pn, ctx())
    if source in (S.AGING, S.AVAILABLE, S.PORT_IN):
        assert isinstance(outcome, Transition)
        assert not pn.dirty  # the MOVE to the creation state comes next
    else:
        assert outcome == number_exists(NUM)


@pytest.mark.parametrize(
    ("options", "state", "module"),
    [
        ({}, S.IN_SERVICE, "knm_local"),
        ({"state": "available"}, S.AVAILABLE, "knm_local"),
        ({"state": "reserved", "module_name": "knm_telnyx"}, S.RESERVED, "knm_telnyx"),
        ({"state": "port_in", "module_name": "knm_telnyx"}, S.PORT_IN, "knm_local"),
        ({"ported_in": True, "state": "reserved"}, S.IN_SERVICE, "knm_port_in"),
        ({"module_name": "knm_mdn", "state": "available"}, S.IN_SERVICE, "knm_mdn"),
    ],
)
def test_creation_state_and_module(
    options: dict[str, Any], state: NumberState, module: str
) -> None:
    opts = Options(assign_to=CHILD, **options)
    assert creation_state(opts, MODULES) == state
    assert creation_module(opts, MODULES, "knm_port_in") == module


def test_take_over_options() -> None:
    ported = Options(ported_in=True)
    assert take_over_options(ported, "knm_port_in").module_name == "knm_port_in"
    named = Options(ported_in=True, module_name="knm_telnyx")
    assert take_over_options(named, "knm_port_in").module_name == "knm_telnyx"
    assert take_over_options(Options(), "knm_port_in") == Options()


@pytest.mark.parametrize(
    ("auth_by", "options", "cause"),
    [
        ("system", {"state": "available"}, None),
        (RESELLER, {}, None),  # allowed additions: in service and reserved
        (RESELLER, {"state": "available"}, "creating number in state 'available' is not allowed"),
        (CHILD, {}, "creating number in state 'in_service' is not allowed"),
        (CHILD, {"state": "port_in"}, None),  # port-ins are exempt
        (CHILD, {"ported_in": True}, None),
        (CHILD, {"module_name": "knm_mdn"}, f"account '{CHILD}' is not allowed to create number"),
    ],
)
def test_creation_refusal(auth_by: str, options: dict[str, Any], cause: str | None) -> None:
    refusal = creation_refusal(
        Options(auth_by=auth_by, assign_to=CHILD, **options), accounts(), MODULES
    )
    assert (refusal.to_json() if refusal else None) == (forbidden(cause) if cause else None)


# ==================================================================================== DISCOVER
def test_discover() -> None:
    pn = PhoneNumber.new(NUM, "knm_telnyx", modules=MODULES)
    outcome = attempt(Event.DISCOVER, pn, ctx())
    assert isinstance(outcome, Transition)
    assert (pn.state, pn.assigned_to, pn.carrier_module) == (S.DISCOVERY, None, "knm_telnyx")
    assert find(Event.MOVE, S.DISCOVERY, S.IN_SERVICE).after == (Call.ACQUIRE,)


# ===================================================================================== RELEASE
RELEASE_CELLS = list(
    itertools.product(SOURCES, ("knm_local", "knm_mdn", "knm_telnyx"), ("one", "two"))
)


@pytest.mark.parametrize(
    ("source", "module", "history"), RELEASE_CELLS, ids=map(label, RELEASE_CELLS)
)
def test_release(source: NumberState | None, module: str, history: str) -> None:
    reservers = [RESELLER] if history == "one" else [RESELLER, MASTER]
    pn = record(
        source,
        module,
        reservers,
        public={"e911": {"street": "x"}, "custom": 1},
        features={"e911": {}, **({"local": {}} if module != "knm_telnyx" else {})},
    )
    before = pn.model_copy(deep=True)
    context = ctx()
    outcome = attempt(Event.RELEASE, pn, context)
    releasable = source in (S.RELEASED, S.RESERVED, S.PORT_IN, S.IN_SERVICE)
    if not releasable and module != "knm_local":  # the home module releases from any state
        assert outcome == invalid_transition(f"from {source or '(nothing)'} to available")
        assert pn == before
        return
    assert isinstance(outcome, Transition)
    assert (outcome.before, outcome.after, outcome.settle) == (
        (Call.DEPROVISION,),
        (Call.DISCONNECT,),
        (Effect.RETIRE,),
    )
    assert pn.public == {}
    assert pn.features == ({} if module == "knm_telnyx" else {"local": {}})
    if len(reservers) == 2:  # back to the previous reserver
        assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, MASTER, [MASTER])
    else:
        assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.AVAILABLE, None, [])
    apply(outcome, pn, context, settle=True)  # after the disconnect
    deleted = pn.assigned_to is None and module != "knm_telnyx"  # local modules delete
    assert pn.deleted is deleted
    assert pn.state == (
        S.DELETED if deleted else S.AVAILABLE if pn.assigned_to is None else S.RESERVED
    )


@pytest.mark.parametrize(
    ("policy", "state", "deleted"),
    [
        (ReleasePolicy(), S.AVAILABLE, False),
        (ReleasePolicy(released_state=S.RELEASED), S.RELEASED, False),
        (ReleasePolicy(should_age=True), S.AGING, False),
        (ReleasePolicy(released_state=S.RELEASED, should_age=True), S.RELEASED, False),
        (ReleasePolicy(permanently_delete=True), S.DELETED, True),
    ],
)
def test_release_policy(policy: ReleasePolicy, state: NumberState, deleted: bool) -> None:
    pn = record(S.IN_SERVICE, "knm_telnyx")
    context = ctx(policy=policy)
    row = attempt(Event.RELEASE, pn, context)
    assert isinstance(row, Transition)
    apply(row, pn, context, settle=True)
    assert (pn.state, pn.deleted, pn.assigned_to) == (state, deleted, None)


def test_release_refusals_name_the_released_state_and_need_authorization() -> None:
    policy = ReleasePolicy(released_state=S.RELEASED)
    assert attempt(Event.RELEASE, record(S.AVAILABLE, "knm_telnyx"), ctx(policy=policy)) == (
        invalid_transition("from available to released")
    )
    assert attempt(Event.RELEASE, record(S.IN_SERVICE), ctx(auth_by=UNRELATED, assign_to=None)) == (
        forbidden(
            f"account '{UNRELATED}' is not '{RESELLER}' or one of its ancestors "
            "(nor system or a superduper admin)"
        )
    )


# ====================================================================================== DELETE
@pytest.mark.parametrize("source", SOURCES)
def test_delete(source: NumberState | None) -> None:
    pn = record(source)
    outcome = attempt(Event.DELETE, pn, ctx(auth_by=UNRELATED))
    assert isinstance(outcome, Transition)
    assert outcome.before == (Call.DEPROVISION,)
    assert (pn.deleted, pn.state) == (True, S.DELETED)


# ===================================================================================== AGE_OUT
@pytest.mark.parametrize("source", SOURCES)
def test_age_out(source: NumberState | None) -> None:
    pn = record(source)
    cutoff = pn.modified + timedelta(seconds=1)
    outcome = attempt(Event.AGE_OUT, pn, TransitionContext(Options(), cutoff=cutoff))
    if source != S.AGING:
        assert outcome == invalid_transition(f"from {source or '(nothing)'} to available")
        return
    assert isinstance(outcome, Transition)
    assert (pn.state, pn.dirty) == (S.AVAILABLE, True)
    young = record(S.AGING)
    early = TransitionContext(Options(), cutoff=young.modified)
    assert attempt(Event.AGE_OUT, young, early) is None  # not due: left alone
    assert not young.dirty


def test_age_out_written_without_loading_the_record() -> None:
    """The sweep's bulk write sets exactly what the row does to a loaded record."""
    row = find(Event.AGE_OUT, S.AGING)
    now = utcnow()
    assert stored_changes(row, now) == {"pvt_state": "available", "pvt_modified": now}
    pn = record(S.AGING)
    run(Event.AGE_OUT, pn, TransitionContext(Options(), cutoff=now + timedelta(days=1)))
    written = {
        k: v for k, v in pn.to_document().items() if record(S.AGING).to_document().get(k) != v
    }
    assert set(written) == {"pvt_state", "pvt_modified"}
    assert written["pvt_state"] == "available"
    with pytest.raises(ValueError, match="needs the record loaded"):
        stored_changes(find(Event.RELEASE, S.IN_SERVICE), now)


# ====================================================================================== table
def test_one_row_per_cell_and_every_row_reachable() -> None:
    keys = [(row.event, row.source, row.target) for row in TABLE]
    assert len(keys) == len(set(keys))
    assert {row.event for row in TABLE} == set(Event)
    for row in TABLE:
        assert find(row.event, row.source, row.target) is row
        assert not (Guard.DUE in row.guards and row.event != Event.AGE_OUT)
