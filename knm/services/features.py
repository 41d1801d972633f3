"""Number features: which a number may use and applying them on save.

A feature is *requested* by a public field (``e911``, ``cnam``, ``prepend`` ...) and *active*
when it is in ``pvt_features``. Each feature belongs to a provider module: knm's own in
``carriers.local_features``, the upstream E911/CNAM ones named by their carriers. On every save
of a changed number (``apply_on_save``) the requested features are checked against the
*available* ones (number, reseller and system allow/deny lists, the local-number rule, failover
outside trunkstore, admin-only ``carrier_name``); a requested feature that is not available
fails the number 403 ``forbidden`` and nothing is saved; otherwise each provider brings its
feature in line with the public fields. Release and hard delete call ``deprovision`` *before*
the features are wiped, so upstream E911/CNAM are removed (KAZOO wiped them first and left them
upstream).

Where knm decides differently from KAZOO:

* The CNAM provider is the reseller's ``number_manager.cnam_provider``, else the system's
  (``system_config`` document, ``KNM_CNAM_PROVIDER``), default ``knm_cnam_notifier``. The E911
  provider is the reseller's ``e911_provider``, else the system's (``KNM_E911_PROVIDER``), else
  the one the number's carrier offers (``knm_telnyx`` -> ``knm_telnyx_e911``, ``knm_vitelity``
  -> ``knm_vitelity_e911``). Otherwise there is no E911 provider (KAZOO's default ``knm_dash_e911``
  is not implemented): the public ``e911`` is kept, checked against the permissions, but no
  feature is activated, as KAZOO skips a missing module.
* A system ``features.deny`` (``system_config`` document or ``KNM_FEATURES_DENY``) is denied on
  every number, whatever its own lists say (KAZOO reads no system deny list).
* ``locality`` (a carrier-set marker, like ``local``) is never a request (KAZOO would refuse to
  save a number carrying it).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from carriers.base import CarrierContext
from carriers.features import FeatureContext, FeatureProvider
from knm.domain import errors
from knm.domain.accounts import SYSTEM, Account, AccountDirectory
from knm.domain.number import PhoneNumber
from knm.services.feature_providers import ProviderRegistry, default_providers
from knm.store.system_config import SystemConfig

# ------------------------------------------------------------------------------ the catalogue
#: Every feature a permission list may name, sorted.
ALL_FEATURES: Final[tuple[str, ...]] = (
    "carrier_name",
    "cnam",
    "e911",
    "failover",
    "force_outbound",
    "inbound_cnam",
    "mms",
    "outbound_cnam",
    "port",
    "prepend",
    "ringback",
    "sms",
)
#: Features that cost money upstream: denied on unassigned and (by default) local numbers.
EXTERNAL_FEATURES: Final[tuple[str, ...]] = (
    "cnam",
    "e911",
    "inbound_cnam",
    "mms",
    "outbound_cnam",
    "port",
    "sms",
)
#: Features only an admin (``system`` or a superduper admin) may use.
ADMIN_ONLY_FEATURES: Final[tuple[str, ...]] = ("carrier_name",)
#: Public keys that request a feature.
PUBLIC_REQUEST_KEYS: Final[tuple[str, ...]] = (
    "cnam",
    "e911",
    "failover",
    "force_outbound",
    "local",
    "port",
    "prepend",
    "carrier_name",
    "ringback",
    "sms",
    "mms",
)
#: Deprecated ``pvt_features`` keys, dropped on every save.
DEPRECATED_FEATURES: Final[tuple[str, ...]] = ("im",)
#: ``pvt_features`` keys knm sets itself: never requests.
INTERNAL_FEATURES: Final[frozenset[str]] = frozenset({"local", "locality"})

#: Legacy provider names in permission lists and their feature.
LEGACY_NAMES: Final[Mapping[str, str]] = {
    "cnam_notifier": "cnam",
    "telnyx_cnam": "cnam",
    "vitelity_cnam": "cnam",
    "dash_e911": "e911",
    "telnyx_e911": "e911",
    "vitelity_e911": "e911",
    "port_notifier": "port",
}

#: Provider module of each feature with a fixed one (cnam/e911 depend on the reseller).
FEATURE_MODULES: Final[Mapping[str, str]] = {
    "carrier_name": "knm_rename_carrier",
    "failover": "knm_failover",
    "force_outbound": "knm_force_outbound",
    "mms": "knm_mms",
    "port": "knm_port_notifier",
    "prepend": "knm_prepend",
    "ringback": "knm_ringback",
    "sms": "knm_sms",
}
CNAM_FEATURES: Final[frozenset[str]] = frozenset({"cnam", "inbound_cnam", "outbound_cnam"})
RENAME_MODULE: Final[str] = "knm_rename_carrier"
#: Modules whose refusal does not fail the save (KAZOO's IM exception): they are just not run.
IM_MODULES: Final[frozenset[str]] = frozenset({"knm_sms", "knm_mms"})
#: Features whose module answers ``available`` (they are dropped when it says no or is missing).
WITH_AVAILABLE: Final[tuple[str, ...]] = ("sms", "mms")

#: What ``remove_denied_features`` strips: the private key -> the public paths behind it.
_E911_PUBLIC: Final = (("e911",), ("vitelity_e911",), ("dash_e911",), ("telnyx_e911",))
_CNAM_PUBLIC: Final = (("cnam", "inbound_lookup"), ("cnam", "display_name"))
PRIVATE_TO_PUBLIC: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    "e911": _E911_PUBLIC,
    "vitelity_e911": _E911_PUBLIC,
    "dash_e911": _E911_PUBLIC,
    "telnyx_e911": _E911_PUBLIC,
    "cnam": _CNAM_PUBLIC,
    "inbound_cnam": _CNAM_PUBLIC,
    "outbound_cnam": _CNAM_PUBLIC,
    "prepend": (("prepend", "enabled"), ("prepend", "name"), ("prepend", "number")),
    "failover": (("failover", "e164"), ("failover", "sip")),
    "ringback": (("ringback", "early"), ("ringback", "transfer")),
    "force_outbound": (("force_outbound",),),
}


def canonical_feature(name: str) -> str:
    """A permission-list name as a feature: prefixes stripped, legacy provider names mapped."""
    while name.startswith(("wnm_", "knm_")):
        name = name[4:]
    return LEGACY_NAMES.get(name, name)


def canonicalize(names: Iterable[str]) -> list[str]:
    """Canonical names, de-duplicated and sorted."""
    return sorted({canonical_feature(n) for n in names if isinstance(n, str) and n})


# ------------------------------------------------------------------------------ the inputs
@dataclass
class FeatureEnv:
    """What the feature rules read besides the number, loaded once per operation run.

    ``accounts`` holds the numbers' owners and their resellers; ``system`` the system config;
    ``providers`` the provider modules (instances are made once per run and reused).
    """

    system: SystemConfig
    carrier_ctx: CarrierContext
    accounts: AccountDirectory = field(default_factory=AccountDirectory)
    auth_by: str | None = SYSTEM
    providers: ProviderRegistry = field(default_factory=default_providers)
    dry_run: bool = False
    request_id: str | None = None
    _instances: dict[str, FeatureProvider | None] = field(default_factory=dict, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.accounts.is_admin(self.auth_by)

    def reseller(self, account_id: str | None) -> Account | None:
        """The reseller of ``account_id`` (None when the account or its reseller is unknown)."""
        return self.accounts.get(self.accounts.reseller_of(account_id))

    def provider(self, module: str) -> FeatureProvider | None:
        """The provider module ``module`` (None: no such module, KAZOO skips it)."""
        if module not in self._instances:
            self._instances[module] = self.providers.get(module, self.carrier_ctx)
        return self._instances[module]

    def context(self, pn: PhoneNumber) -> FeatureContext:
        """What a provider gets along with ``pn``."""
        owner = self.accounts.get(pn.assigned_to)
        return FeatureContext(
            dry_run=self.dry_run,
            auth_by=self.auth_by,
            is_admin=self.is_admin,
            account_name=owner.name if owner is not None and owner.name else None,
            request_id=self.request_id,
        )

    # -------------------------------------------------------------------------- modules
    def cnam_provider(self, pn: PhoneNumber) -> str:
        reseller = self.reseller(pn.assigned_to)
        if reseller is not None and reseller.number_manager.cnam_provider:
            return reseller.number_manager.cnam_provider
        return self.system.cnam_provider

    def e911_provider(self, pn: PhoneNumber) -> str | None:
        reseller = self.reseller(pn.assigned_to)
        if reseller is not None and reseller.number_manager.e911_provider:
            return reseller.number_manager.e911_provider
        if self.system.e911_provider:
            return self.system.e911_provider
        # the one the number's carrier offers, when neither the reseller nor the system names one
        return self.providers.carrier_provider(pn.carrier_module, "e911")


def provider_module(feature: str, pn: PhoneNumber, env: FeatureEnv) -> str:
    """The provider module of ``feature`` for ``pn``; unknown names map to themselves.

    ``e911`` without a provider maps to ``e911``: no module has that name, so it is skipped.
    """
    if feature in CNAM_FEATURES:
        return env.cnam_provider(pn)
    if feature == "e911":
        return env.e911_provider(pn) or "e911"
    return FEATURE_MODULES.get(feature, feature)


# ------------------------------------------------------------------------------ availability
def allowed_features(pn: PhoneNumber, env: FeatureEnv) -> list[str]:
    """The number's allow list, else its reseller's, else the system's (default: every one)."""
    return canonicalize(_allow_list(pn, env)[0])


