"""The feature-provider contract (KAZOO's ``knm_gen_provider``).

A provider owns one or more number features (``e911``; ``cnam`` with ``inbound_cnam`` and
``outbound_cnam``; ``prepend`` ...). On save it compares what the number's public fields ask
for with what is active in ``pvt_features`` (``pn.features``) and activates, changes or removes
it, calling the provider upstream where the feature lives there (Telnyx, Vitelity); on delete
(release, hard delete, a state that no longer carries the feature) it removes it, upstream
first. Saving an unchanged feature calls nothing; ``dry_run`` never calls upstream.

Providers are looked up by module name (``knm_telnyx_e911``); ``knm.features`` decides which
features a number may use and runs the providers in KAZOO's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from carriers.context import CarrierContext
from knm.domain.number import PhoneNumber


@dataclass(frozen=True)
class FeatureContext:
    """What a provider may need beyond the number."""

    dry_run: bool = False
    auth_by: str | None = None
    is_admin: bool = False
    #: The assigned account's name (E911 caller name defaults to it), if known.
    account_name: str | None = None
    #: The request (ledger key for upstream calls), if any.
    request_id: str | None = None


class FeatureProvider:
    """Base of every feature provider: the defaults do nothing."""

    #: Module name, e.g. ``knm_telnyx_e911`` (what reseller/system ``e911_provider`` names).
    name: ClassVar[str]
    #: The ``pvt_features`` keys this provider manages.
    features: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: CarrierContext) -> None:
        self.ctx = ctx

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        """Bring ``pn.features`` (and upstream) in line with ``pn.public``."""

    def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        """Remove the provider's features from ``pn`` (upstream first)."""
        for key in self.features:
            pn.remove_feature(key)

    def available(self, pn: PhoneNumber, fctx: FeatureContext) -> bool:
        """Whether the feature may be offered for ``pn`` (KAZOO's optional ``available/1``)."""
        return True
