"""knm's own feature providers: the features knm keeps itself, for every carrier.

The local providers keep a feature of ``pvt_features`` (``pn.features``) in line with what the
public fields ask for, with no upstream call:

* ``knm_failover``, ``knm_prepend``, ``knm_ringback``, ``knm_force_outbound``, ``knm_sms``,
  ``knm_mms``: active only while the number is ``in_service`` (any other state removes them);
  an empty public value removes the feature, an unchanged one changes nothing, a new one is copied.
* ``knm_cnam_notifier`` (KAZOO's default CNAM provider): ``inbound_cnam`` / ``outbound_cnam`` in
  ``reserved``, ``in_service`` and ``port_in``; a new outbound name is logged as a CNAM request
  (KAZOO publishes a ``cnam_request`` notification); the legacy ``cnam`` key always goes.
* ``knm_rename_carrier`` (feature ``carrier_name``, admins only): moves the number to another
  carrier module knm knows.

The upstream providers (E911 and CNAM at Telnyx or Vitelity) live with their carriers, which
name them (``Carrier.feature_providers``); ``knm.services.feature_providers`` puts both together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from carriers.features import FeatureContext, FeatureProvider
from carriers.registry import CarrierRegistry, default_registry
from knm.domain import errors
from knm.domain.carrier_modules import CarrierModules
from knm.domain.number import NumberState, PhoneNumber

log = logging.getLogger(__name__)

S = NumberState

#: States in which the CNAM providers act (other states leave the features alone).
CNAM_STATES: Final[frozenset[NumberState]] = frozenset({S.RESERVED, S.IN_SERVICE, S.PORT_IN})


def is_empty(value: Any) -> bool:
    """KAZOO's ``get_ne_value``: absent, null, ``""``, ``[]`` and ``{}`` count as unset."""
    return value is None or value == "" or value == [] or value == {}


def is_true(value: Any) -> bool:
    """KAZOO's ``kz_term:is_true``: ``true`` or the string ``"true"``."""
    return value is True or value == "true"


def as_boolean(value: Any) -> bool | None:
    """A boolean, or the string ``"true"``/``"false"`` coerced; anything else is None."""
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    return None


# ================================================================================ in service
class InServiceProvider(FeatureProvider):
    """A feature active only ``in_service``: the public value copied into ``pvt_features``.

    ``wanted`` gives the value the feature should have (None: remove it). In any other state
    the feature is removed, as KAZOO's ``save`` calls ``delete`` there.
    """

    key: ClassVar[str]

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if pn.state != S.IN_SERVICE:
            self.delete(pn, fctx)
            return
        wanted = self.wanted(pn)
        if wanted is None:
            pn.remove_feature(self.key)
        elif pn.features.get(self.key) != wanted:
            self.change(pn, wanted, fctx)

    def change(self, pn: PhoneNumber, wanted: Any, fctx: FeatureContext) -> None:
        """The public value differs from the active one (KAZOO compares before anything)."""
        self.activate(pn, wanted, fctx)

    def wanted(self, pn: PhoneNumber) -> Any:
        value = pn.public.get(self.key)
        return None if is_empty(value) else value

    def activate(self, pn: PhoneNumber, value: Any, fctx: FeatureContext) -> None:
        pn.set_feature(self.key, value)


class FailoverProvider(InServiceProvider):
    """``knm_failover``: public ``failover {e164, sip}`` as is."""

    name = "knm_failover"
    features = ("failover",)
    key = "failover"


class RingbackProvider(InServiceProvider):
    """``knm_ringback``: public ``ringback {early, transfer}`` (KAZOO has no module)."""

    name = "knm_ringback"
    features = ("ringback",)
    key = "ringback"

    def wanted(self, pn: PhoneNumber) -> Any:
        value = pn.public.get(self.key)
        if not isinstance(value, Mapping):
            return None
        kept = {k: value[k] for k in ("early", "transfer") if not is_empty(value.get(k))}
        return kept or None