def _allow_list(pn: PhoneNumber, env: FeatureEnv) -> tuple[Iterable[str], str]:
    """The allow list that applies and which list it is (for a refusal's cause)."""
    if pn.features_allowed:
        return pn.features_allowed, "the number's pvt_features_allowed"
    reseller = env.reseller(pn.assigned_to) if pn.assigned_to else None
    if reseller is not None and reseller.number_manager.features_allow is not None:
        return reseller.number_manager.features_allow, f"reseller '{reseller.id}' features.allow"
    system = env.system.features_allow
    if system is None:
        return ALL_FEATURES, "the features knm knows"
    return system, "the system's features allow list"


def denied_features(pn: PhoneNumber, env: FeatureEnv) -> list[str]:
    """The deny lists (reseller, then account), plus the system deny list.

    The number's own deny list, else the reseller part (unassigned: every external feature;
    the reseller's deny list when set; else the local rule) and ``failover`` unless used by
    trunkstore; then ``carrier_name`` unless an admin asks, and the system's deny list.
    """
    return canonicalize(name for name, _rule in _denials(pn, env))


def _denials(pn: PhoneNumber, env: FeatureEnv) -> list[tuple[str, str]]:
    """Each denied feature (as its list names it) with the rule that denies it."""
    denied: list[tuple[str, str]]
    if pn.features_denied:
        denied = [(f, "the number's pvt_features_denied") for f in pn.features_denied]
    else:
        denied = _reseller_denied(pn, env)
        if pn.used_by != "trunkstore":
            denied.append(("failover", "the trunkstore rule (failover needs used_by trunkstore)"))
    if not env.is_admin:
        rule = "the admin rule (only system or a superduper admin may use it)"
        denied.extend((f, rule) for f in ADMIN_ONLY_FEATURES)
    denied.extend((f, "the system's features deny list") for f in env.system.features_deny or ())
    return denied


