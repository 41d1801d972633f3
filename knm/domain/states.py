"""The state transition engine (KAZOO's ``knm_states``, spec §2.2-2.3).

``transition(pn, target, ctx)`` applies the guards and effects of the table for the number's
current state and the operation's target, raising ``KnmError`` for that number alone. It returns
whether the carrier must *acquire* the number; the operation layer calls the carriers afterwards,
one call per module for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from knm.domain import errors
from knm.domain.accounts import AccountDirectory
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options

S = NumberState

#: Targets the engine handles; anything else fails without a cause (§2.2).
SUPPORTED_TARGETS: Final[frozenset[NumberState]] = frozenset(
    {S.RESERVED, S.IN_SERVICE, S.AVAILABLE, S.AGING, S.PORT_IN}
)
#: Targets an MDN can never reach.
MDN_FORBIDDEN_TARGETS: Final[frozenset[NumberState]] = frozenset(
    {S.RESERVED, S.AVAILABLE, S.AGING, S.PORT_IN}
)


@dataclass(frozen=True)
class TransitionContext:
    """Who asks, for whom, and the accounts needed to decide."""

    options: Options
    accounts: AccountDirectory

    @property
    def assign_to(self) -> str | None:
        return self.options.assign_to

    @property
    def auth_by(self) -> str | None:
        return self.options.auth_by


# ---------------------------------------------------------------------------------- guards
def _authorize(pn: PhoneNumber, ctx: TransitionContext) -> None:
    if not ctx.accounts.is_authorized(pn, ctx.auth_by, ctx.assign_to):
        raise errors.unauthorized(ctx.accounts.refusal(pn, ctx.auth_by, ctx.assign_to))


def _authorize_subaccount(pn: PhoneNumber, ctx: TransitionContext) -> None:
    if not (
        ctx.accounts.is_authorized(pn, ctx.auth_by, ctx.assign_to)
        or ctx.accounts.is_reserved_from_parent(pn, ctx.auth_by)
    ):
        cause = ctx.accounts.refusal(pn, ctx.auth_by, ctx.assign_to)
        raise errors.unauthorized(
            f"{cause}, and the number is not reserved by one of its ancestors"
        )


def _not_assigning_to_self(pn: PhoneNumber, ctx: TransitionContext) -> None:
    if ctx.assign_to is None:
        raise errors.unauthorized("can not assign to self")
    if ctx.assign_to == pn.assigned_to:
        raise errors.no_change_required(pn.number)


def _fail_if_mdn(pn: PhoneNumber, current: NumberState, target: NumberState) -> None:
    if pn.is_mdn:
        raise errors.invalid_state_transition(current.value, target.value)


# ---------------------------------------------------------------------------------- effects
def _move(pn: PhoneNumber, target: NumberState, ctx: TransitionContext) -> None:
    """Assign to ``assign_to`` (except for ``available``) and set the state."""
    if target != S.AVAILABLE:
        pn.set_assigned_to(ctx.assign_to)
    pn.set_state(target)


def _push_history(pn: PhoneNumber, ctx: TransitionContext) -> None:
    pn.push_reserve_history(ctx.assign_to)


Rule = Callable[[PhoneNumber, TransitionContext], bool]


def _to_reserved(acquire: bool, *, check_self: bool = False) -> Rule:
    def rule(pn: PhoneNumber, ctx: TransitionContext) -> bool:
        if check_self:
            _not_assigning_to_self(pn, ctx)
        _authorize(pn, ctx)
        _push_history(pn, ctx)
        _move(pn, S.RESERVED, ctx)
        return acquire

    return rule


def _to_in_service(
    current: NumberState,
    *,
    guard: Callable[[PhoneNumber, TransitionContext], None] | None,
    acquire: bool = False,
) -> Rule:
    def rule(pn: PhoneNumber, ctx: TransitionContext) -> bool:
        _fail_if_mdn(pn, current, S.IN_SERVICE)
        if guard is not None:
            guard(pn, ctx)
        _move(pn, S.IN_SERVICE, ctx)
        return acquire

    return rule


def _in_service_to_in_service(pn: PhoneNumber, ctx: TransitionContext) -> bool:
    if pn.assigned_to is not None and pn.assigned_to == ctx.assign_to:
        pn.set_state(S.IN_SERVICE)  # no-op success (also settles a brand-new record)
        return False
    _authorize(pn, ctx)
    _move(pn, S.IN_SERVICE, ctx)
    return False


def _available_to_available(pn: PhoneNumber, ctx: TransitionContext) -> bool:
    _authorize(pn, ctx)
    pn.set_state(S.AVAILABLE)
    return False


def _plain_move(target: NumberState) -> Rule:
    def rule(pn: PhoneNumber, ctx: TransitionContext) -> bool:
        _move(pn, target, ctx)
        return False

    return rule


#: The transition table of spec §2.3: (current, target) -> rule; absent pairs are refused.
TABLE: Final[dict[tuple[NumberState, NumberState], Rule]] = {
    (S.DISCOVERY, S.RESERVED): _to_reserved(acquire=True),
    (S.AVAILABLE, S.RESERVED): _to_reserved(acquire=False),
    (S.RESERVED, S.RESERVED): _to_reserved(acquire=True, check_self=True),
    (S.IN_SERVICE, S.RESERVED): _to_reserved(acquire=False),
    (S.DISCOVERY, S.IN_SERVICE): _to_in_service(S.DISCOVERY, guard=_authorize, acquire=True),
    (S.AVAILABLE, S.IN_SERVICE): _to_in_service(S.AVAILABLE, guard=None),
    (S.RESERVED, S.IN_SERVICE): _to_in_service(S.RESERVED, guard=_authorize_subaccount),
    (S.IN_SERVICE, S.IN_SERVICE): _in_service_to_in_service,
    (S.PORT_IN, S.IN_SERVICE): _to_in_service(S.PORT_IN, guard=_authorize),
    (S.AGING, S.IN_SERVICE): _to_in_service(S.AGING, guard=None),
    (S.AVAILABLE, S.AVAILABLE): _available_to_available,
    (S.AVAILABLE, S.AGING): _plain_move(S.AGING),
    (S.AGING, S.AGING): _plain_move(S.AGING),
    (S.RELEASED, S.AGING): _plain_move(S.AGING),
    (S.PORT_IN, S.PORT_IN): _plain_move(S.PORT_IN),
}


def transition(pn: PhoneNumber, target: NumberState, ctx: TransitionContext) -> bool:
    """Move ``pn`` towards ``target``; returns True when its carrier must acquire it."""
    if target not in SUPPORTED_TARGETS:
        raise errors.invalid_state_transition()
    if target in MDN_FORBIDDEN_TARGETS and pn.is_mdn:
        raise errors.invalid_state_transition("'MDN'", target.value)
    current = pn.state
    rule = TABLE.get((current, target)) if current is not None else None
    if rule is None:
        raise errors.invalid_state_transition(current.value if current else None, target.value)
    return rule(pn, ctx)
