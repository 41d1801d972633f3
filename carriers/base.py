"""The carrier contract (KAZOO's ``knm_gen_carrier``).

A carrier module searches its stock, acquires (buys) a number, disconnects (releases) it and may
check numbers' status upstream. Modules are looked up by the name stored on the number document
(``pvt_carrier_module``).

A carrier also describes itself, in class attributes: what its numbers are to the number rules
(``marks_numbers_local``, ``mobile``, ``deletes_on_release``, ``home``, ``replaces``), whether it
is billed, the feature providers it offers, its settings (``config_key``, ``config_model``), the
queue its work runs on and the kind of worker that serves it. Nothing else in knm names a carrier:
adding one is one module plus one line in ``carriers/registry.py`` (or, for a carrier shipped
outside knm, a module named in ``KNM_CARRIER_PLUGINS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final

from pydantic import BaseModel

from carriers.context import CarrierContext as CarrierContext  # re-exported: the contract
from carriers.features import FeatureProvider
from config.settings import Settings
from knm.domain.carrier_modules import ModuleTraits
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber

#: The queues of carrier work are ``carrier.<module>``.
CARRIER_QUEUE_PREFIX: Final[str] = "carrier."


def queue_name(module: str) -> str:
    """The queue of a carrier module's work: ``carrier.knm_telnyx``."""
    return f"{CARRIER_QUEUE_PREFIX}{module}"


class CarrierKind(StrEnum):
    """Where a carrier's stock lives, which says what kind of worker should serve its queue."""

    #: The numbers collection itself: no provider call, fast.
    LOCAL = "local"
    #: Inventory collections of its own: store-bound, kept apart from the local carriers.
    INVENTORY = "inventory"
    #: A provider over HTTP: calls mostly wait on the network (a thread pool suits them).
    PROVIDER = "provider"


@dataclass(frozen=True)
class SearchRequest:
    """One carrier search: ``prefix`` is normalized (dial code + user prefix)."""

    prefix: str
    quantity: int
    offset: int = 0
    account_id: str | None = None
    reseller_id: str | None = None
    query_id: str = ""
    country: str = "US"
    dialcode: str = "+1"
    blocks: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """A number a carrier offers: in the system already (available/reserved) or discovered."""

    number: str
    carrier_module: str
    state: NumberState
    carrier_data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "carrier_module": self.carrier_module,
            "state": self.state.value,
            "carrier_data": self.carrier_data,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            number=data["number"],
            carrier_module=data["carrier_module"],
            state=NumberState(data["state"]),
            carrier_data=dict(data.get("carrier_data") or {}),
        )


class CarrierNotImplementedError(Exception):
    """The module has no such callback (KAZOO answers ``not_implemented``)."""


