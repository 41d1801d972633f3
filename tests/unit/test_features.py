"""Number features without a store: the catalogue, availability, the local
providers, the save pipeline and the system config's fallbacks.

Numbers are loaded from documents (so they start clean, as fetched ones do) and the feature
rules get a ``FeatureEnv`` built from KAZOO's fixture accounts; providers never touch the database.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest
from pymongo import MongoClient

from carriers.base import CarrierContext
from carriers.features import FeatureContext, FeatureProvider
from carriers.local_features import (
    CnamNotifierProvider,
    FailoverProvider,
    ForceOutboundProvider,
    ImProvider,
    PrependProvider,
    RenameCarrierProvider,
    RingbackProvider,
    carrier_module_for,
)
from config.settings import Settings
from knm.domain import errors
from knm.domain.accounts import SYSTEM, Account, AccountDirectory, NumberManagerConfig
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.services import features, maintenance
from knm.services.feature_providers import ProviderRegistry, provider
from knm.services.features import FeatureEnv
from knm.store.system_config import SystemConfig
from tests.fixtures_kazoo import CHILD, MASTER, MODULES, RESELLER, account_docs, number_doc

S = NumberState
NUM = "+15551233322"
#: A client that never connects: the providers under test do not use the database.
_CLIENT: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9", connect=False)
CTX = CarrierContext(_CLIENT["unused"], Settings())


def accounts(**number_manager: NumberManagerConfig) -> AccountDirectory:
    """The fixture accounts; ``number_manager`` replaces an account's config by account id."""
    out = []
    for account_id, doc in account_docs().items():
        account = Account.from_document(doc)
        if account_id in number_manager:
            account.number_manager = number_manager[account_id]
        out.append(account)
    return AccountDirectory(out)


def env(
    *,
    auth_by: str | None = SYSTEM,
    directory: AccountDirectory | None = None,
    system: SystemConfig | None = None,
    providers: ProviderRegistry | None = None,
    dry_run: bool = False,
) -> FeatureEnv:
    return FeatureEnv(
        system=system or SystemConfig(),
        carrier_ctx=CTX,
        accounts=directory if directory is not None else accounts(),
        auth_by=auth_by,
        providers=providers or ProviderRegistry(),
        dry_run=dry_run,
    )


def pn(
    state: str = "in_service",
    module: str = "knm_telnyx",
    *,
    assigned_to: str | None = RESELLER,
    used_by: str | None = None,
    features: dict[str, Any] | None = None,
    public: dict[str, Any] | None = None,
    allowed: list[str] | None = None,
    denied: list[str] | None = None,
) -> PhoneNumber:
    """A clean record, as fetched from the store."""
    extra: dict[str, Any] = {}
    if allowed:
        extra["pvt_features_allowed"] = allowed
    if denied:
        extra["pvt_features_denied"] = denied
    doc = number_doc(
        NUM,
        state,
        module,
        assigned_to=assigned_to,
        used_by=used_by,
        features=features,
        public=public,
        **extra,
    )
    record = PhoneNumber.from_document(doc, MODULES)
    assert not record.dirty
    return record


def fctx(*, admin: bool = True, dry_run: bool = False) -> FeatureContext:
    return FeatureContext(dry_run=dry_run, auth_by=SYSTEM if admin else RESELLER, is_admin=admin)


def forbidden(cause: str) -> KnmError:
    return errors.unauthorized(cause)


# ================================================================================ catalogue
def test_the_catalogue_lists_every_feature_once() -> None:
    assert tuple(sorted(set(features.ALL_FEATURES))) == features.ALL_FEATURES
    assert features.ALL_FEATURES == maintenance.ALL_FEATURES
    assert set(features.EXTERNAL_FEATURES) <= set(features.ALL_FEATURES)


