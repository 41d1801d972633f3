"""Every state transition of a number, in one declarative table (KAZOO's ``knm_states`` with the
transitions KAZOO codes elsewhere: creation, discovery, the release unwind, hard delete, aging).

``TABLE`` has one ``Transition`` row per (event, source state, target): the guards that may
refuse it (each raises its own error), the effects on the record, and the calls the services
make around them: the feature providers' de-provisioning before the effects, the carrier's
acquire or disconnect after them (one call per carrier module for the whole batch). A cell with
no row is refused: ``refusal`` says with which error. The services read the rows:
``knm.services.operations`` runs create, activate, reserve, release and delete through them;
``knm.services.sweeps`` takes the aging row's source, target and effects for its
bulk write (``stored_changes``). Nothing else changes a number's state.

A service takes a number through a row in steps, so each step can run for the whole batch:
``admit`` (find the row, check its guards), the ``before`` calls, ``apply`` (the effects), the
``after`` calls, then ``apply(..., settle=True)``. ``run`` does the pure part at once and
``transition`` is the engine of the ``MOVE`` rows alone.

Which operation raises which event, and with which target:

* ``create``: ``CREATE`` for a number not in the store, in ``creation_state``; a stored one must
  have a ``TAKE_OVER`` row (aging, available, port_in), then ``MOVE`` to the creation state;
* ``activate``: ``DISCOVER`` for a number a search found, then ``MOVE`` to ``in_service``;
* ``reserve``: ``MOVE`` to ``reserved``;
* ``release``: ``RELEASE`` (its effects decide the end state), whose ``RETIRE`` effect deletes
  the number or ``MOVE``s it to ``aging``;
* ``delete``: ``DELETE``; the aging sweep: ``AGE_OUT``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from knm.domain import errors
from knm.domain.accounts import SYSTEM, AccountDirectory, is_account_id
from knm.domain.carrier_modules import CarrierModules
from knm.domain.errors import KnmError
from knm.domain.number import LOCAL_MARKER, NumberState, PhoneNumber
from knm.domain.options import Options

S = NumberState


class Event(StrEnum):
    """What happens to a number."""

    #: ``create`` on a number not in the store: it is built in the target state.
    CREATE = "create"
    #: ``create`` on a stored number: allowed from aging, available and port_in; then ``MOVE``.
    TAKE_OVER = "take_over"
    #: ``activate`` on a number a search found: it enters in ``discovery`` (never stored so).
    DISCOVER = "discover"
    #: An operation asks for a target: reserve, activate, create, a release's aging.
    MOVE = "move"
    #: ``release``: unwind the reserve history; an unassigned number is disconnected, then
    #: deleted or aged.
    RELEASE = "release"
    #: Hard delete, in any state (only an admin may ask: ``NumberManager.delete``).
    DELETE = "delete"
    #: The aging sweep: an ``aging`` number older than ``aging_expiry_d`` becomes available.
    AGE_OUT = "age_out"


class Guard(StrEnum):
    """A check that refuses a transition (raising its error) or finds nothing to do."""

    #: 403 ``forbidden`` unless the requester may act on the number (owner or ancestor, admin).
    AUTHORIZE = "authorize"
    #: ``AUTHORIZE``, or the number is reserved by an ancestor of the requester.
    AUTHORIZE_SUBACCOUNT = "authorize_subaccount"
    #: 403 without ``assign_to`` ("can not assign to self"); 400 ``no_change_required`` when
    #: the number already belongs to it.
    NOT_TO_SELF = "not_to_self"
    #: 400 ``invalid_state_transition`` for an MDN (from the source state).
    NOT_MDN = "not_mdn"
    #: Already assigned to ``assign_to``: nothing to do (a success, authorized or not).
    UNLESS_OWNED = "unless_owned"
    #: Outside the states a release accepts, only the home module's numbers are released
    #: (400 ``invalid_state_transition`` to the released state otherwise).
    HOME_MODULE = "home_module"
    #: Modified before the sweep's cutoff; a younger number is left alone.
    DUE = "due"


class Effect(StrEnum):
    """A change to the record."""

    #: Prepend ``assign_to`` to the reserve history (unless it already is the head).
    PUSH_HISTORY = "push_history"
    #: ``assigned_to := assign_to`` (the previous owner is recorded, ``used_by`` cleared).
    ASSIGN = "assign"
    #: ``state := target``.
    SET_STATE = "set_state"
    #: Every feature goes, except the ``local`` marker.
    WIPE_FEATURES = "wipe_features"
    #: Every public field goes.
    WIPE_PUBLIC = "wipe_public"
    #: Back to the previous reserver (``reserved``), or unassigned in the released state.
    UNWIND_HISTORY = "unwind_history"
    #: An unassigned number leaves the pool: deleted (``should_permanently_delete``, or its
    #: module deletes on release), else ``MOVE``d to aging when ``should_age`` and available.
    RETIRE = "retire"
    #: Hard delete: the record leaves the store (in memory its state becomes ``deleted``).
    REMOVE = "remove"


class Call(StrEnum):
    """What the services do around the effects, for the whole batch at once."""

    #: Before the effects: every requested feature provider removes its feature upstream.
    DEPROVISION = "deprovision"
    #: After the effects: the number's carrier buys it (one call per carrier module).
    ACQUIRE = "acquire"
    #: After the effects, for numbers they left unassigned: the carrier releases them.
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class Transition:
    """One row: ``event`` moves a number from ``source`` towards ``target``.

    ``source`` None is a number without a state (not in the store, for ``CREATE`` and
    ``DISCOVER``). ``target`` None: the effects decide (``RELEASE``), or the ``MOVE`` row that
    follows does (``TAKE_OVER``).
    """

    event: Event
    source: NumberState | None
    target: NumberState | None
    guards: tuple[Guard, ...] = ()
    effects: tuple[Effect, ...] = ()
    before: tuple[Call, ...] = ()
    after: tuple[Call, ...] = ()
    #: Effects after the ``after`` calls (a release settles once the carrier answered).
    settle: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class ReleasePolicy:
    """The system settings a release reads (``KNM_RELEASED_STATE``, ``KNM_SHOULD_AGE``,
    ``KNM_SHOULD_PERMANENTLY_DELETE``)."""

    released_state: NumberState = S.AVAILABLE
    should_age: bool = False
    permanently_delete: bool = False


@dataclass(frozen=True)
class TransitionContext:
    """Who asks, for whom, the accounts needed to decide, and the settings the rows read."""

    options: Options
    accounts: AccountDirectory = field(default_factory=AccountDirectory)
    policy: ReleasePolicy = field(default_factory=ReleasePolicy)
    #: ``AGE_OUT``: numbers modified before this are due.
    cutoff: datetime | None = None

    @property
    def assign_to(self) -> str | None:
        return self.options.assign_to

    @property
    def auth_by(self) -> str | None:
        return self.options.auth_by


# ====================================================================================== the table
#: Targets an operation may ask for (``MOVE`` and ``CREATE``); any other fails without a cause.
MOVE_TARGETS: Final[tuple[NumberState, ...]] = (
    S.RESERVED,
    S.IN_SERVICE,
    S.AVAILABLE,
    S.AGING,
    S.PORT_IN,
)
#: Targets an MDN can never reach (400 ``invalid_state_transition`` from ``'MDN'``).
MDN_FORBIDDEN_TARGETS: Final[frozenset[NumberState]] = frozenset(
    {S.RESERVED, S.AVAILABLE, S.AGING, S.PORT_IN}
)
#: States ``release`` accepts from any module (other states: the home module's only).
RELEASABLE_STATES: Final[frozenset[NumberState]] = frozenset(
    {S.RELEASED, S.RESERVED, S.PORT_IN, S.IN_SERVICE}
)
#: Stored states ``create`` may take a number over from (others: 409 ``number_exists``).
TAKE_OVER_STATES: Final[tuple[NumberState, ...]] = (S.AGING, S.AVAILABLE, S.PORT_IN)

G, E, C, M = Guard, Effect, Call, Event.MOVE
_RESERVE = (E.PUSH_HISTORY, E.ASSIGN, E.SET_STATE)
_ASSIGN = (E.ASSIGN, E.SET_STATE)
_BUY = (C.ACQUIRE,)

#: ``MOVE``: the number engine's table. A cell missing here is refused (``refusal``).
# fmt: off
_MOVES: Final[tuple[Transition, ...]] = (
    Transition(M, S.DISCOVERY, S.RESERVED, (G.AUTHORIZE,), _RESERVE, after=_BUY),
    Transition(M, S.AVAILABLE, S.RESERVED, (G.AUTHORIZE,), _RESERVE),
    Transition(M, S.RESERVED, S.RESERVED, (G.NOT_TO_SELF, G.AUTHORIZE), _RESERVE, after=_BUY),
    Transition(M, S.IN_SERVICE, S.RESERVED, (G.AUTHORIZE,), _RESERVE),
    Transition(M, S.DISCOVERY, S.IN_SERVICE, (G.NOT_MDN, G.AUTHORIZE), _ASSIGN, after=_BUY),
    Transition(M, S.AVAILABLE, S.IN_SERVICE, (G.NOT_MDN,), _ASSIGN),  # anyone may buy it
    Transition(M, S.RESERVED, S.IN_SERVICE, (G.NOT_MDN, G.AUTHORIZE_SUBACCOUNT), _ASSIGN),
    Transition(M, S.IN_SERVICE, S.IN_SERVICE, (G.UNLESS_OWNED, G.AUTHORIZE), _ASSIGN),
    Transition(M, S.PORT_IN, S.IN_SERVICE, (G.NOT_MDN, G.AUTHORIZE), _ASSIGN),
    Transition(M, S.AGING, S.IN_SERVICE, (G.NOT_MDN,), _ASSIGN),  # re-buy a released number
    Transition(M, S.AVAILABLE, S.AVAILABLE, (G.AUTHORIZE,), (E.SET_STATE,)),  # no assignment
    Transition(M, S.AVAILABLE, S.AGING, (), _ASSIGN),
    Transition(M, S.AGING, S.AGING, (), _ASSIGN),
    Transition(M, S.RELEASED, S.AGING, (), _ASSIGN),
    Transition(M, S.PORT_IN, S.PORT_IN, (), _ASSIGN),
)
# fmt: on

_UNWIND = (E.WIPE_FEATURES, E.WIPE_PUBLIC, E.UNWIND_HISTORY)


def _release(source: NumberState | None) -> Transition:
    guards = (G.AUTHORIZE,) if source in RELEASABLE_STATES else (G.HOME_MODULE, G.AUTHORIZE)
    return Transition(
        Event.RELEASE,
        source,
        None,
        guards,
        _UNWIND,
        before=(C.DEPROVISION,),
        after=(C.DISCONNECT,),
        settle=(E.RETIRE,),
    )


_SOURCES: Final[tuple[NumberState | None, ...]] = (None, *NumberState)

#: Every transition of a number.
TABLE: Final[tuple[Transition, ...]] = (
    # a new number is built in its target state: it takes that state's same-state rule
    Transition(Event.CREATE, None, S.RESERVED, (G.NOT_TO_SELF, G.AUTHORIZE), _RESERVE, after=_BUY),
    Transition(Event.CREATE, None, S.IN_SERVICE, (G.UNLESS_OWNED, G.AUTHORIZE), _ASSIGN),
    Transition(Event.CREATE, None, S.AVAILABLE, (G.AUTHORIZE,), (E.SET_STATE,)),
    Transition(Event.CREATE, None, S.AGING, (), _ASSIGN),
    Transition(Event.CREATE, None, S.PORT_IN, (), _ASSIGN),
    *(Transition(Event.TAKE_OVER, source, None) for source in TAKE_OVER_STATES),
    Transition(Event.DISCOVER, None, S.DISCOVERY, (), (E.SET_STATE,)),
    *_MOVES,
    *(_release(source) for source in _SOURCES),
    *(
        Transition(Event.DELETE, source, S.DELETED, (), (E.REMOVE,), before=(C.DEPROVISION,))
        for source in _SOURCES
    ),
    Transition(Event.AGE_OUT, S.AGING, S.AVAILABLE, (G.DUE,), (E.SET_STATE,)),
)

_ROWS: Final[dict[tuple[Event, NumberState | None, NumberState | None], Transition]] = {
    (row.event, row.source, row.target): row for row in TABLE
}
#: Events whose target is theirs, not the caller's (None: the effects or a ``MOVE`` decide).
_OWN_TARGET: Final[dict[Event, NumberState | None]] = {
    Event.TAKE_OVER: None,
    Event.DISCOVER: S.DISCOVERY,
    Event.RELEASE: None,
    Event.DELETE: S.DELETED,
    Event.AGE_OUT: S.AVAILABLE,
}


def refusal(
    event: Event,
    source: NumberState | None,
    target: NumberState | None = None,
    *,
    number: str = "",
    policy: ReleasePolicy | None = None,
) -> KnmError:
    """Why a cell without a row is refused (the error its number fails with)."""
    target = _OWN_TARGET.get(event, target)
    if event == Event.TAKE_OVER:
        return errors.number_exists(number)
    if event in (Event.MOVE, Event.CREATE) and target not in MOVE_TARGETS:
        return errors.invalid_state_transition()  # an unsupported target: no cause
    if event == Event.RELEASE:
        released = (policy or ReleasePolicy()).released_state
        return errors.invalid_state_transition(source.value if source else None, released.value)
    return errors.invalid_state_transition(
        source.value if source else None, target.value if target else None
    )


def find(
    event: Event,
    source: NumberState | None,
    target: NumberState | None = None,
    *,
    number: str = "",
    policy: ReleasePolicy | None = None,
) -> Transition:
    """The row of a cell; raises its refusal when there is none."""
    found = _ROWS.get((event, source, _OWN_TARGET.get(event, target)))
    if found is None:
        raise refusal(event, source, target, number=number, policy=policy)
    return found


# ====================================================================================== guards
def _authorize(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    if not ctx.accounts.is_authorized(pn, ctx.auth_by, ctx.assign_to):
        raise errors.unauthorized(ctx.accounts.refusal(pn, ctx.auth_by, ctx.assign_to))
    return True


def _authorize_subaccount(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    if not (
        ctx.accounts.is_authorized(pn, ctx.auth_by, ctx.assign_to)
        or ctx.accounts.is_reserved_from_parent(pn, ctx.auth_by)
    ):
        cause = ctx.accounts.refusal(pn, ctx.auth_by, ctx.assign_to)
        raise errors.unauthorized(
            f"{cause}, and the number is not reserved by one of its ancestors"
        )
    return True


def _not_to_self(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    if ctx.assign_to is None:
        raise errors.unauthorized("can not assign to self")
    if ctx.assign_to == pn.assigned_to:
        raise errors.no_change_required(pn.number)
    return True


def _not_mdn(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    if pn.is_mdn:
        raise refusal(Event.MOVE, row.source, row.target)
    return True


def _unless_owned(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    return pn.assigned_to is None or pn.assigned_to != ctx.assign_to


def _home_module(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    if not pn.module_traits.home:
        raise refusal(Event.RELEASE, row.source, policy=ctx.policy)
    return True


def _due(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> bool:
    return ctx.cutoff is not None and pn.modified < ctx.cutoff


#: A guard raises the refusal, or answers whether there is anything to do.
_Check = Callable[[PhoneNumber, TransitionContext, Transition], bool]
_GUARDS: Final[dict[Guard, _Check]] = {
    G.AUTHORIZE: _authorize,
    G.AUTHORIZE_SUBACCOUNT: _authorize_subaccount,
    G.NOT_TO_SELF: _not_to_self,
    G.NOT_MDN: _not_mdn,
    G.UNLESS_OWNED: _unless_owned,
    G.HOME_MODULE: _home_module,
    G.DUE: _due,
}


def source_of(event: Event, pn: PhoneNumber) -> NumberState | None:
    """The source state of ``pn``'s row: none for a number entering (``CREATE``, ``DISCOVER``)."""
    return None if event in (Event.CREATE, Event.DISCOVER) else pn.state


