"""KAZOO's ``number_management`` CSV actions: columns and cell checks.

Each action declares its mandatory and optional columns and whether it takes a CSV. Every cell
verifier KAZOO defines is applied (KAZOO registered only four), and a
row's public fields are built from its feature columns the way ``kt_numbers`` builds them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from carriers.registry import default_registry
from knm.domain import errors
from knm.domain.accounts import is_account_id
from knm.domain.number import NumberState
from knm.domain.public_fields import key_problem
from knm.services.listing import LISTING_COLUMNS


@dataclass(frozen=True)
class Action:
    """One CSV action: its columns and whether it reads a file."""

    name: str
    takes_input: bool
    mandatory: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    accepts_opaque: bool = False
    description: str = ""


#: Listing columns an import may set (identity and bookkeeping columns are ignored).
_IMPORT_OPTIONAL: Final[tuple[str, ...]] = (
    *(c for c in LISTING_COLUMNS if c != "e164"),
    "carrier_name",
)
#: The feature columns of update_merge / update_overwrite: the listing's, from ``cnam.inbound``.
FEATURE_COLUMNS: Final[tuple[str, ...]] = LISTING_COLUMNS[LISTING_COLUMNS.index("cnam.inbound") :]
_UPDATE_OPTIONAL: Final[tuple[str, ...]] = ("carrier_name", *FEATURE_COLUMNS)

DUMP_STATES: Final[tuple[str, ...]] = (
    "aging",
    "available",
    "deleted",
    "discovery",
    "in_service",
    "port_in",
    "port_out",
    "released",
    "reserved",
)

ACTIONS: Final[dict[str, Action]] = {
    a.name: a
    for a in (
        Action("import", True, ("e164",), _IMPORT_OPTIONAL, True, "Create numbers."),
        Action("assign_to", True, ("e164",), ("account_id",), False, "Activate numbers."),
        Action("reserve", True, ("e164",), ("account_id",), False, "Reserve numbers."),
        Action("release", True, ("e164",), (), False, "Release numbers."),
        Action("delete", True, ("e164",), (), False, "Hard-delete numbers (admins)."),
        Action("update_merge", True, ("e164",), _UPDATE_OPTIONAL, True, "Merge features."),
        Action("update_overwrite", True, ("e164",), _UPDATE_OPTIONAL, True, "Set features."),
        Action("find", True, ("e164",), (), False, "List the given numbers."),
        Action("list", False, description="Numbers of the account."),
        Action("list_all", False, description="Numbers of the account and its descendants."),
        Action("dump", False, description="Every number (master account only)."),
        *(
            Action(f"dump_{state}", False, description=f"Every {state} number (master only).")
            for state in DUMP_STATES
        ),
    )
}

_BOOL_VALUES: Final[frozenset[str]] = frozenset({"true", "false"})


@cache
def _carrier_modules() -> frozenset[str]:
    """The carrier modules a ``carrier_module`` cell may name: the registered ones, plugins
    included (a module no carrier owns would leave its numbers' work on a queue nobody
    consumes). Read once, when the first cell is checked."""
    return frozenset(default_registry().names())


_E164_RE: Final[re.Pattern[str]] = re.compile(r"^\+[1-9]\d{1,14}$")


def _is_bool(value: str) -> bool:
    return value in _BOOL_VALUES


def _is_state(value: str) -> bool:
    return value in {s.value for s in NumberState}


Verifier = Callable[[str], bool]

#: Cell checks by column (every one registered). Empty optional cells
#: always pass; ``e164`` is checked separately because numbers come in any reconcilable form.
VERIFIERS: Final[dict[str, Verifier]] = {
    "account_id": is_account_id,
    "carrier_module": lambda v: v in _carrier_modules(),
    "ported_in": _is_bool,
    "state": _is_state,
    "cnam.inbound": _is_bool,
    "prepend.enabled": _is_bool,
    "force_outbound": _is_bool,
    "failover.e164": lambda v: _E164_RE.match(v) is not None,
}


def bad_cells(action: Action, row: Mapping[str, str]) -> list[str]:
    """The columns of ``row`` whose value fails its verifier (empty optional cells pass), and
    the ``opaque.*`` columns with a value whose path has a key no field may have (``$x``)."""
    bad = [c for c in action.mandatory if not row.get(c, "").strip()]
    for column, verify in VERIFIERS.items():
        value = row.get(column, "").strip()  # as the actions read it (public_fields strips)
        if value and not verify(value):
            bad.append(column)
    for column, value in row.items():
        opaque = column.startswith("opaque.") and value.strip()
        if opaque and any(key_problem(key) for key in _opaque_path(column)):
            bad.append(column)
    return bad


def row_error(action: Action, row: Mapping[str, str]) -> str | None:
    """A row's bad cells as its error: ``bad field(s) ...``, and an unknown carrier module as
    ``carrier_not_found`` naming it."""
    bad = bad_cells(action, row)
    problems = []
    if "carrier_module" in bad:
        bad.remove("carrier_module")
        unknown = errors.carrier_not_found(row.get("carrier_module", "").strip())
        problems.append(f"{unknown.error}: {unknown.message}")
    if bad:
        problems.insert(0, f"bad field(s) {' '.join(bad)}")
    return "; ".join(problems) or None


def _opaque_path(column: str) -> list[str]:
    """The keys an ``opaque.a.b`` column sets (``a``, ``b``; empty parts are ignored)."""
    return [p for p in column[len("opaque.") :].strip().split(".") if p]


def _put(target: dict[str, Any], key: str, value: str) -> None:
    if value:
        target[key] = value


def public_fields(row: Mapping[str, str]) -> dict[str, Any]:
    """The public fields a row asks for ."""
    fields: dict[str, Any] = {}

    def cell(name: str) -> str:
        return row.get(name, "").strip()

    if cell("carrier_name"):
        fields["carrier_name"] = cell("carrier_name")
    cnam: dict[str, Any] = {}
    _put(cnam, "display_name", cell("cnam.outbound"))
    if cell("cnam.inbound"):
        cnam["inbound_lookup"] = cell("cnam.inbound") == "true"
    if cnam:
        fields["cnam"] = cnam
    e911: dict[str, Any] = {}
    for key, column in (
        ("locality", "e911.locality"),
        ("caller_name", "e911.name"),
        ("region", "e911.region"),
        ("street_address", "e911.street_address"),
        ("extended_address", "e911.extended_address"),
        ("postal_code", "e911.postal_code"),
    ):
        _put(e911, key, cell(column))
    if e911:
        fields["e911"] = e911
    prepend: dict[str, Any] = {}
    if cell("prepend.enabled"):
        prepend["enabled"] = cell("prepend.enabled") == "true"
    _put(prepend, "name", cell("prepend.name"))
    _put(prepend, "number", cell("prepend.number"))
    if prepend:
        fields["prepend"] = prepend
    ringback: dict[str, Any] = {}
    _put(ringback, "early", cell("ringback.early"))
    _put(ringback, "transfer", cell("ringback.transfer"))
    if ringback:
        fields["ringback"] = ringback
    if cell("force_outbound"):
        fields["force_outbound"] = cell("force_outbound") == "true"
    failover: dict[str, Any] = {}
    _put(failover, "e164", cell("failover.e164"))
    _put(failover, "sip", cell("failover.sip"))
    if failover:
        fields["failover"] = failover
    for column, value in row.items():
        if column.startswith("opaque.") and value.strip():
            path = _opaque_path(column)
            if path:
                _set_path(fields, path, value.strip())
    return fields


def _set_path(target: dict[str, Any], path: list[str], value: str) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