def test_legacy_names_are_canonicalized_deduplicated_and_sorted() -> None:
    names = [
        "wnm_cnam_notifier",
        "knm_telnyx_e911",
        "port_notifier",
        "knm_wnm_prepend",
        "vitelity_cnam",
        "dash_e911",
        "e911",
        "telnyx_cnam",
        "vitelity_e911",
    ]
    assert features.canonicalize(names) == ["cnam", "e911", "port", "prepend"]


# ================================================================================ availability
def test_local_number_gets_no_external_feature_no_failover_and_no_carrier_name() -> None:
    local = pn(module="knm_local", used_by="callflow")
    assert features.available_features(local, env(auth_by=RESELLER)) == [
        "force_outbound",
        "prepend",
        "ringback",
    ]
    assert features.available_features(local, env(auth_by=SYSTEM)) == [
        "carrier_name",
        "force_outbound",
        "prepend",
        "ringback",
    ]
    assert features.available_features(local, env(auth_by=MASTER))[0] == "carrier_name"


def test_mdn_numbers_are_local_and_inventory_ones_are_not() -> None:
    assert "e911" not in features.available_features(pn(module="knm_mdn"), env())
    assert "e911" in features.available_features(pn(module="knm_inventory"), env())


def test_local_feature_override_offers_external_features_to_local_numbers() -> None:
    local = pn(module="knm_local")
    got = features.available_features(local, env(system=SystemConfig(local_feature_override=True)))
    assert {"cnam", "e911", "inbound_cnam", "outbound_cnam", "port"} <= set(got)
    assert not {"sms", "mms", "failover"} & set(got)  # no IM carrier config; not trunkstore


def test_unassigned_numbers_get_no_external_feature() -> None:
    got = features.available_features(pn("available", assigned_to=None), env())
    assert not set(features.EXTERNAL_FEATURES) & set(got)
    assert "prepend" in got


def test_failover_needs_trunkstore() -> None:
    assert "failover" not in features.available_features(pn(used_by="callflow"), env())
    assert "failover" in features.available_features(pn(used_by="trunkstore"), env())


def test_the_number_lists_replace_the_reseller_and_system_ones() -> None:
    directory = accounts(
        **{RESELLER: NumberManagerConfig(features_allow=["cnam"], features_deny=["prepend"])}
    )
    record = pn(allowed=["knm_telnyx_e911", "wnm_prepend", "failover"], denied=["port"])
    # its own allow list; its own deny list replaces the reseller part and the failover rule
    assert features.available_features(record, env(directory=directory)) == [
        "e911",
        "failover",
        "prepend",
    ]
    # the admin-only part still applies
    allowed_all = pn(allowed=["carrier_name", "prepend"], denied=["port"])
    assert features.available_features(allowed_all, env(auth_by=RESELLER)) == ["prepend"]


def test_reseller_lists_apply_to_their_accounts_numbers() -> None:
    directory = accounts(
        **{RESELLER: NumberManagerConfig(features_allow=["prepend", "cnam", "e911"])}
    )
    child = pn(assigned_to=CHILD)
    assert features.available_features(child, env(directory=directory)) == [
        "cnam",
        "e911",
        "prepend",
    ]
    # another reseller's settings do not apply
    assert "ringback" in features.available_features(
        pn(assigned_to=MASTER), env(directory=directory)
    )


def test_a_reseller_deny_list_replaces_the_local_rule() -> None:
    """A KAZOO quirk kept: once a reseller sets features.deny, its local numbers get e911."""
    directory = accounts(**{RESELLER: NumberManagerConfig(features_deny=["prepend"])})
    got = features.available_features(pn(module="knm_local"), env(directory=directory))
    assert "e911" in got
    assert "prepend" not in got
    assert "failover" not in got  # the used_by part still applies


