"""The registry of carrier modules, keyed by the name stored in ``pvt_carrier_module``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from carriers.bandwidth import BandwidthCarrier
from carriers.bandwidth2 import Bandwidth2Carrier
from carriers.base import Carrier, CarrierContext
from carriers.inventory import InumCarrier, ManagedCarrier
from carriers.local import (
    InventoryCarrier,
    LocalCarrier,
    MdnCarrier,
    ReservedCarrier,
    ReservedResellerCarrier,
)
from carriers.other import OtherCarrier
from carriers.telnyx import TelnyxCarrier
from carriers.vitelity import VitelityCarrier
from carriers.voip_innovations import VoipInnovationsCarrier

#: Every module name KAZOO knows. Only registered modules (``_BUILTIN``) may be named by a
#: request, a CSV cell or a conversion: the others have no carrier and no queue consumer.
ALL_MODULES: Final[tuple[str, ...]] = (
    "knm_bandwidth2",
    "knm_bandwidth",
    "knm_inum",
    "knm_local",
    "knm_inventory",
    "knm_managed",
    "knm_mdn",
    "knm_other",
    "knm_reserved",
    "knm_reserved_reseller",
    "knm_simwood",
    "knm_telnyx",
    "knm_vitelity",
    "knm_voip_innovations",
    "knm_voxbone",
    "knm_didww",
    "knm_flowroute",
    "knm_inteliquent",
    "knm_it_vocal",
    "knm_level3",
    "knm_o1",
    "knm_peerless",
    "knm_thinq",
    "knm_verizon",
    "knm_windstream",
    "knm_ziron",
)

#: Always searched first in an account-scoped search (spec §3.2).
ACCOUNT_SEARCH_HEAD: Final[tuple[str, ...]] = ("knm_reserved", "knm_reserved_reseller", "knm_local")

_BUILTIN: Final[tuple[type[Carrier], ...]] = (
    LocalCarrier,
    InventoryCarrier,
    MdnCarrier,
    ReservedCarrier,
    ReservedResellerCarrier,
    ManagedCarrier,
    InumCarrier,
    TelnyxCarrier,
    VitelityCarrier,
    VoipInnovationsCarrier,
    BandwidthCarrier,
    Bandwidth2Carrier,
    OtherCarrier,
)


class CarrierRegistry:
    """Carrier module classes by name, instantiated per context on demand."""

    def __init__(self, classes: Iterable[type[Carrier]] = _BUILTIN) -> None:
        self._classes: dict[str, type[Carrier]] = {cls.name: cls for cls in classes}

    def register(self, cls: type[Carrier]) -> None:
        self._classes[cls.name] = cls

    def carrier_class(self, name: str | None) -> type[Carrier] | None:
        """The module's class, without building it (no HTTP client, no coordinator)."""
        return self._classes.get(name) if name else None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str | None, ctx: CarrierContext) -> Carrier | None:
        """The module for ``name``; ``None`` when knm has no such module."""
        cls = self._classes.get(name) if name else None
        return cls(ctx) if cls is not None else None

    def available_carriers(
        self,
        account_id: str | None,
        reseller_id: str | None,
        system_modules: Iterable[str],
        reseller_modules: Iterable[str] | None = None,
    ) -> list[str]:
        """Which modules a search fans out to (spec §3.2); unknown names are dropped."""
        if account_id is None or reseller_id is None:
            wanted = list(system_modules)
        else:
            tail = reseller_modules if reseller_modules is not None else system_modules
            wanted = [*ACCOUNT_SEARCH_HEAD, *(m for m in tail if m not in ACCOUNT_SEARCH_HEAD)]
        return [m for m in dict.fromkeys(wanted) if m in self._classes]

    def is_number_billable(self, name: str, ctx: CarrierContext) -> bool:
        """Unknown modules count as billable (KAZOO)."""
        carrier = self.get(name, ctx)
        return True if carrier is None else carrier.billable

    def max_prefix_length(self, names: Iterable[str], ctx: CarrierContext) -> int:
        """``min(15, each carrier's maximal prefix length)`` for the search info (spec §3.2)."""
        lengths = [15]
        for name in names:
            carrier = self.get(name, ctx)
            if carrier is not None:
                lengths.append(carrier.max_prefix_length)
        return min(lengths)


def default_registry() -> CarrierRegistry:
    """The registry with every module this build ships."""
    return CarrierRegistry()
