"""The registry of carrier modules, keyed by the name stored in ``pvt_carrier_module``.

The built-in carriers are the classes of ``_BUILTIN``: adding one is one module and one line
there. A carrier shipped outside knm is a *plugin*: a module named in ``KNM_CARRIER_PLUGINS``
(comma-separated) whose ``CARRIERS`` tuple lists its carrier classes. ``default_registry``
imports the plugins and registers their carriers after the built-in ones, in every process that
reads the setting (the CLI, each worker, beat), so their queues, feature providers and settings
are there as for a built-in carrier. Everything else knm knows about carriers is derived from
the registered classes: the queues, the traits the number rules read (``modules``), the feature
providers they offer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Final

from carriers.bandwidth import BandwidthCarrier
from carriers.bandwidth2 import Bandwidth2Carrier
from carriers.base import Carrier, CarrierContext, CarrierKind
from carriers.features import FeatureProvider
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
from config.settings import Settings, get_settings
from knm.domain.carrier_modules import CarrierModules

#: Always searched first in an account-scoped search.
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


class CarrierPluginError(ValueError):
    """A module named in ``KNM_CARRIER_PLUGINS`` cannot be used (one line naming it and why)."""


class CarrierRegistry:
    """Carrier module classes by name, instantiated per context on demand."""

    def __init__(self, classes: Iterable[type[Carrier]] = _BUILTIN) -> None:
        self._classes: dict[str, type[Carrier]] = {cls.name: cls for cls in classes}
        self._modules: dict[str, CarrierModules] = {}

    def register(self, cls: type[Carrier]) -> None:
        """Add ``cls`` (or replace the class registered under its name)."""
        self._classes[cls.name] = cls
        self._modules.clear()

    def load_plugin(self, module_name: str) -> list[type[Carrier]]:
        """Import the plugin module ``module_name`` and register its ``CARRIERS``."""
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise CarrierPluginError(
                f"KNM_CARRIER_PLUGINS: cannot import {module_name!r}: {exc}"
            ) from exc
        found = getattr(module, "CARRIERS", None)
        if not isinstance(found, tuple | list) or not all(
            isinstance(c, type)
            and issubclass(c, Carrier)
            and isinstance(c.__dict__.get("name"), str)
            for c in found
        ):
            raise CarrierPluginError(
                f"KNM_CARRIER_PLUGINS: {module_name!r} has no CARRIERS tuple of named Carrier "
                "classes"
            )
        for cls in found:
            if cls.name in self._classes and self._classes[cls.name] is not cls:
                raise CarrierPluginError(
                    f"KNM_CARRIER_PLUGINS: {module_name!r} registers {cls.name!r}, which "
                    "another carrier already is"
                )
            self.register(cls)
        return list(found)

    def carrier_class(self, name: str | None) -> type[Carrier] | None:
        """The module's class, without building it (no HTTP client, no coordinator)."""
        return self._classes.get(name) if name else None

    def names(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> list[type[Carrier]]:
        """The registered classes, by name."""
        return [self._classes[name] for name in self.names()]

    def queues(self, kind: CarrierKind | None = None) -> list[str]:
        """The carrier queues (``carrier.<module>``) a worker serves, optionally of one kind."""
        return [c.queue for c in self.classes() if kind is None or c.kind == kind]

    def modules(self, default: str) -> CarrierModules:
        """What the registered modules are to the number rules; ``default`` is the module of
        new numbers and of documents naming none (``available_module_name``)."""
        if default not in self._modules:
            homes = [c.name for c in self.classes() if c.home]
            if len(homes) > 1:
                raise ValueError(f"at most one registered carrier may be home, not {homes}")
            self._modules[default] = CarrierModules(
                home=homes[0] if homes else None,
                default=default,
                traits={c.name: c.traits() for c in self.classes()},
                renamed={old: c.name for c in self.classes() for old in c.replaces},
            )
        return self._modules[default]

    def feature_providers(self) -> list[type[FeatureProvider]]:
        """Every feature provider the registered carriers offer."""
        return [p for c in self.classes() for p in c.feature_providers]

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
        """Which modules a search fans out to; unknown names are dropped."""
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
        """``min(15, each carrier's maximal prefix length)`` for the search info."""
        lengths = [15]
        for name in names:
            carrier = self.get(name, ctx)
            if carrier is not None:
                lengths.append(carrier.max_prefix_length)
        return min(lengths)


def default_registry(settings: Settings | None = None) -> CarrierRegistry:
    """Every module this build ships, and the plugins ``settings`` name (the environment's
    settings by default: ``KNM_CARRIER_PLUGINS``)."""
    registry = CarrierRegistry()
    for module_name in (settings or get_settings()).carrier_plugins:
        registry.load_plugin(module_name)
    return registry