def test_system_allow_and_deny_lists() -> None:
    only_prepend = SystemConfig(features_allow=("prepend", "knm_cnam_notifier"))
    assert features.available_features(pn(), env(system=only_prepend)) == ["cnam", "prepend"]
    no_e911 = SystemConfig(features_deny=("e911", "prepend"))
    got = features.available_features(pn(), env(system=no_e911))
    assert "cnam" in got
    assert not {"e911", "prepend"} & set(got)
    # the system deny list also applies over a number's own lists
    own = pn(allowed=["e911", "cnam"], denied=["port"])
    assert features.available_features(own, env(system=no_e911)) == ["cnam"]


def test_im_features_need_their_provider_to_offer_them() -> None:
    class OfferedSms(ImProvider):
        name = "knm_sms"
        features = ("sms",)
        key = "sms"

        def im_enabled(self, pn: PhoneNumber) -> bool:
            return True

    registry = ProviderRegistry()
    assert "sms" not in features.available_features(pn(), env(providers=registry))
    registry.register(OfferedSms)
    assert "sms" in features.available_features(pn(), env(providers=registry))
    assert "sms" not in features.available_features(pn("reserved"), env(providers=registry))
    assert "mms" not in features.available_features(pn(), env(providers=registry))


# ================================================================================ modules
def test_provider_modules() -> None:
    e = env()
    telnyx = pn(module="knm_telnyx")
    assert features.provider_module("e911", telnyx, e) == "knm_telnyx_e911"
    assert features.provider_module("e911", pn(module="knm_vitelity"), e) == "knm_vitelity_e911"
    assert features.provider_module("e911", pn(module="knm_bandwidth2"), e) == "e911"
    for cnam in ("cnam", "inbound_cnam", "outbound_cnam"):
        assert features.provider_module(cnam, telnyx, e) == "knm_cnam_notifier"
    assert features.provider_module("carrier_name", telnyx, e) == "knm_rename_carrier"
    assert features.provider_module("whatever", telnyx, e) == "whatever"
    system = SystemConfig(cnam_provider="knm_telnyx_cnam", e911_provider="knm_vitelity_e911")
    assert features.provider_module("e911", telnyx, env(system=system)) == "knm_vitelity_e911"
    reseller = accounts(
        **{RESELLER: NumberManagerConfig(cnam_provider="knm_vitelity_cnam", e911_provider="x")}
    )
    child = pn(module="knm_telnyx", assigned_to=CHILD)
    assert features.provider_module("cnam", child, env(directory=reseller, system=system)) == (
        "knm_vitelity_cnam"
    )
    assert features.provider_module("e911", child, env(directory=reseller)) == "x"


def test_requested_features_come_from_public_keys_and_active_features() -> None:
    record = pn(
        module="knm_local",
        features={"local": {}, "locality": {"city": "SF"}, "ringback": {"early": "x"}},
        public={"e911": {}, "carrier_name": "telnyx", "custom": 1, "used": None, "local": True},
    )
    assert features.requested_features(record) == ["carrier_name", "e911", "ringback"]


# ================================================================================ providers
@pytest.mark.parametrize(
    ("public", "expected"),
    [(True, True), ("true", True), (False, False), ("false", False), ("blabla", None), (1, None)],
)
def test_force_outbound_coercion(public: Any, expected: bool | None) -> None:
    record = pn(public={"force_outbound": public})
    ForceOutboundProvider(CTX).save(record, fctx())
    assert record.features.get("force_outbound") == expected
    assert ("force_outbound" in record.features) is (expected is not None)


def test_force_outbound_unchanged_is_not_a_change() -> None:
    record = pn(features={"force_outbound": False}, public={"force_outbound": "false"})
    ForceOutboundProvider(CTX).save(record, fctx())
    assert (record.features, record.dirty) == ({"force_outbound": False}, False)


