"""Authorization: who may get / reserve / activate / release / delete a number, and who
may create numbers in which state.

The numbers below belong to CHILD, so the actors are: its non-admin parent RESELLER, the
superduper-admin MASTER, CHILD itself, its descendant ACCOUNT_4, UNRELATED and ``system``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from config.settings import Settings
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.operations import NumberManager
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    ASSIGN_FAILURE,
    CHILD,
    MASTER,
    RESELLER,
    UNRELATED,
    Doc,
    failures,
    forbidden,
    load_kazoo,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
NUM = "+14155550160"
OTHER = "+14155550161"
ACTORS = ("system", MASTER, RESELLER, CHILD, ACCOUNT_4, UNRELATED)
#: Who is authorized over a number assigned to CHILD (is_authorized).
MANAGERS = frozenset({"system", MASTER, RESELLER, CHILD})


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


@pytest.fixture
def nm(store: Store) -> NumberManager:
    return NumberManager(store, Settings())


def _child_number(store: Store, state: str = "in_service", **overrides: Any) -> Doc:
    doc = number_doc(
        NUM, state, "knm_inventory", assigned_to=CHILD, history=[CHILD], used_by="callflow"
    )
    doc.update(overrides)
    load_kazoo(store.db, extra=[doc])
    return doc


def _only(batch: Any) -> PhoneNumber:
    assert failures(batch) == {}
    assert list(batch.succeeded) == [NUM]
    pn: PhoneNumber = batch.succeeded[NUM]
    return pn


def _refused(store: Store, batch: Any, doc: Doc | None, error: Doc) -> None:
    assert batch.succeeded == {}
    assert failures(batch) == {NUM: error}
    assert stored(store.db, NUM) == doc


def not_visible(actor: str, state: str = "in_service") -> Doc:
    """The 403 of a number the actor may not see: the account relation it lacks."""
    return forbidden(
        f"number {NUM} is {state} and account '{actor}' is not its account '{CHILD}' or one of "
        "its ancestors (nor system or a superduper admin)"
    )


ADMINS_DELETE = forbidden("only system or a superduper admin may hard-delete numbers")


# =========================================================================== the matrix
@pytest.mark.parametrize("actor", ACTORS)
def test_get(store: Store, nm: NumberManager, actor: str) -> None:
    doc = _child_number(store)
    batch = nm.get([NUM], Options(auth_by=actor))
    if actor in MANAGERS:
        pn = _only(batch)
        assert (pn.state, pn.assigned_to, pn.dirty) == (S.IN_SERVICE, CHILD, False)
    else:
        _refused(store, batch, doc, not_visible(actor))


@pytest.mark.parametrize("actor", ACTORS)
def test_get_reserved_number_is_visible_to_descendants(
    store: Store, nm: NumberManager, actor: str
) -> None:
    """Visibility also admits a descendant of the reserving account (reserved from parent)."""
    doc = _child_number(store, "reserved")
    batch = nm.get([NUM], Options(auth_by=actor))
    if actor in MANAGERS | {ACCOUNT_4}:
        assert _only(batch).state == S.RESERVED
    else:
        _refused(store, batch, doc, not_visible(actor, "reserved"))


@pytest.mark.parametrize("actor", ACTORS)
def test_reserve(store: Store, nm: NumberManager, actor: str) -> None:
    """Re-reserve CHILD's in-service number for CHILD."""
    doc = _child_number(store)
    batch = nm.reserve([NUM], Options(auth_by=actor, assign_to=CHILD))
    if actor in MANAGERS:
        pn = _only(batch)
        assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, CHILD, [CHILD])
        after = stored(store.db, NUM)
        assert after is not None
        assert (after["pvt_state"], after["pvt_rev"]) == ("reserved", 2)
    else:
        _refused(store, batch, doc, not_visible(actor))


@pytest.mark.parametrize("actor", ACTORS)
def test_reserve_for_a_descendant(store: Store, nm: NumberManager, actor: str) -> None:
    """Reserve CHILD's number for ACCOUNT_4 (a reseller hands a number down)."""
    doc = _child_number(store)
    batch = nm.reserve([NUM], Options(auth_by=actor, assign_to=ACCOUNT_4))
    if actor in MANAGERS:
        pn = _only(batch)
        assert (pn.assigned_to, pn.reserve_history) == (ACCOUNT_4, [ACCOUNT_4, CHILD])
        assert pn.previously_assigned_to == CHILD
    else:
        _refused(store, batch, doc, not_visible(actor))


