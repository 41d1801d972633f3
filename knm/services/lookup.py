"""Which account a number routes to: KAZOO's ``lookup_account`` and ``is_force_outbound``.

Call routing asks this for every call, so a lookup is read-only and costs at most two store
queries: the number's document, then either its owner's ``pvt_enabled`` flag or (number not
found) one active port request listing it.

A success carries the routing properties::

    {"account_id", "number", "pending_port", "local", "force_outbound", "inbound_cnam",
     "prepend"?, "ringback_media"?, "transfer_media"?}

(the last three only when set, as KAZOO's property lists drop ``undefined`` values). A failure is
``{"error": "not_reconcilable" | "not_found" | "unassigned"}``, ``{"error": "not_in_service",
"assigned_to": ID}`` or ``{"error": "account_disabled", "assigned_to": ID}``.

Kept from KAZOO on purpose: ``local`` is true for the home module (``knm_local``) only, not for
the other local modules (``knm_mdn``), although features, billing and ``force_outbound`` treat
every local module alike. Not reproduced: KAZOO's per-node cache of successful lookups (each
lookup reads the store, so a changed document is seen at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from carriers.registry import CarrierRegistry
from config.settings import Settings
from knm.domain import convert
from knm.domain.number import NumberState, PhoneNumber
from knm.store.numbers import ACTIVE_PORT_STATES

if TYPE_CHECKING:
    from knm.services.facade import Knm

#: States in which a number routes to its owner (KAZOO's ``check_number``).
ROUTABLE_STATES: Final[frozenset[NumberState]] = frozenset(
    {NumberState.PORT_IN, NumberState.IN_SERVICE, NumberState.PORT_OUT, NumberState.RESERVED}
)

NOT_RECONCILABLE: Final[str] = "not_reconcilable"
NOT_FOUND: Final[str] = "not_found"
UNASSIGNED: Final[str] = "unassigned"
NOT_IN_SERVICE: Final[str] = "not_in_service"
ACCOUNT_DISABLED: Final[str] = "account_disabled"


@dataclass(frozen=True)
class LookupResult:
    """KAZOO's ``{ok, AccountId, Props}`` or ``{error, Reason}`` for one number."""

    number: str
    account_id: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: The account a ``not_in_service``/``account_disabled`` number is assigned to.
    assigned_to: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The routing properties, or ``{"error": reason}`` (plus ``assigned_to`` when known)."""
        if self.error is None:
            return dict(self.props)
        out: dict[str, Any] = {"error": self.error}
        if self.assigned_to is not None:
            out["assigned_to"] = self.assigned_to
        return out


# ================================================================================ the lookup
def lookup_account(knm: Knm, number: str | None) -> LookupResult:
    """The account ``number`` routes to, with its routing properties."""
    settings = knm.settings
    if not number or not convert.is_reconcilable(
        number, settings.reconcile_regex, settings.e164_converters
    ):
        return LookupResult(number=number or "", error=NOT_RECONCILABLE)
    normalized = convert.normalize(number, settings.e164_converters)
    store = knm.store
    doc = store.numbers.find_one({"_id": normalized})
    if doc is None:
        if not settings.fetch_account_from_ports:
            return LookupResult(number=normalized, error=NOT_FOUND)
        port_account = _port_account(knm, normalized)
        if port_account is None:
            return LookupResult(number=normalized, error=NOT_FOUND)
        return port_result(normalized, port_account)

    pn = PhoneNumber.from_document(doc, knm.numbers.modules)
    owner = pn.assigned_to
    if owner is None:
        return LookupResult(number=pn.number, error=UNASSIGNED)
    if pn.state not in ROUTABLE_STATES:
        return LookupResult(number=pn.number, error=NOT_IN_SERVICE, assigned_to=owner)
    account = store.accounts.find_one({"_id": owner}, {"pvt_enabled": 1})
    # A missing account document counts as enabled, as KAZOO's is_enabled does.
    if account is not None and not bool(account.get("pvt_enabled", True)):
        return LookupResult(number=pn.number, error=ACCOUNT_DISABLED, assigned_to=owner)
    cnam = _cnam_lookup(knm.numbers.carriers)
    return LookupResult(number=pn.number, account_id=owner, props=number_props(pn, settings, cnam))


def _port_account(knm: Knm, number: str) -> str | None:
    """The account of an active port request listing ``number`` (one query), else None."""
    port = knm.store.port_requests.find_one(
        {"numbers": number, "pvt_port_state": {"$in": list(ACTIVE_PORT_STATES)}},
        {"account_id": 1, "pvt_account_id": 1},
    )
    if port is None:
        return None
    account = port.get("account_id") or port.get("pvt_account_id")
    return account if isinstance(account, str) and account else None


def port_result(number: str, account_id: str) -> LookupResult:
    """A number known only from an active port request: KAZOO's fixed properties."""
    props = {
        "pending_port": True,
        "local": True,
        "number": number,
        "account_id": account_id,
        "inbound_cnam": False,
        "force_outbound": True,
    }
    return LookupResult(number=number, account_id=account_id, props=props)