@pytest.mark.parametrize("state", ["reserved", "port_in", "available"])
def test_in_service_features_leave_in_other_states(state: str) -> None:
    record = pn(
        state,
        features={"force_outbound": True, "prepend": {"enabled": True}, "failover": {"sip": "x"}},
        public={"force_outbound": True, "prepend": {"enabled": True}, "failover": {"sip": "x"}},
    )
    for cls in (ForceOutboundProvider, PrependProvider, FailoverProvider):
        cls(CTX).save(record, fctx())
    assert record.features == {}


def test_prepend() -> None:
    provider_ = PrependProvider(CTX)
    record = pn(public={"prepend": {"enabled": "true", "name": "Sales"}})
    provider_.save(record, fctx())
    assert record.features["prepend"] == {"enabled": "true", "name": "Sales"}
    disabled = pn(features={"prepend": {"enabled": True}}, public={"prepend": {"enabled": False}})
    provider_.save(disabled, fctx())
    assert "prepend" not in disabled.features
    # unchanged is compared first, as KAZOO does: a stored disabled prepend stays
    same = pn(features={"prepend": {"enabled": False}}, public={"prepend": {"enabled": False}})
    provider_.save(same, fctx())
    assert (same.features, same.dirty) == ({"prepend": {"enabled": False}}, False)
    emptied = pn(features={"prepend": {"enabled": True}}, public={"prepend": {}})
    provider_.save(emptied, fctx())
    assert emptied.features == {}


def test_failover_copies_the_public_object() -> None:
    record = pn(used_by="trunkstore", public={"failover": {"e164": "+14158867900", "x": 1}})
    FailoverProvider(CTX).save(record, fctx())
    assert record.features == {"failover": {"e164": "+14158867900", "x": 1}}
    record.reset_public({})
    FailoverProvider(CTX).save(record, fctx())
    assert record.features == {}


def test_ringback_copies_early_and_transfer() -> None:
    """KAZOO has no ringback module; knm's copies it like prepend."""
    public = {"ringback": {"early": "media-1", "transfer": "", "other": "x"}}
    record = pn(public=public)
    RingbackProvider(CTX).save(record, fctx())
    assert record.features == {"ringback": {"early": "media-1"}}
    blank = pn(features={"ringback": {"early": "m"}}, public={"ringback": {"transfer": ""}})
    RingbackProvider(CTX).save(blank, fctx())
    assert blank.features == {}


def test_cnam_notifier(caplog: pytest.LogCaptureFixture) -> None:
    notifier = CnamNotifierProvider(CTX)
    record = pn(
        "reserved",
        features={"cnam": {"display_name": "old"}},
        public={"cnam": {"display_name": "ACME", "inbound_lookup": True}},
    )
    with caplog.at_level(logging.INFO, logger="carriers.local_features"):
        notifier.save(record, fctx())
    assert record.features == {
        "outbound_cnam": {"display_name": "ACME"},
        "inbound_cnam": {"inbound_lookup": True},
    }
    assert "CNAM request" in caplog.text
    caplog.clear()
    # unchanged: no request; inbound off and name removed: both features go
    with caplog.at_level(logging.INFO, logger="carriers.local_features"):
        notifier.save(record, fctx())
    assert caplog.text == ""
    record.reset_public({"cnam": {"inbound_lookup": False}})
    notifier.save(record, fctx())
    assert record.features == {}
    # other states: untouched; delete removes all three keys
    parked = pn(
        "available",
        assigned_to=None,
        features={"outbound_cnam": {"display_name": "A"}, "cnam": {}, "inbound_cnam": {}},
    )
    notifier.save(parked, fctx())
    assert len(parked.features) == 3
    notifier.delete(parked, fctx())
    assert parked.features == {}


