"""The feature provider modules by name: knm's own and those the registered carriers offer.

knm's own providers are in ``carriers.local_features``; every carrier names the providers it
offers (``Carrier.feature_providers``: E911 and CNAM at Telnyx or Vitelity). A name no provider
answers to is a missing module: KAZOO skips it (``knm.services.features`` does the same).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from carriers.base import CarrierContext
from carriers.features import FeatureProvider
from carriers.local_features import LOCAL_PROVIDERS, RenameCarrierProvider
from carriers.registry import CarrierRegistry, default_registry


class ProviderRegistry:
    """Feature provider classes by module name: knm's own, then the carriers' upstream ones.

    ``register`` adds (or replaces) a class.
    """

    def __init__(
        self,
        classes: Iterable[type[FeatureProvider]] = LOCAL_PROVIDERS,
        *,
        carriers: CarrierRegistry | None = None,
    ) -> None:
        self.carriers = carriers if carriers is not None else default_registry()
        self._classes: dict[str, type[FeatureProvider]] = {
            c.name: c for c in (*self.carriers.feature_providers(), *classes)
        }

    def register(self, cls: type[FeatureProvider]) -> None:
        """Add ``cls`` under its ``name`` (it wins over a class of the same name)."""
        self._classes[cls.name] = cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str | None, ctx: CarrierContext) -> FeatureProvider | None:
        """An instance of the provider module ``name``; None when there is no such module."""
        cls = self._classes.get(name) if name else None
        if cls is None:
            return None
        instance = cls(ctx)
        if isinstance(instance, RenameCarrierProvider):
            instance.carriers = self.carriers
        return instance

    def carrier_provider(self, module: str, feature: str) -> str | None:
        """The provider of ``feature`` the carrier ``module`` offers (its own E911), if any."""
        cls = self.carriers.carrier_class(module)
        return cls.feature_provider(feature) if cls is not None else None


@lru_cache(maxsize=1)
def default_providers() -> ProviderRegistry:
    """The registry with every provider this build ships (carrier modules: the default ones)."""
    return ProviderRegistry()


def provider(name: str | None, ctx: CarrierContext) -> FeatureProvider | None:
    """The provider module ``name`` from the default registry; None when knm has none."""
    return default_providers().get(name, ctx)