# ================================================================================ properties
def number_props(
    pn: PhoneNumber, settings: Settings, should_lookup_cnam: Callable[[str], bool]
) -> dict[str, Any]:
    """The routing properties of an assigned, routable number (``None`` values left out)."""
    props: dict[str, Any] = {
        "pending_port": pn.state == NumberState.PORT_IN,
        "local": pn.module_traits.home,
        "number": pn.number,
        "account_id": pn.assigned_to,
        "prepend": feature_prepend(pn),
        "inbound_cnam": feature_inbound_cnam(pn, should_lookup_cnam),
        "ringback_media": _ne_value(_object(pn.features.get("ringback")).get("early")),
        "transfer_media": _ne_value(_object(pn.features.get("ringback")).get("transfer")),
        "force_outbound": is_force_outbound(pn, settings),
    }
    return {k: v for k, v in props.items() if v is not None}


def feature_prepend(pn: PhoneNumber) -> Any:
    """``prepend.name`` when the prepend feature is enabled, else None."""
    prepend = _object(pn.features.get("prepend"))
    return _ne_value(prepend.get("name")) if _is_true(prepend.get("enabled")) else None


def feature_inbound_cnam(pn: PhoneNumber, should_lookup_cnam: Callable[[str], bool]) -> bool:
    """The ``inbound_cnam`` feature is active and the carrier wants CNAM looked up."""
    if "inbound_cnam" not in pn.features:
        return False
    return should_lookup_cnam(pn.carrier_module)


def is_force_outbound(pn: PhoneNumber, settings: Settings) -> bool:
    """Whether calls to ``pn`` leave the cluster through a carrier."""
    local = pn.module_traits.local
    if pn.state == NumberState.PORT_IN:
        return settings.force_port_in_outbound or (local and settings.force_local_outbound)
    if pn.state == NumberState.PORT_OUT:
        return settings.force_port_out_outbound or (local and settings.force_local_outbound)
    if local:
        return settings.force_local_outbound
    if "force_outbound" in pn.features:
        return _is_true(pn.features["force_outbound"])
    return settings.default_force_outbound


def _cnam_lookup(registry: CarrierRegistry) -> Callable[[str], bool]:
    """A module's ``should_lookup_cnam``; true when knm has no such module (KAZOO)."""

    def should_lookup_cnam(module: str) -> bool:
        # The class attribute: instantiating an integration would set up its HTTP client.
        cls = registry.carrier_class(module)
        return True if cls is None else bool(cls.should_lookup_cnam)

    return should_lookup_cnam


def _is_true(value: Any) -> bool:
    """KAZOO's ``kz_term:is_true``: ``true`` or the string ``"true"``."""
    return value is True or value == "true"


def _ne_value(value: Any) -> Any:
    """KAZOO's ``get_ne_value``: null, empty string, list or object are absent (None)."""
    return None if value in (None, "", [], {}) else value


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