def admit(
    event: Event, pn: PhoneNumber, ctx: TransitionContext, target: NumberState | None = None
) -> Transition | None:
    """The row ``pn`` takes for ``event`` (towards ``target``), its guards checked in order.

    Raises the ``KnmError`` the number fails with (an unsupported target, an MDN's, a cell
    without a row, a guard's); None when a guard finds nothing to do (already there).
    """
    if event in (Event.MOVE, Event.CREATE):
        if target not in MOVE_TARGETS:
            raise errors.invalid_state_transition()
        if target in MDN_FORBIDDEN_TARGETS and pn.is_mdn:
            raise errors.invalid_state_transition("'MDN'", target.value)
    row = find(event, source_of(event, pn), target, number=pn.number, policy=ctx.policy)
    if all(_GUARDS[guard](pn, ctx, row) for guard in row.guards):
        return row
    return None


# ====================================================================================== effects
def _unwind_history(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> None:
    history = pn.reserve_history
    if len(history) >= 2:
        pn.set_assigned_to(history[1])
        pn.set_reserve_history(history[1:])
        pn.set_state(S.RESERVED)
    else:
        pn.set_assigned_to(None)
        pn.set_reserve_history([])
        pn.set_state(ctx.policy.released_state)


def _retire(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> None:
    if pn.assigned_to is not None:
        return
    if ctx.policy.permanently_delete or pn.module_traits.deleted_on_release:
        pn.mark_deleted()
    elif ctx.policy.should_age and pn.state == S.AVAILABLE:
        aging = TransitionContext(ctx.options.but(assign_to=None), ctx.accounts, ctx.policy)
        transition(pn, S.AGING, aging)


def _set_state(pn: PhoneNumber, ctx: TransitionContext, row: Transition) -> None:
    assert row.target is not None, row
    pn.set_state(row.target)


_Change = Callable[[PhoneNumber, TransitionContext, Transition], None]
_EFFECTS: Final[dict[Effect, _Change]] = {
    E.PUSH_HISTORY: lambda pn, ctx, row: pn.push_reserve_history(ctx.assign_to),
    E.ASSIGN: lambda pn, ctx, row: pn.set_assigned_to(ctx.assign_to),
    E.SET_STATE: _set_state,
    E.WIPE_FEATURES: lambda pn, ctx, row: pn.set_features(
        {LOCAL_MARKER: pn.features[LOCAL_MARKER]} if LOCAL_MARKER in pn.features else {}
    ),
    E.WIPE_PUBLIC: lambda pn, ctx, row: pn.reset_public({}),
    E.UNWIND_HISTORY: _unwind_history,
    E.RETIRE: _retire,
    E.REMOVE: lambda pn, ctx, row: pn.mark_deleted(),
}


def apply(
    row: Transition, pn: PhoneNumber, ctx: TransitionContext, *, settle: bool = False
) -> None:
    """Apply ``row``'s effects to ``pn`` (``settle``: its settling effects)."""
    for effect in row.settle if settle else row.effects:
        _EFFECTS[effect](pn, ctx, row)


# ====================================================================================== running
def run(
    event: Event, pn: PhoneNumber, ctx: TransitionContext, target: NumberState | None = None
) -> Transition | None:
    """``admit`` then ``apply``: the row taken (its calls and settling effects are the
    caller's), or None when there was nothing to do."""
    row = admit(event, pn, ctx, target)
    if row is not None:
        apply(row, pn, ctx)
    return row


def transition(pn: PhoneNumber, target: NumberState, ctx: TransitionContext) -> bool:
    """``MOVE`` ``pn`` to ``target``; True when its carrier must acquire it."""
    row = run(Event.MOVE, pn, ctx, target)
    return row is not None and C.ACQUIRE in row.after


def stored_changes(row: Transition, now: datetime) -> dict[str, Any]:
    """The stored fields ``row``'s effects set, for a bulk write that skips loading records.

    Only a row that just sets the state can be written so (``pvt_state``, and ``pvt_modified``
    since every change moves it): ``AGE_OUT``.
    """
    if row.effects != (E.SET_STATE,) or row.target is None:
        raise ValueError(f"{row.event} {row.source} -> {row.target} needs the record loaded")
    return {"pvt_state": row.target.value, "pvt_modified": now}


# ====================================================================================== creation
def creation_state(options: Options, modules: CarrierModules) -> NumberState:
    """The state a ``create`` builds numbers in: ``port_in`` when asked, ``in_service`` for a
    completed port or an MDN, else the ``state`` option (default ``in_service``)."""
    if options.state == S.PORT_IN:
        return S.PORT_IN
    if options.ported_in or modules.of(options.module_name).mobile:
        return S.IN_SERVICE
    return options.state or S.IN_SERVICE


def creation_module(options: Options, modules: CarrierModules, port_in_module: str) -> str:
    """The carrier module of a new number: the home module in ``port_in``, ``port_in_module``
    for a completed port (both override ``module_name``), else ``module_name`` or the default."""
    if creation_state(options, modules) == S.PORT_IN:
        return modules.home or modules.default
    if options.ported_in:
        return port_in_module
    return options.module_name or modules.default


def take_over_options(options: Options, port_in_module: str) -> Options:
    """The options applied to a number ``create`` takes over: a completed port moves it to
    ``port_in_module`` unless the caller names a module."""
    if options.ported_in and "module_name" not in options.model_fields_set:
        return options.but(module_name=port_in_module)
    return options


def creation_refusal(
    options: Options, accounts: AccountDirectory, modules: CarrierModules
) -> KnmError | None:
    """KAZOO's ``ensure_can_create``, for the whole request before any number is read.

    The creation state must be one the requester may create in (port-ins, completed ports and
    MDNs are exempt); ``assign_to`` must be an account; an account other than system needs
    ``allow_additions`` (or to be a superduper admin), except for port-ins.
    """
    state = creation_state(options, modules)
    exempt = (
        options.state == S.PORT_IN or options.ported_in or modules.of(options.module_name).mobile
    )
    if not exempt and state not in accounts.allowed_creation_states(options.auth_by):
        return errors.unauthorized(f"creating number in state '{state.value}' is not allowed")
    if not is_account_id(options.assign_to):
        return errors.assign_failure()
    auth_by = options.auth_by
    if auth_by == SYSTEM:
        return None
    if not is_account_id(auth_by):
        return errors.unauthorized(
            "cannot determined account is allowed to create number, account id is undefined"
        )
    account = accounts.get(auth_by)
    if (
        options.ported_in
        or state == S.PORT_IN
        or (account is not None and (account.allow_additions or account.superduper_admin))
    ):
        return None
    return errors.unauthorized(f"account '{auth_by}' is not allowed to create number")