def _reseller_denied(pn: PhoneNumber, env: FeatureEnv) -> list[tuple[str, str]]:
    if pn.assigned_to is None:
        rule = "the unassigned rule (unassigned numbers get no paid feature)"
        return [(f, rule) for f in EXTERNAL_FEATURES]
    reseller = env.reseller(pn.assigned_to)
    if reseller is not None and reseller.number_manager.features_deny is not None:
        # a reseller's deny list replaces the local rule
        rule = f"reseller '{reseller.id}' features.deny"
        return [(f, rule) for f in reseller.number_manager.features_deny]
    if pn.is_local and not env.system.local_feature_override:
        rule = "the local-number rule (no paid feature unless KNM_LOCAL_FEATURE_OVERRIDE)"
        return [(f, rule) for f in EXTERNAL_FEATURES]
    return []


def unavailable_cause(features: Iterable[str], pn: PhoneNumber, env: FeatureEnv) -> str:
    """Why each of ``features`` is not available on ``pn``: the list or rule that says no."""
    denials: dict[str, str] = {}
    for name, rule in _denials(pn, env):
        denials.setdefault(canonical_feature(name), rule)
    allow, allow_source = _allow_list(pn, env)
    allowed = set(canonicalize(allow))
    reasons = []
    for feature in sorted(set(features)):
        if feature not in allowed:
            reason = "not a known feature" if allow is ALL_FEATURES else f"not in {allow_source}"
        elif feature in denials:
            reason = f"denied by {denials[feature]}"
        else:
            reason = "its provider does not offer it"
        reasons.append(f"feature '{feature}' is not allowed on {pn.number}: {reason}")
    return "; ".join(reasons)