def test_cnam_notifier_logs_no_request_on_a_dry_run(caplog: pytest.LogCaptureFixture) -> None:
    record = pn(public={"cnam": {"display_name": "ACME"}})
    with caplog.at_level(logging.INFO, logger="carriers.local_features"):
        CnamNotifierProvider(CTX).save(record, fctx(dry_run=True))
    assert record.features == {"outbound_cnam": {"display_name": "ACME"}}
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("value", "module"),
    [
        ("telnyx", "knm_telnyx"),
        ("knm_telnyx", "knm_telnyx"),
        ("wnm_local", "knm_local"),
        ("bandwidth", "knm_bandwidth2"),
        ("knm_bandwidth", "knm_bandwidth2"),
        ("bandwidth2", "knm_bandwidth2"),
    ],
)
def test_carrier_module_names(value: str, module: str) -> None:
    assert carrier_module_for(value, MODULES) == module


def test_rename_carrier() -> None:
    rename = RenameCarrierProvider(CTX)
    record = pn(public={"carrier_name": "local", "custom": 1})
    rename.save(record, fctx())
    assert (record.carrier_module, record.features, record.public) == (
        "knm_local",
        {"local": {}},
        {"custom": 1},
    )
    record.reset_public({"carrier_name": "telnyx"})
    rename.save(record, fctx())
    assert (record.carrier_module, record.features, record.public) == ("knm_telnyx", {}, {})
    # nothing asked: nothing done
    untouched = pn(public={"carrier_name": ""})
    rename.save(untouched, fctx())
    assert not untouched.dirty


@pytest.mark.parametrize("value", ["blabla", "gen_carrier", "pacwest", 42])
def test_rename_to_a_carrier_knm_does_not_know_is_invalid(value: Any) -> None:
    """knm's carrier registry decides; KAZOO also accepted ``gen_carrier`` (any Erlang module)."""
    record = pn(public={"carrier_name": value})
    with pytest.raises(KnmError) as raised:
        RenameCarrierProvider(CTX).save(record, fctx())
    assert raised.value == errors.invalid(f"'{value}' is not known by the system")
    assert raised.value.to_json()["code"] == 400
    assert record.carrier_module == "knm_telnyx"


def test_rename_carrier_is_for_admins() -> None:
    with pytest.raises(KnmError) as raised:
        RenameCarrierProvider(CTX).save(pn(public={"carrier_name": "local"}), fctx(admin=False))
    assert raised.value == forbidden(
        "only system or a superduper admin may rename the carrier (carrier_name)"
    )


def test_rename_uses_the_registry_carriers() -> None:
    from carriers.base import Carrier
    from carriers.registry import CarrierRegistry

    class Custom(Carrier):
        name = "knm_custom"

    carriers = CarrierRegistry([Custom])
    rename = ProviderRegistry(carriers=carriers).get("knm_rename_carrier", CTX)
    assert isinstance(rename, RenameCarrierProvider)
    record = pn(public={"carrier_name": "custom"})
    rename.save(record, fctx())
    assert record.carrier_module == "knm_custom"
    with pytest.raises(KnmError):
        rename.save(pn(public={"carrier_name": "telnyx"}), fctx())


# ================================================================================ registry
def test_the_registry_has_the_local_providers_and_those_the_carriers_name() -> None:
    from carriers.local import LocalCarrier
    from carriers.registry import CarrierRegistry

    everything = ProviderRegistry().names()
    for name in ("knm_telnyx_e911", "knm_telnyx_cnam", "knm_vitelity_e911", "knm_vitelity_cnam"):
        assert name in everything
    # a carrier that is not registered brings no provider: its providers are missing, skipped
    registry = ProviderRegistry(carriers=CarrierRegistry([LocalCarrier]))
    names = registry.names()
    for name in (
        "knm_cnam_notifier",
        "knm_failover",
        "knm_force_outbound",
        "knm_mms",
        "knm_prepend",
        "knm_rename_carrier",
        "knm_ringback",
        "knm_sms",
    ):
        assert name in names
    assert registry.get("knm_telnyx_e911", CTX) is None  # knm_telnyx is not registered
    assert registry.get(None, CTX) is None
    assert provider("knm_no_such_provider", CTX) is None
    assert isinstance(provider("knm_prepend", CTX), PrependProvider)