class Carrier:
    """Base of every carrier module; the defaults are KAZOO's "do nothing" answers."""

    #: The module name stored in ``pvt_carrier_module`` (``knm_telnyx``).
    name: ClassVar[str]
    #: The queue its work runs on: ``carrier.<name>`` (set from ``name``; routing relies on it).
    queue: ClassVar[str]
    #: Where its stock lives (and so which worker of the deployment serves its queue).
    kind: ClassVar[CarrierKind] = CarrierKind.PROVIDER
    #: KAZOO's ``is_local()``: stock in knm's own store, no provider. Informational, with KAZOO's
    #: values (``knm_inventory`` and ``knm_mdn`` say false); the number rules read the traits below.
    is_local: ClassVar[bool] = False
    #: KAZOO's ``is_number_billable``; billing itself counts by the ``local`` marker.
    billable: ClassVar[bool] = True
    should_lookup_cnam: ClassVar[bool] = True
    max_prefix_length: ClassVar[int] = 3

    # --- what its numbers are to the number rules (``knm.domain.carrier_modules``) ----------
    #: Its numbers carry the ``local`` feature marker: not billed, no paid feature unless the
    #: system allows it, calls forced outbound per ``KNM_FORCE_LOCAL_OUTBOUND``.
    marks_numbers_local: ClassVar[bool] = False
    #: Mobile numbers (MDN): created in service, changed only by an MDN run.
    mobile: ClassVar[bool] = False
    #: A release that leaves a number unassigned deletes it instead of returning it to the pool.
    deletes_on_release: ClassVar[bool] = False
    #: The system's own numbers (exactly one registered carrier): released from any state,
    #: ``local`` to call routing, where numbers created in ``port_in`` and documents naming
    #: ``undefined`` land.
    home: ClassVar[bool] = False
    #: Retired modules whose KAZOO documents move to this carrier when loaded.
    replaces: ClassVar[tuple[str, ...]] = ()

    # --- what it offers and reads ----------------------------------------------------------
    #: The feature providers it offers (its own E911 and CNAM at the provider).
    feature_providers: ClassVar[tuple[type[FeatureProvider], ...]] = ()
    #: Its settings: ``KNM_CARRIERS__<config_key>__<KEY>``, validated by ``config_model``.
    config_key: ClassVar[str | None] = None
    config_model: ClassVar[type[BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.queue = queue_name(cls.name)

    def __init__(self, ctx: CarrierContext) -> None:
        self.ctx = ctx

    @classmethod
    def traits(cls) -> ModuleTraits:
        """What its numbers are to the number rules."""
        return ModuleTraits(
            local=cls.marks_numbers_local,
            mobile=cls.mobile,
            deleted_on_release=cls.deletes_on_release,
            home=cls.home,
        )

    @classmethod
    def read_config(cls, settings: Settings) -> Any:
        """Its settings section, validated by ``config_model`` (None without one).

        The built-in carriers' sections are fields of ``settings.carriers``; a plugin's is kept
        as given (``KNM_CARRIERS__<KEY>__...``) and validated here.
        """
        if cls.config_model is None or cls.config_key is None:
            return None
        section = getattr(settings.carriers, cls.config_key, None)
        if isinstance(section, cls.config_model):
            return section
        extra = settings.carriers.model_extra or {}
        return cls.config_model.model_validate(extra.get(cls.config_key) or {})

    @classmethod
    def feature_provider(cls, feature: str) -> str | None:
        """The name of its own provider of ``feature`` (``e911``), if it offers one."""
        for provider in cls.feature_providers:
            if feature in provider.features:
                return provider.name
        return None

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        """Search the stock; an empty list is KAZOO's ``not_available``."""
        return []

    def acquire_number(self, pn: PhoneNumber) -> None:
        """Buy or provision ``pn`` upstream; may update its carrier data. Raise ``KnmError``."""

    def disconnect_number(self, pn: PhoneNumber) -> None:
        """Release ``pn`` upstream. Raise ``KnmError`` on failure."""

    def acquire_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Acquire a batch; modules with a bulk API override this. Returns failures by number.

        ``request_id`` names the request (a rerun of it must not buy twice: the integrations'
        provisioning ledger uses it).
        """
        return each_number(pns, self.acquire_number)

    def disconnect_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Disconnect a batch; returns failures by number."""
        return each_number(pns, self.disconnect_number)

    def check_numbers(self, numbers: Sequence[str]) -> dict[str, str]:
        """Ask the carrier for the numbers' status."""
        raise CarrierNotImplementedError(self.name)

    def is_number_billable(self, pn: PhoneNumber) -> bool:
        return self.billable


def each_number(pns: Sequence[PhoneNumber], fn: Any) -> dict[str, KnmError]:
    """Run ``fn`` on every number; a ``KnmError`` fails that number only."""
    failed: dict[str, KnmError] = {}
    for pn in pns:
        try:
            fn(pn)
        except KnmError as error:
            failed[pn.number] = error
    return failed


def prefix_range(prefix: str) -> dict[str, str]:
    """A MongoDB ``_id`` range holding exactly the numbers that start with ``prefix``."""
    return {"$gte": prefix, "$lt": prefix + "\uffff"}