class _EnabledProvider(InServiceProvider):
    """A feature with an ``enabled`` flag: a changed value that is not enabled removes it."""

    def change(self, pn: PhoneNumber, wanted: Any, fctx: FeatureContext) -> None:
        if isinstance(wanted, Mapping) and is_true(wanted.get("enabled")):
            self.activate(pn, wanted, fctx)
        else:
            self.deactivate(pn, fctx)

    def deactivate(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        pn.remove_feature(self.key)


class PrependProvider(_EnabledProvider):
    """``knm_prepend``: public ``prepend {enabled, name, number}``; ``enabled: false`` removes."""

    name = "knm_prepend"
    features = ("prepend",)
    key = "prepend"


class ForceOutboundProvider(InServiceProvider):
    """``knm_force_outbound``: a boolean, or ``"true"``/``"false"``; anything else is unset."""

    name = "knm_force_outbound"
    features = ("force_outbound",)
    key = "force_outbound"

    def wanted(self, pn: PhoneNumber) -> Any:
        return as_boolean(pn.public.get(self.key))


class ImProvider(_EnabledProvider):
    """``knm_sms`` / ``knm_mms`` (KAZOO's ``knm_im``): public ``{enabled, ...}``.

    Offered only for an assigned ``in_service`` number whose carrier enables the IM type
    (KAZOO: carrier config ``features.<type>.enabled`` and the account's services). knm has no
    such carrier configuration yet, so ``im_enabled`` says no and the feature is never offered;
    a subclass (or a future carrier setting) answers it.
    """

    def available(self, pn: PhoneNumber, fctx: FeatureContext) -> bool:
        return pn.state == S.IN_SERVICE and pn.assigned_to is not None and self.im_enabled(pn)

    def im_enabled(self, pn: PhoneNumber) -> bool:
        return False

    def activate(self, pn: PhoneNumber, value: Any, fctx: FeatureContext) -> None:
        pn.set_feature(self.key, value)
        log.info("%s activated on %s", self.key, pn.number)

    def deactivate(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if self.key in pn.features:
            log.info("%s deactivated on %s", self.key, pn.number)
        pn.remove_feature(self.key)


class SmsProvider(ImProvider):
    name = "knm_sms"
    features = ("sms",)
    key = "sms"


class MmsProvider(ImProvider):
    name = "knm_mms"
    features = ("mms",)
    key = "mms"


# ================================================================================ CNAM
class CnamNotifierProvider(FeatureProvider):
    """``knm_cnam_notifier``: CNAM kept in knm only; a new outbound name is logged as a request.

    KAZOO publishes a ``cnam_request`` notification for someone to register the name by hand;
    knm logs it (not in a dry run). No upstream call, so nothing to undo on delete.
    """

    name = "knm_cnam_notifier"
    features = ("inbound_cnam", "outbound_cnam", "cnam")

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if pn.state not in CNAM_STATES:
            return
        cnam = pn.public.get("cnam")
        cnam = cnam if isinstance(cnam, Mapping) else {}
        display_name = cnam.get("display_name")
        current = (pn.features.get("outbound_cnam") or {}).get("display_name")
        if is_empty(display_name):
            pn.remove_feature("outbound_cnam")
        elif display_name != current:
            pn.set_feature("outbound_cnam", {"display_name": display_name})
            if not fctx.dry_run:
                log.info(
                    "CNAM request: %s wants outbound name %r (account %s, state %s)",
                    pn.number,
                    display_name,
                    pn.assigned_to,
                    pn.state.value if pn.state else None,
                )
        if is_true(cnam.get("inbound_lookup")):
            pn.set_feature("inbound_cnam", {"inbound_lookup": True})
        else:
            pn.remove_feature("inbound_cnam")
        pn.remove_feature("cnam")  # the legacy aggregate key


# ================================================================================ carrier
class RenameCarrierProvider(FeatureProvider):
    """``knm_rename_carrier``: public ``carrier_name: X`` moves the number to module ``knm_X``.

    Admins only (403 otherwise). ``X`` may carry a ``knm_``/``wnm_`` prefix; ``bandwidth`` lands
    on ``knm_bandwidth2`` (the module migration). A module knm's carrier registry does not have
    fails 400 ``invalid`` with cause ``'X' is not known by the system`` -- KAZOO accepted any
    loadable ``knm_*`` Erlang module (even ``knm_gen_carrier``); knm accepts carriers only.
    The public ``carrier_name`` is consumed. ``delete`` does nothing.
    """

    name = "knm_rename_carrier"
    features = ("carrier_name",)

    #: The carrier modules a number may be renamed to (the registry sets it).
    carriers: CarrierRegistry | None = None

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        value = pn.public.get("carrier_name")
        if is_empty(value):
            return
        if not fctx.is_admin:
            raise errors.unauthorized(
                "only system or a superduper admin may rename the carrier (carrier_name)"
            )
        known = self.carriers if self.carriers is not None else default_registry()
        modules = known.modules(self.ctx.settings.available_module_name)
        module = carrier_module_for(value, modules) if isinstance(value, str) else None
        if module is None or module not in known:
            raise errors.invalid(f"'{value}' is not known by the system")
        pn.set_carrier_module(module)
        pn.reset_public({k: v for k, v in pn.public.items() if k != "carrier_name"})

    def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        return None


def carrier_module_for(value: str, modules: CarrierModules) -> str:
    """``telnyx``, ``knm_telnyx``, ``wnm_telnyx`` -> ``knm_telnyx``; a retired module -> the one
    that replaces it (``bandwidth`` -> ``knm_bandwidth2``)."""
    name = value
    while name.startswith(("knm_", "wnm_")):
        name = name[4:]
    return modules.migrate("knm_" + name)


# ================================================================================ all of them
LOCAL_PROVIDERS: Final[tuple[type[FeatureProvider], ...]] = (
    FailoverProvider,
    ForceOutboundProvider,
    PrependProvider,
    RingbackProvider,
    SmsProvider,
    MmsProvider,
    RenameCarrierProvider,
    CnamNotifierProvider,
)