def test_registered_classes_win_over_upstream_ones() -> None:
    class Stub(FeatureProvider):
        name = "knm_telnyx_e911"
        features = ("e911",)

    registry = ProviderRegistry()
    registry.register(Stub)
    assert isinstance(registry.get("knm_telnyx_e911", CTX), Stub)


# ================================================================================ apply_on_save
class Recorder:
    """Stub providers that record what ran, in order."""

    calls: list[tuple[str, str, FeatureContext]]

    def __init__(self) -> None:
        self.calls = []

    def provider(
        self, module: str, feature: str, *, fail: KnmError | None = None, offered: bool = True
    ) -> type:
        recorder = self

        class Stub(FeatureProvider):
            name = module
            features = (feature,)
            failure: ClassVar[KnmError | None] = fail

            def available(self, pn: PhoneNumber, fctx: FeatureContext) -> bool:
                return offered

            def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
                recorder.calls.append(("save", module, fctx))
                value = pn.public.get(feature)
                if value is None:
                    pn.remove_feature(feature)
                else:
                    pn.set_feature(feature, value)

            def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
                recorder.calls.append(("delete", module, fctx))
                if self.failure is not None:
                    raise self.failure
                pn.remove_feature(feature)

        return Stub

    def modules(self) -> list[tuple[str, str]]:
        return [(action, module) for action, module, _ in self.calls]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_deprecated_im_is_dropped_on_save() -> None:
    record = pn(features={"im": {}})
    features.apply_on_save(record, env())
    assert record.features == {}
    assert record.dirty


def test_a_requested_feature_that_is_not_available_fails_403(recorder: Recorder) -> None:
    registry = ProviderRegistry()
    registry.register(recorder.provider("knm_prepend", "prepend"))
    local = pn(module="knm_local", public={"e911": {"street_address": "1 Main"}, "prepend": {}})
    with pytest.raises(KnmError) as raised:
        features.apply_on_save(local, env(auth_by=RESELLER, providers=registry))
    # the cause names the feature and the rule that refused it (prepend is allowed)
    assert raised.value == forbidden(
        f"feature 'e911' is not allowed on {NUM}: denied by the local-number rule "
        "(no paid feature unless KNM_LOCAL_FEATURE_OVERRIDE)"
    )
    assert recorder.calls == []  # nothing ran
    denied = pn(module="knm_bandwidth2", denied=["e911"], public={"e911": {"a": 1}})
    with pytest.raises(KnmError) as raised:
        features.apply_on_save(denied, env(auth_by=RESELLER))
    assert raised.value == forbidden(
        f"feature 'e911' is not allowed on {NUM}: denied by the number's pvt_features_denied"
    )
    # an active feature that became unavailable is a request too
    stale = pn(module="knm_local", used_by="callflow", features={"local": {}, "failover": {}})
    with pytest.raises(KnmError) as raised:
        features.apply_on_save(stale, env())
    assert raised.value == forbidden(
        f"feature 'failover' is not allowed on {NUM}: denied by the trunkstore rule "
        "(failover needs used_by trunkstore)"
    )


def test_refused_im_features_do_not_fail_the_save(recorder: Recorder) -> None:
    registry = ProviderRegistry()
    registry.register(recorder.provider("knm_sms", "sms", offered=False))
    record = pn(features={"sms": {"enabled": True}}, public={"sms": {"enabled": True}})
    features.apply_on_save(record, env(providers=registry))
    assert recorder.calls == []  # not offered, so not run: the stale feature stays
    assert record.features == {"sms": {"enabled": True}}