def available_features(pn: PhoneNumber, env: FeatureEnv) -> list[str]:
    """Allowed minus denied; sms/mms only when their provider offers them."""
    denied = set(denied_features(pn, env))
    available = [f for f in allowed_features(pn, env) if f not in denied]
    out: list[str] = []
    for feature in available:
        if feature in WITH_AVAILABLE:
            provider = env.provider(provider_module(feature, pn, env))
            if provider is None or not provider.available(pn, env.context(pn)):
                continue
        out.append(feature)
    return out


# ------------------------------------------------------------------------------ save pipeline
def requested_features(pn: PhoneNumber) -> list[str]:
    """Features the public fields ask for plus those active, minus knm's own markers."""
    asked = {k for k in PUBLIC_REQUEST_KEYS if pn.public.get(k) is not None}
    return sorted((asked | set(pn.features)) - INTERNAL_FEATURES)


def requested_modules(pn: PhoneNumber, env: FeatureEnv) -> list[str]:
    return sorted({provider_module(f, pn, env) for f in requested_features(pn)})


def allowed_modules(pn: PhoneNumber, env: FeatureEnv) -> list[str]:
    return sorted({provider_module(f, pn, env) for f in available_features(pn, env)})


def _split_requests(pn: PhoneNumber, env: FeatureEnv) -> tuple[list[str], list[str]]:
    """Requested modules: (allowed, denied)."""
    allowed = set(allowed_modules(pn, env))
    requested = requested_modules(pn, env)
    return [m for m in requested if m in allowed], [m for m in requested if m not in allowed]


def apply_on_save(pn: PhoneNumber, env: FeatureEnv) -> None:
    """Bring ``pn``'s features in line with its public fields, or raise.

    Drops deprecated keys; runs an allowed carrier rename first, then strips what the new
    carrier denies; a requested feature that is not available (sms/mms aside) raises 403
    ``forbidden``; otherwise every allowed requested provider saves, in module-name order,
    skipping modules that do not exist. Provider errors propagate (the number fails).
    """
    for key in DEPRECATED_FEATURES:
        pn.remove_feature(key)
    allowed, denied = _split_requests(pn, env)
    if RENAME_MODULE in allowed:
        _run(pn, env, [RENAME_MODULE], save=True)
        remove_denied_features(pn, env)
        allowed, denied = _split_requests(pn, env)
    forbidden = [m for m in denied if m not in IM_MODULES]
    if forbidden:
        available = set(available_features(pn, env))
        refused = [
            f
            for f in requested_features(pn)
            if f not in available and provider_module(f, pn, env) in forbidden
        ]
        raise errors.unauthorized(unavailable_cause(refused, pn, env))
    _run(pn, env, allowed, save=True)


def deprovision(pn: PhoneNumber, env: FeatureEnv) -> None:
    """Run every requested provider's ``delete`` (release and hard delete, before the wipe).

    Upstream features (E911, CNAM) are removed at the provider; an error propagates so the
    number fails and keeps its features.
    """
    _run(pn, env, requested_modules(pn, env), save=False)


def _run(pn: PhoneNumber, env: FeatureEnv, modules: Iterable[str], *, save: bool) -> None:
    for module in sorted(modules):
        provider = env.provider(module)
        if provider is None:
            continue  # KAZOO: "provider is unknown, skipping"
        if save:
            provider.save(pn, env.context(pn))
        else:
            provider.delete(pn, env.context(pn))


def remove_denied_features(pn: PhoneNumber, env: FeatureEnv) -> None:
    """Strip every denied feature from ``pvt_features`` and the public fields behind it.

    KAZOO's ``knm_phone_number:remove_denied_features``: used after a carrier rename and by the
    "fix number" maintenance (with ``used_by``). Public objects left empty are removed.
    """
    denied = denied_features(pn, env)
    private = {f for f in denied if f in PRIVATE_TO_PUBLIC}
    paths = {path for f in private for path in PRIVATE_TO_PUBLIC[f]}
    if private & set(pn.features):
        pn.set_features({k: v for k, v in pn.features.items() if k not in private})
    public = _prune(pn.public, paths)
    if public != pn.public:
        pn.reset_public(public)


def _prune(doc: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    """``doc`` without ``paths``; objects emptied by a removal go too (``kz_json:prune_keys``)."""
    out = copy.deepcopy(dict(doc))
    for path in paths:
        _prune_path(out, path)
    return out


def _prune_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    head, rest = path[0], path[1:]
    if head not in obj:
        return
    if not rest:
        del obj[head]
        return
    child = obj[head]
    if isinstance(child, dict):
        _prune_path(child, rest)
        if not child:
            del obj[head]