@pytest.mark.parametrize("actor", ACTORS)
def test_activate_reserved_number(store: Store, nm: NumberManager, actor: str) -> None:
    """Activate CHILD's reserved number into the actor's account (system: into ACCOUNT_4).

    A descendant may take a number reserved by its ancestor (authorize_subaccount)."""
    doc = _child_number(store, "reserved")
    target = ACCOUNT_4 if actor == "system" else actor
    batch = nm.move([NUM], target, Options(auth_by=actor))
    if actor in MANAGERS | {ACCOUNT_4}:
        pn = _only(batch)
        assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.IN_SERVICE, target, [CHILD])
        after = stored(store.db, NUM)
        assert after is not None
        assert (after["pvt_state"], after["pvt_assigned_to"]) == ("in_service", target)
    else:
        _refused(store, batch, doc, not_visible(actor, "reserved"))


@pytest.mark.parametrize("actor", ACTORS)
def test_activate_in_service_number(store: Store, nm: NumberManager, actor: str) -> None:
    """Move CHILD's in-service number to ACCOUNT_4."""
    doc = _child_number(store)
    batch = nm.move([NUM], ACCOUNT_4, Options(auth_by=actor))
    if actor in MANAGERS:
        pn = _only(batch)
        assert (pn.assigned_to, pn.previously_assigned_to, pn.used_by) == (
            ACCOUNT_4,
            CHILD,
            None,
        )
    else:
        _refused(store, batch, doc, not_visible(actor))


@pytest.mark.parametrize("actor", ACTORS)
def test_release(store: Store, nm: NumberManager, actor: str) -> None:
    doc = _child_number(store)
    batch = nm.release([NUM], Options(auth_by=actor))
    if actor in MANAGERS:
        pn = _only(batch)
        assert (pn.state, pn.assigned_to, pn.previously_assigned_to) == (
            S.AVAILABLE,
            None,
            CHILD,
        )
        after = stored(store.db, NUM)
        assert after is not None
        assert after["pvt_state"] == "available"
    else:
        _refused(store, batch, doc, not_visible(actor))


@pytest.mark.parametrize("actor", ACTORS)
def test_delete_is_admin_only(store: Store, nm: NumberManager, actor: str) -> None:
    doc = _child_number(store)
    batch = nm.delete([NUM], Options(auth_by=actor))
    if actor in ("system", MASTER):
        assert _only(batch).state == S.DELETED
        assert stored(store.db, NUM) is None
    else:
        _refused(store, batch, doc, ADMINS_DELETE)


def test_delete_refuses_every_number_for_non_admins(store: Store, nm: NumberManager) -> None:
    doc = _child_number(store)
    batch = nm.delete([NUM, OTHER], Options(auth_by=CHILD))
    assert failures(batch) == {NUM: ADMINS_DELETE, OTHER: ADMINS_DELETE}
    assert stored(store.db, NUM) == doc


@pytest.mark.parametrize("state", list(NumberState))
def test_delete_works_in_any_state(store: Store, nm: NumberManager, state: NumberState) -> None:
    _child_number(store, state.value)
    batch = nm.delete([NUM, OTHER], Options(auth_by=MASTER))
    assert failures(batch) == {OTHER: {"error": "not_found"}}
    assert batch.succeeded[NUM].state == S.DELETED
    assert stored(store.db, NUM) is None


def test_update_needs_authorization(store: Store, nm: NumberManager) -> None:
    doc = _child_number(store)
    for actor in (ACCOUNT_4, UNRELATED):
        batch = nm.update([NUM], [lambda pn: pn.update_public({"a": 1})], Options(auth_by=actor))
        _refused(store, batch, doc, not_visible(actor))
    batch = nm.update([NUM], [lambda pn: pn.update_public({"a": 1})], Options(auth_by=RESELLER))
    assert _only(batch).public == {"a": 1}


# =========================================================================== creation
NEW = "+14155550165"

ADMIN_STATES = (S.AGING, S.AVAILABLE, S.IN_SERVICE, S.PORT_IN, S.RESERVED)


def _create(nm: NumberManager, **options: Any) -> Any:
    return nm.create([NEW], Options(**options))


def _created(store: Store, batch: Any, state: NumberState, owner: str | None) -> None:
    assert failures(batch) == {}
    pn = batch.succeeded[NEW]
    assert (pn.state, pn.assigned_to) == (state, owner)
    doc = stored(store.db, NEW)
    assert doc is not None
    assert doc["pvt_state"] == state.value


def _not_created(store: Store, batch: Any, error: Doc) -> None:
    assert batch.succeeded == {}
    assert failures(batch) == {NEW: error}
    assert stored(store.db, NEW) is None


def _state_refused(state: NumberState) -> Doc:
    return forbidden(f"creating number in state '{state}' is not allowed")


@pytest.mark.parametrize("state", ADMIN_STATES)
@pytest.mark.parametrize("admin", ["system", MASTER])
def test_admin_creates_in_every_pool_state(
    store: Store, nm: NumberManager, admin: str, state: NumberState
) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=admin, assign_to=CHILD, state=state)
    _created(store, batch, state, None if state == S.AVAILABLE else CHILD)