def test_providers_run_in_module_order_and_missing_modules_are_skipped(
    recorder: Recorder,
) -> None:
    registry = ProviderRegistry()
    for module, feature in (
        ("knm_prepend", "prepend"),
        ("knm_failover", "failover"),
        ("knm_cnam_notifier", "cnam"),
    ):
        registry.register(recorder.provider(module, feature))
    record = pn(
        module="knm_bandwidth2",  # no E911 provider: the public e911 stays, no feature
        used_by="trunkstore",
        public={"prepend": 1, "failover": 2, "cnam": 3, "e911": {"a": 1}},
    )
    features.apply_on_save(record, env(providers=registry, dry_run=True))
    assert recorder.modules() == [
        ("save", "knm_cnam_notifier"),
        ("save", "knm_failover"),
        ("save", "knm_prepend"),
    ]
    assert all(fc.dry_run and fc.is_admin for _, _, fc in recorder.calls)
    assert record.features == {"cnam": 3, "failover": 2, "prepend": 1}
    assert record.public["e911"] == {"a": 1}


def test_the_provider_context_names_the_owner() -> None:
    ctx = env(auth_by=RESELLER, dry_run=True).context(pn(assigned_to=CHILD))
    assert ctx == FeatureContext(
        dry_run=True, auth_by=RESELLER, is_admin=False, account_name="Child", request_id=None
    )
    assert env().context(pn(assigned_to=None)).account_name is None


def test_saving_unchanged_features_changes_nothing() -> None:
    prepend = {"enabled": True, "name": "pre"}
    record = pn(
        module="knm_local",
        used_by="trunkstore",
        features={"local": {}, "prepend": prepend, "failover": {"e164": "+1"}},
        public={"prepend": prepend, "failover": {"e164": "+1"}, "force_outbound": "blabla"},
    )
    features.apply_on_save(record, env())
    assert not record.dirty
    assert record.features == {"local": {}, "prepend": prepend, "failover": {"e164": "+1"}}


def test_renaming_to_local_strips_what_local_numbers_may_not_use() -> None:
    """VITELITY renamed to local: cnam goes from both sides, prepend stays."""
    cnam = {"display_name": "KAZOO", "inbound_lookup": True}
    prepend = {"enabled": True, "name": "Vitelity"}
    record = pn(
        module="knm_vitelity",
        features={
            "inbound_cnam": {"inbound_lookup": True},
            "outbound_cnam": {"display_name": "KAZOO"},
            "prepend": prepend,
        },
        public={"cnam": cnam, "prepend": prepend, "carrier_name": "local"},
        allowed=["cnam", "e911", "force_outbound", "prepend", "carrier_name"],
    )
    features.apply_on_save(record, env(auth_by=MASTER))
    assert record.carrier_module == "knm_local"
    assert record.features == {"local": {}, "prepend": prepend}
    assert record.public == {"prepend": prepend}


def test_a_carrier_rename_by_a_reseller_fails_403(recorder: Recorder) -> None:
    with pytest.raises(KnmError) as raised:
        features.apply_on_save(pn(public={"carrier_name": "local"}), env(auth_by=RESELLER))
    assert raised.value == forbidden(
        f"feature 'carrier_name' is not allowed on {NUM}: denied by the admin rule "
        "(only system or a superduper admin may use it)"
    )


def test_deprovision_runs_every_requested_providers_delete(recorder: Recorder) -> None:
    registry = ProviderRegistry()
    registry.register(recorder.provider("knm_stub_e911", "e911"))
    registry.register(recorder.provider("knm_cnam_notifier", "outbound_cnam"))
    system = SystemConfig(e911_provider="knm_stub_e911")
    record = pn(
        features={"e911": {"a": 1}, "outbound_cnam": {"display_name": "X"}, "prepend": {}},
        public={"e911": {"a": 1}},
    )
    features.deprovision(record, env(providers=registry, system=system, auth_by=RESELLER))
    assert recorder.modules() == [("delete", "knm_cnam_notifier"), ("delete", "knm_stub_e911")]
    assert record.features == {}  # knm_prepend's delete ran too


def test_a_deprovision_failure_propagates(recorder: Recorder) -> None:
    registry = ProviderRegistry()
    failure = errors.by_carrier(NUM, "upstream down", "knm_stub_e911")
    registry.register(recorder.provider("knm_stub_e911", "e911", fail=failure))
    record = pn(features={"e911": {"a": 1}})
    with pytest.raises(KnmError) as raised:
        features.deprovision(
            record, env(providers=registry, system=SystemConfig(e911_provider="knm_stub_e911"))
        )
    assert raised.value == failure


def test_remove_denied_features_prunes_private_and_public() -> None:
    record = pn(
        module="knm_local",
        used_by="callflow",
        features={
            "local": {},
            "e911": {"a": 1},
            "inbound_cnam": {"inbound_lookup": True},
            "failover": {"sip": "x"},
            "prepend": {"enabled": True},
        },
        public={
            "e911": {"a": 1},
            "dash_e911": {"a": 1},
            "cnam": {"inbound_lookup": True, "display_name": "X"},
            "failover": {"sip": "x", "custom": 1},
            "prepend": {"enabled": True},
        },
    )
    features.remove_denied_features(record, env())
    assert record.features == {"local": {}, "prepend": {"enabled": True}}
    assert record.public == {"failover": {"custom": 1}, "prepend": {"enabled": True}}
    assert record.dirty


# ================================================================================ config
def test_system_config_falls_back_to_the_environment() -> None:
    settings = Settings(
        features_allow=["prepend"],
        features_deny=["e911"],
        cnam_provider="knm_telnyx_cnam",
        e911_provider="knm_telnyx_e911",
        local_feature_override=True,
    )
    assert SystemConfig.from_document(None, settings) == SystemConfig(
        features_allow=("prepend",),
        features_deny=("e911",),
        cnam_provider="knm_telnyx_cnam",
        e911_provider="knm_telnyx_e911",
        local_feature_override=True,
    )
    doc = {
        "features": {"allow": ["cnam"], "deny": []},
        "providers": ["failover"],
        "cnam_provider": "knm_vitelity_cnam",
        "local_feature_override": False,
    }
    assert SystemConfig.from_document(doc, settings) == SystemConfig(
        features_allow=("cnam",),
        features_deny=(),
        cnam_provider="knm_vitelity_cnam",
        e911_provider="knm_telnyx_e911",
        local_feature_override=False,
    )
    legacy = SystemConfig.from_document({"providers": ["failover"]}, Settings())
    assert (legacy.features_allow, legacy.features_deny) == (("failover",), None)
    assert SystemConfig.from_document({}, Settings()) == SystemConfig()


def test_settings_read_the_feature_lists_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().features_allow, Settings().features_deny) == (None, None)
    assert (Settings().cnam_provider, Settings().e911_provider) == ("knm_cnam_notifier", None)
    monkeypatch.setenv("KNM_FEATURES_ALLOW", "prepend,e911")
    monkeypatch.setenv("KNM_FEATURES_DENY", '["cnam"]')
    monkeypatch.setenv("KNM_E911_PROVIDER", "knm_telnyx_e911")
    settings = Settings()
    assert (settings.features_allow, settings.features_deny) == (["prepend", "e911"], ["cnam"])
    assert settings.e911_provider == "knm_telnyx_e911"


def test_account_providers_are_stored_under_kazoo_names() -> None:
    account = Account(
        id=RESELLER,
        name="r",
        number_manager=NumberManagerConfig(
            cnam_provider="knm_telnyx_cnam", e911_provider="knm_telnyx_e911"
        ),
    )
    doc = account.to_document()
    assert doc["number_manager"] == {
        "cnam_provider": "knm_telnyx_cnam",
        "e911_provider": "knm_telnyx_e911",
    }
    assert Account.from_document(doc).number_manager == account.number_manager
    assert "cnam_provider" not in Account(id=RESELLER, name="r").to_document()["number_manager"]