@pytest.mark.parametrize("state", list(NumberState))
def test_allow_additions_creates_in_service_or_reserved(
    store: Store, nm: NumberManager, state: NumberState
) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=RESELLER, assign_to=CHILD, state=state)
    if state in (S.IN_SERVICE, S.RESERVED, S.PORT_IN):  # port_in needs no permission
        _created(store, batch, state, CHILD)
    else:
        _not_created(store, batch, _state_refused(state))


@pytest.mark.parametrize("state", list(NumberState))
def test_neither_admin_nor_additions_creates_only_port_in(
    store: Store, nm: NumberManager, state: NumberState
) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=CHILD, assign_to=CHILD, state=state)
    if state == S.PORT_IN:
        _created(store, batch, state, CHILD)
    else:
        _not_created(store, batch, _state_refused(state))


def test_default_creation_state_is_in_service(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db)
    _not_created(store, _create(nm, auth_by=CHILD, assign_to=CHILD), _state_refused(S.IN_SERVICE))
    _created(store, _create(nm, auth_by=RESELLER, assign_to=CHILD), S.IN_SERVICE, CHILD)


def test_ported_in_needs_no_permission(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=CHILD, assign_to=CHILD, ported_in=True, state=S.RESERVED)
    _created(store, batch, S.IN_SERVICE, CHILD)  # ported_in forces in_service
    assert batch.succeeded[NEW].ported_in is True


def test_mdn_creation_by_account_without_additions(store: Store, nm: NumberManager) -> None:
    """knm_mdn skips the creation-state check but not the account permission."""
    load_kazoo(store.db)
    batch = _create(nm, auth_by=CHILD, assign_to=CHILD, module_name="knm_mdn", mdn_run=True)
    _not_created(store, batch, forbidden(f"account '{CHILD}' is not allowed to create number"))
    batch = _create(nm, auth_by=RESELLER, assign_to=CHILD, module_name="knm_mdn", mdn_run=True)
    _created(store, batch, S.IN_SERVICE, CHILD)


@pytest.mark.parametrize("assign_to", [None, "", "short", "x" * 33, 42])
def test_invalid_assign_to_is_assign_failure(
    store: Store, nm: NumberManager, assign_to: Any
) -> None:
    batch = nm.create([NEW], Options.model_construct(auth_by="system", assign_to=assign_to))
    _not_created(store, batch, ASSIGN_FAILURE)


def test_creation_state_is_checked_before_assign_to(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=CHILD, assign_to=None)
    _not_created(store, batch, _state_refused(S.IN_SERVICE))


@pytest.mark.parametrize("auth_by", ["not-an-account", ""])
def test_non_account_auth_by(store: Store, nm: NumberManager, auth_by: str) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=auth_by, assign_to=CHILD, state=S.PORT_IN)
    _not_created(
        store,
        batch,
        forbidden("cannot determined account is allowed to create number, account id is undefined"),
    )
    # without an exempt state the creation-state check refuses first
    batch = _create(nm, auth_by=auth_by, assign_to=CHILD)
    _not_created(store, batch, _state_refused(S.IN_SERVICE))


def test_undefined_auth_by_may_create_nothing(store: Store, nm: NumberManager) -> None:
    for state in ADMIN_STATES:
        if state == S.PORT_IN:
            continue
        _not_created(
            store, _create(nm, auth_by=None, assign_to=CHILD, state=state), _state_refused(state)
        )


def test_account_without_document_cannot_create(store: Store, nm: NumberManager) -> None:
    load_kazoo(store.db)
    batch = _create(nm, auth_by=UNRELATED, assign_to=UNRELATED)
    _not_created(store, batch, _state_refused(S.IN_SERVICE))
    batch = _create(nm, auth_by=UNRELATED, assign_to=UNRELATED, state=S.PORT_IN)
    _created(store, batch, S.PORT_IN, UNRELATED)


def test_creating_for_an_account_outside_the_tree_is_forbidden(
    store: Store, nm: NumberManager
) -> None:
    """Permission to create is not permission over the assignee: the engine authorizes."""
    load_kazoo(store.db)
    for assignee in (UNRELATED, MASTER):
        _not_created(
            store,
            _create(nm, auth_by=RESELLER, assign_to=assignee),
            forbidden(
                f"account '{RESELLER}' is not '{assignee}' or one of its ancestors "
                "(nor system or a superduper admin)"
            ),
        )


def test_creation_refusal_fails_the_whole_batch(store: Store, nm: NumberManager) -> None:
    doc = number_doc(NUM, "available", "knm_inventory")
    load_kazoo(store.db, extra=[doc])
    batch = nm.create([NUM, NEW], Options(auth_by=CHILD, assign_to=CHILD))
    assert batch.succeeded == {}
    assert failures(batch) == {NUM: _state_refused(S.IN_SERVICE), NEW: _state_refused(S.IN_SERVICE)}
    assert stored(store.db, NUM) == doc
    assert stored(store.db, NEW) is None
