"""Number features through the operations, against a real store.

Every changed number runs the feature providers before it is written: a feature it may not use
fails it 403 and nothing is stored. Release and hard delete de-provision the features before
wiping them. ``dirty`` is observed through the store: a write bumps ``pvt_rev``.

Upstream E911 is played by a stub provider registered in the test (``knm_stub_e911``, named by
``KNM_E911_PROVIDER``), so no carrier sandbox is needed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database

from carriers.features import FeatureContext, FeatureProvider
from config.settings import Settings
from knm.domain import errors
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.features import ALL_FEATURES
from knm.services.operations import NumberManager, Setter
from knm.store import system_config
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    BW_EXISTING_DID,
    CHILD,
    MASTER,
    RESELLER,
    TEST_CREATE_NUM,
    TEST_IN_SERVICE_MDN,
    TEST_IN_SERVICE_NUM,
    TEST_OLD5_1_NUM,
    TEST_OLD6_NUM,
    TEST_OLD7_NUM,
    TEST_TELNYX_NUM,
    TEST_VITELITY_NUM,
    Doc,
    failures,
    fixture_doc,
    forbidden,
    load_kazoo,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
E911 = {"street_address": "140 Main St", "locality": "Lake Lure", "postal_code": "28746"}
NUM = "+14155550300"


#: The rules a feature's 403 names (its cause): local numbers, admins only.
LOCAL = "denied by the local-number rule (no paid feature unless KNM_LOCAL_FEATURE_OVERRIDE)"
ADMIN = "denied by the admin rule (only system or a superduper admin may use it)"


def refused(number: str, feature: str, reason: str) -> Doc:
    """The 403 of a feature the number may not use, naming the list or rule that says no."""
    return forbidden(f"feature '{feature}' is not allowed on {number}: {reason}")


def invalid(cause: str) -> Doc:
    return {"error": "invalid", "code": 400, "message": "invalid", "cause": cause}


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


class StubE911:
    """A stub upstream E911 provider: records every call and what the number held then."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], FeatureContext]] = []
        self.fail_delete: KnmError | None = None

    def provider_class(self) -> type[FeatureProvider]:
        stub = self

        class Provider(FeatureProvider):
            name: ClassVar[str] = "knm_stub_e911"
            features: ClassVar[tuple[str, ...]] = ("e911",)

            def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
                stub.calls.append(("save", pn.number, dict(pn.features), fctx))
                wanted = pn.public.get("e911")
                if not wanted:
                    pn.remove_feature("e911")
                elif pn.features.get("e911") != wanted:
                    pn.set_feature("e911", wanted)

            def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
                stub.calls.append(("delete", pn.number, dict(pn.features), fctx))
                if stub.fail_delete is not None:
                    raise stub.fail_delete
                pn.remove_feature("e911")

        return Provider

    def actions(self) -> list[tuple[str, str]]:
        return [(action, number) for action, number, _, _ in self.calls]


@pytest.fixture
def e911() -> StubE911:
    return StubE911()


def manager(store: Store, stub: StubE911 | None = None, **settings: Any) -> NumberManager:
    """A manager whose E911 provider is the stub (when given)."""
    if stub is not None:
        settings.setdefault("e911_provider", "knm_stub_e911")
    nm = NumberManager(store, Settings(**settings))
    if stub is not None:
        nm.providers.register(stub.provider_class())
    return nm


def only(batch: Any, number: str) -> PhoneNumber:
    assert failures(batch) == {}
    pn: PhoneNumber = batch.succeeded[number]
    return pn


def reset(fields: dict[str, Any]) -> Setter:
    return lambda pn: pn.reset_public(fields)


def merge(fields: dict[str, Any]) -> Setter:
    return lambda pn: pn.update_public(fields)


def rev(store: Store, number: str) -> int:
    doc = stored(store.db, number)
    assert doc is not None
    value: int = doc["pvt_rev"]
    return value


# =========================================================================== the save pipeline
class TestKazooNumberTests:
    def test_e911_on_a_local_number_is_forbidden_and_nothing_changes(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        nm = manager(store)
        batch = nm.update([TEST_IN_SERVICE_NUM], [reset({"e911": E911})], Options(auth_by=RESELLER))
        assert failures(batch) == {TEST_IN_SERVICE_NUM: refused(TEST_IN_SERVICE_NUM, "e911", LOCAL)}
        assert stored(store.db, TEST_IN_SERVICE_NUM) == fixture_doc(TEST_IN_SERVICE_NUM)

    def test_e911_explicitly_denied_on_the_number_is_forbidden(self, store: Store) -> None:
        load_kazoo(store.db, [BW_EXISTING_DID])
        nm = manager(store)
        batch = nm.update([BW_EXISTING_DID], [reset({"e911": E911})], Options(auth_by=RESELLER))
        denied = "denied by the number's pvt_features_denied"
        assert failures(batch) == {BW_EXISTING_DID: refused(BW_EXISTING_DID, "e911", denied)}
        assert stored(store.db, BW_EXISTING_DID) == fixture_doc(BW_EXISTING_DID)

    def test_fix_number_keeps_a_consistent_number_clean(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_OLD5_1_NUM])
        batch = manager(store).update(
            [TEST_OLD5_1_NUM],
            [lambda pn: pn.set_used_by(None)],
            Options(auth_by=RESELLER),
            remove_denied_features=True,
        )
        pn = only(batch, TEST_OLD5_1_NUM)
        assert rev(store, TEST_OLD5_1_NUM) == 1  # not dirty: not written
        assert set(pn.features) == {"e911", "outbound_cnam"}
        assert "dash_e911" not in pn.features
        assert pn.features["e911"] == pn.public["e911"]
        assert pn.public["cnam"] == {"display_name": "KAZOO"}

    def test_fix_number_strips_cnam_from_a_local_number(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_OLD7_NUM])
        batch = manager(store).update(
            [TEST_OLD7_NUM],
            [lambda pn: pn.set_used_by("trunkstore")],
            Options(auth_by=CHILD),
            remove_denied_features=True,
        )
        pn = only(batch, TEST_OLD7_NUM)
        assert (pn.used_by, pn.features) == ("trunkstore", {"local": {}})
        doc = stored(store.db, TEST_OLD7_NUM)
        assert doc is not None
        assert (doc["pvt_rev"], doc["pvt_features"]) == (2, {"local": {}})


# =========================================================================== local numbers
class TestLocalNumbers:
    def test_e911_on_a_local_number_fails_and_calls_no_provider(
        self, store: Store, e911: StubE911
    ) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        nm = manager(store, e911)
        batch = nm.update([TEST_IN_SERVICE_NUM], [merge({"e911": E911})], Options(auth_by=MASTER))
        assert failures(batch) == {TEST_IN_SERVICE_NUM: refused(TEST_IN_SERVICE_NUM, "e911", LOCAL)}
        assert e911.calls == []
        assert stored(store.db, TEST_IN_SERVICE_NUM) == fixture_doc(TEST_IN_SERVICE_NUM)

    def test_local_feature_override_lets_a_local_number_use_e911(
        self, store: Store, e911: StubE911
    ) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        nm = manager(store, e911, local_feature_override=True)
        batch = nm.update([TEST_IN_SERVICE_NUM], [merge({"e911": E911})], Options(auth_by=RESELLER))
        pn = only(batch, TEST_IN_SERVICE_NUM)
        assert pn.features == {"local": {}, "e911": E911}
        ((action, number, _, fctx),) = e911.calls
        assert (action, number) == ("save", TEST_IN_SERVICE_NUM)
        assert fctx == FeatureContext(
            dry_run=False, auth_by=RESELLER, is_admin=False, account_name="Reseller"
        )
        doc = stored(store.db, TEST_IN_SERVICE_NUM)
        assert doc is not None
        assert (doc["e911"], doc["pvt_features"]["e911"]) == (E911, E911)

    def test_the_override_can_live_in_the_system_config(self, store: Store, e911: StubE911) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        system_config.set_value(store.db, "local_feature_override", True)
        nm = manager(store, e911)
        only(
            nm.update([TEST_IN_SERVICE_NUM], [merge({"e911": E911})], Options(auth_by=RESELLER)),
            TEST_IN_SERVICE_NUM,
        )

    def test_without_an_e911_provider_the_address_is_kept_but_not_activated(
        self, store: Store
    ) -> None:
        """knm_local has no E911 provider of its own: the module is missing and skipped."""
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        nm = manager(store, local_feature_override=True)
        pn = only(
            nm.update([TEST_IN_SERVICE_NUM], [merge({"e911": E911})], Options(auth_by=RESELLER)),
            TEST_IN_SERVICE_NUM,
        )
        assert (pn.public["e911"], pn.features) == (E911, {"local": {}})


# =========================================================================== force_outbound
class TestForceOutbound:
    def test_force_outbound_values_and_dirtiness(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_TELNYX_NUM])
        nm = manager(store)
        as_reseller = Options(auth_by=RESELLER, assign_to=RESELLER)
        pn = only(nm.create([TEST_TELNYX_NUM], as_reseller), TEST_TELNYX_NUM)
        assert (pn.state, pn.features, pn.public) == (S.IN_SERVICE, {}, {})
        steps: list[tuple[Setter, Any, Any]] = [
            (reset({"force_outbound": True}), True, True),
            (merge({"force_outbound": "blabla"}), None, "blabla"),
            (reset({}), None, None),
            (merge({"force_outbound": "false"}), False, "false"),
            (reset({"force_outbound": False}), False, False),
        ]
        for setter, private, public in steps:
            before = rev(store, TEST_TELNYX_NUM)
            pn = only(nm.update([TEST_TELNYX_NUM], [setter], as_reseller), TEST_TELNYX_NUM)
            assert pn.features.get("force_outbound") == private
            assert ("force_outbound" in pn.features) is (private is not None)
            assert pn.public.get("force_outbound") == public
            assert rev(store, TEST_TELNYX_NUM) == before + 1  # dirty: written
        before = rev(store, TEST_TELNYX_NUM)
        pn = only(
            nm.update([TEST_TELNYX_NUM], [reset({"force_outbound": False})], as_reseller),
            TEST_TELNYX_NUM,
        )
        assert pn.features == {"force_outbound": False}
        assert rev(store, TEST_TELNYX_NUM) == before  # the same again: not dirty

    @pytest.mark.parametrize(
        "number",
        [
            TEST_IN_SERVICE_NUM,
            BW_EXISTING_DID,
            TEST_OLD5_1_NUM,
            TEST_VITELITY_NUM,
            TEST_IN_SERVICE_MDN,
        ],
    )
    @pytest.mark.parametrize("auth", ["default", "system", MASTER, RESELLER])
    def test_force_outbound_is_available(self, store: Store, number: str, auth: str) -> None:
        load_kazoo(store.db, [number])
        options = Options() if auth == "default" else Options(auth_by=auth)
        pn = only(manager(store).get([number], options), number)
        assert pn.available_features is not None
        assert "force_outbound" in pn.available_features
        assert "force_outbound" in pn.to_public_json()["_read_only"]["features"]["available"]


# =========================================================================== module renames
class TestRenameCarrier:
    def test_create_with_a_carrier_name(self, store: Store) -> None:
        load_kazoo(store.db)
        options = Options(
            auth_by=MASTER, assign_to=RESELLER, public_fields={"carrier_name": "telnyx"}
        )
        pn = only(manager(store).create([TEST_CREATE_NUM], options), TEST_CREATE_NUM)
        assert (pn.carrier_module, pn.features, pn.public) == ("knm_telnyx", {}, {})
        doc = stored(store.db, TEST_CREATE_NUM)
        assert doc is not None
        assert doc["pvt_carrier_module"] == "knm_telnyx"
        assert "carrier_name" not in doc

    def test_create_with_an_unknown_carrier_name(self, store: Store) -> None:
        load_kazoo(store.db)
        public = {"carrier_name": "wrong_carrier"}
        nm = manager(store)
        batch = nm.create(
            [TEST_CREATE_NUM], Options(auth_by=MASTER, assign_to=RESELLER, public_fields=public)
        )
        assert failures(batch) == {
            TEST_CREATE_NUM: invalid("'wrong_carrier' is not known by the system")
        }
        batch = nm.create(
            [TEST_CREATE_NUM], Options(auth_by=RESELLER, assign_to=RESELLER, public_fields=public)
        )
        assert failures(batch) == {TEST_CREATE_NUM: refused(TEST_CREATE_NUM, "carrier_name", ADMIN)}
        assert stored(store.db, TEST_CREATE_NUM) is None

    def test_renaming_a_telnyx_number(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_TELNYX_NUM])
        nm = manager(store)
        admin = Options(auth_by=MASTER)
        pn = only(
            nm.update([TEST_TELNYX_NUM], [reset({"carrier_name": "local"})], admin),
            TEST_TELNYX_NUM,
        )
        assert (pn.carrier_module, pn.features, pn.public) == ("knm_local", {"local": {}}, {})
        batch = nm.update([TEST_TELNYX_NUM], [merge({"carrier_name": "blabla"})], admin)
        assert failures(batch) == {TEST_TELNYX_NUM: invalid("'blabla' is not known by the system")}
        written = rev(store, TEST_TELNYX_NUM)
        pn = only(nm.update([TEST_TELNYX_NUM], [reset({})], admin), TEST_TELNYX_NUM)
        assert pn.carrier_module == "knm_local"
        assert rev(store, TEST_TELNYX_NUM) == written  # not dirty
        batch = nm.update(
            [TEST_TELNYX_NUM], [reset({"carrier_name": "telnyx"})], Options(auth_by=RESELLER)
        )
        assert failures(batch) == {TEST_TELNYX_NUM: refused(TEST_TELNYX_NUM, "carrier_name", ADMIN)}
        # KAZOO accepts any loadable knm_* module (knm_gen_carrier); knm only its carriers
        batch = nm.update([TEST_TELNYX_NUM], [reset({"carrier_name": "gen_carrier"})], admin)
        assert failures(batch) == {
            TEST_TELNYX_NUM: invalid("'gen_carrier' is not known by the system")
        }
        doc = stored(store.db, TEST_TELNYX_NUM)
        assert doc is not None
        assert (doc["pvt_carrier_module"], doc["pvt_rev"]) == ("knm_local", written)

    def test_a_local_number_renamed_to_telnyx_loses_the_local_marker(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM])
        pn = only(
            manager(store).update(
                [TEST_IN_SERVICE_NUM], [reset({"carrier_name": "telnyx"})], Options(auth_by=MASTER)
            ),
            TEST_IN_SERVICE_NUM,
        )
        assert (pn.carrier_module, pn.features) == ("knm_telnyx", {})

    def test_renaming_vitelity_to_local_then_bandwidth(self, store: Store) -> None:
        load_kazoo(store.db, [TEST_VITELITY_NUM])
        nm = manager(store)
        prepend = fixture_doc(TEST_VITELITY_NUM)["prepend"]
        pn = only(
            nm.update(
                [TEST_VITELITY_NUM], [merge({"carrier_name": "local"})], Options(auth_by=MASTER)
            ),
            TEST_VITELITY_NUM,
        )
        assert pn.carrier_module == "knm_local"
        assert pn.features == {"local": {}, "prepend": prepend}
        assert pn.public == {"prepend": prepend}
        pn = only(
            nm.update(
                [TEST_VITELITY_NUM], [merge({"carrier_name": "bandwidth"})], Options(auth_by=MASTER)
            ),
            TEST_VITELITY_NUM,
        )
        assert (pn.carrier_module, pn.features, pn.public) == (
            "knm_bandwidth2",
            {"prepend": prepend},
            {"prepend": prepend},
        )
        doc = stored(store.db, TEST_VITELITY_NUM)
        assert doc is not None
        assert (doc["pvt_carrier_module"], doc["pvt_rev"]) == ("knm_bandwidth2", 3)

    @pytest.mark.parametrize(
        ("auth", "offered"),
        [("default", True), ("system", True), (MASTER, True), (RESELLER, False)],
    )
    def test_carrier_name_is_available_to_admins_only(
        self, store: Store, auth: str, offered: bool
    ) -> None:
        load_kazoo(store.db, [TEST_VITELITY_NUM, TEST_IN_SERVICE_NUM])
        options = Options() if auth == "default" else Options(auth_by=auth)
        batch = manager(store).get([TEST_VITELITY_NUM, TEST_IN_SERVICE_NUM], options)
        assert failures(batch) == {}
        for pn in batch.succeeded.values():
            assert ("carrier_name" in (pn.available_features or [])) is offered


# =========================================================================== permission lists
class TestPermissionLists:
    def test_a_reseller_deny_list(self, store: Store) -> None:
        load_kazoo(
            store.db,
            account_overrides={RESELLER: {"number_manager": {"features": {"deny": ["prepend"]}}}},
            extra=[number_doc(NUM, "in_service", "knm_telnyx", assigned_to=CHILD)],
        )
        nm = manager(store)
        batch = nm.update([NUM], [merge({"prepend": {"enabled": True}})], Options(auth_by=CHILD))
        denied = f"denied by reseller '{RESELLER}' features.deny"
        assert failures(batch) == {NUM: refused(NUM, "prepend", denied)}
        pn = only(nm.update([NUM], [merge({"force_outbound": True})], Options(auth_by=CHILD)), NUM)
        assert pn.features == {"force_outbound": True}

    def test_a_reseller_allow_list(self, store: Store) -> None:
        load_kazoo(
            store.db,
            account_overrides={RESELLER: {"number_manager": {"features": {"allow": ["prepend"]}}}},
            extra=[number_doc(NUM, "in_service", "knm_telnyx", assigned_to=CHILD)],
        )
        nm = manager(store)
        batch = nm.update([NUM], [merge({"force_outbound": True})], Options(auth_by=CHILD))
        outside = f"not in reseller '{RESELLER}' features.allow"
        assert failures(batch) == {NUM: refused(NUM, "force_outbound", outside)}
        pn = only(nm.update([NUM], [merge({"prepend": {"enabled": True}})]), NUM)
        assert pn.features == {"prepend": {"enabled": True}}
        assert pn.available_features == ["prepend"]

    def test_the_reseller_names_the_e911_provider(self, store: Store, e911: StubE911) -> None:
        nm_config = {"e911_provider": "knm_stub_e911"}
        load_kazoo(
            store.db,
            account_overrides={RESELLER: {"number_manager": nm_config}},
            extra=[number_doc(NUM, "in_service", "knm_bandwidth2", assigned_to=CHILD)],
        )
        nm = manager(store)
        nm.providers.register(e911.provider_class())
        pn = only(nm.update([NUM], [merge({"e911": E911})], Options(auth_by=CHILD)), NUM)
        assert pn.features == {"e911": E911}
        assert e911.actions() == [("save", NUM)]

    def test_system_lists_from_the_system_config(self, store: Store) -> None:
        load_kazoo(store.db, extra=[number_doc(NUM, "in_service", "knm_telnyx", assigned_to=CHILD)])
        nm = manager(store)
        system_config.edit_feature_list(
            store.db, nm.settings, "deny", "prepend", add=True, all_features=ALL_FEATURES
        )
        prepend = merge({"prepend": {"enabled": True}})
        assert failures(nm.update([NUM], [prepend], Options(auth_by=CHILD))) == {
            NUM: refused(NUM, "prepend", "denied by the system's features deny list")
        }
        system_config.set_feature_list(store.db, "deny", None)
        assert system_config.edit_feature_list(
            store.db, nm.settings, "allow", "prepend", add=False, all_features=ALL_FEATURES
        ) == sorted(set(ALL_FEATURES) - {"prepend"})
        assert failures(nm.update([NUM], [prepend], Options(auth_by=CHILD))) == {
            NUM: refused(NUM, "prepend", "not in the system's features allow list")
        }
        system_config.set_feature_list(store.db, "allow", None)
        only(nm.update([NUM], [prepend], Options(auth_by=CHILD)), NUM)

    def test_system_lists_from_the_environment(self, store: Store) -> None:
        load_kazoo(store.db, extra=[number_doc(NUM, "in_service", "knm_telnyx", assigned_to=CHILD)])
        nm = manager(store, features_allow=["force_outbound"])
        prepend = merge({"prepend": {"enabled": True}})
        assert failures(nm.update([NUM], [prepend], Options(auth_by=CHILD))) == {
            NUM: refused(NUM, "prepend", "not in the system's features allow list")
        }
        # the stored document wins over the environment
        system_config.set_feature_list(store.db, "allow", ["prepend"])
        only(nm.update([NUM], [prepend], Options(auth_by=CHILD)), NUM)


# =========================================================================== release / delete
def _with_e911(number: str = NUM, **kwargs: Any) -> Doc:
    return number_doc(
        number,
        "in_service",
        "knm_bandwidth2",
        assigned_to=CHILD,
        features={"e911": E911},
        public={"e911": E911, "custom": 1},
        **kwargs,
    )


class TestDeprovision:
    def test_release_deprovisions_before_the_wipe(self, store: Store, e911: StubE911) -> None:
        load_kazoo(store.db, extra=[_with_e911()])
        pn = only(manager(store, e911).release([NUM], Options(auth_by=CHILD)), NUM)
        ((action, number, held, fctx),) = e911.calls
        assert (action, number, held) == ("delete", NUM, {"e911": E911})
        assert fctx.dry_run is False
        assert (pn.state, pn.features, pn.public) == (S.AVAILABLE, {}, {})
        doc = stored(store.db, NUM)
        assert doc is not None
        assert "pvt_features" not in doc
        assert "e911" not in doc

    def test_a_failed_deprovision_fails_the_release_and_keeps_the_features(
        self, store: Store, e911: StubE911
    ) -> None:
        load_kazoo(store.db, extra=[_with_e911()])
        e911.fail_delete = errors.by_carrier(NUM, "upstream down", "knm_stub_e911")
        batch = manager(store, e911).release([NUM], Options(auth_by=CHILD))
        assert batch.failed == {NUM: e911.fail_delete}
        assert stored(store.db, NUM) == _with_e911()

    def test_hard_delete_deprovisions(self, store: Store, e911: StubE911) -> None:
        load_kazoo(store.db, extra=[_with_e911()])
        e911.fail_delete = errors.by_carrier(NUM, "upstream down", "knm_stub_e911")
        nm = manager(store, e911)
        assert nm.delete([NUM], Options(auth_by=MASTER)).failed == {NUM: e911.fail_delete}
        assert stored(store.db, NUM) == _with_e911()
        e911.fail_delete = None
        pn = only(nm.delete([NUM], Options(auth_by=MASTER)), NUM)
        assert pn.state == S.DELETED
        assert e911.actions() == [("delete", NUM), ("delete", NUM)]
        assert stored(store.db, NUM) is None

    def test_a_dry_run_release_calls_nothing_upstream(self, store: Store, e911: StubE911) -> None:
        load_kazoo(store.db, extra=[_with_e911()])
        pn = only(manager(store, e911).release([NUM], Options(auth_by=CHILD, dry_run=True)), NUM)
        assert pn.features == {}
        assert [fctx.dry_run for _, _, _, fctx in e911.calls] == [True]
        assert stored(store.db, NUM) == _with_e911()


# =========================================================================== the pipeline
class TestPipeline:
    def test_a_dry_run_reports_the_features_and_writes_nothing(
        self, store: Store, e911: StubE911
    ) -> None:
        doc = number_doc(NUM, "in_service", "knm_bandwidth2", assigned_to=CHILD)
        load_kazoo(store.db, extra=[doc])
        batch = manager(store, e911).update(
            [NUM], [merge({"e911": E911})], Options(auth_by=CHILD, dry_run=True)
        )
        assert only(batch, NUM).features == {"e911": E911}
        assert [fctx.dry_run for _, _, _, fctx in e911.calls] == [True]
        assert stored(store.db, NUM) == doc

    def test_an_unchanged_number_runs_no_provider(self, store: Store, e911: StubE911) -> None:
        load_kazoo(store.db, extra=[_with_e911()])
        pn = only(manager(store, e911).update([NUM], [merge({"e911": E911})]), NUM)
        assert (pn.features, e911.calls) == ({"e911": E911}, [])
        assert rev(store, NUM) == 1

    def test_saving_an_unchanged_feature_changes_nothing(
        self, store: Store, e911: StubE911
    ) -> None:
        """A change elsewhere runs the providers; the unchanged e911 stays as it is."""
        load_kazoo(store.db, extra=[_with_e911()])
        pn = only(manager(store, e911).update([NUM], [merge({"custom": 2})]), NUM)
        assert e911.actions() == [("save", NUM)]
        assert pn.features == {"e911": E911}
        doc = stored(store.db, NUM)
        assert doc is not None
        assert (doc["pvt_rev"], doc["pvt_features"], doc["custom"]) == (2, {"e911": E911}, 2)

    def test_one_failing_number_does_not_fail_the_others(self, store: Store) -> None:
        ok = number_doc(NUM, "in_service", "knm_telnyx", assigned_to=RESELLER)
        load_kazoo(store.db, [TEST_IN_SERVICE_NUM], extra=[ok])
        batch = manager(store).update(
            [NUM, TEST_IN_SERVICE_NUM], [merge({"cnam": {"display_name": "ACME"}})]
        )
        assert failures(batch) == {TEST_IN_SERVICE_NUM: refused(TEST_IN_SERVICE_NUM, "cnam", LOCAL)}
        assert batch.succeeded[NUM].features == {"outbound_cnam": {"display_name": "ACME"}}

    def test_assign_to_app_is_a_plain_save(self, store: Store) -> None:
        """KAZOO runs no provider there: a trunkstore number keeps its failover."""
        load_kazoo(store.db, [TEST_OLD6_NUM])
        pn = only(manager(store).assign_to_app([TEST_OLD6_NUM], "callflow"), TEST_OLD6_NUM)
        assert (pn.used_by, "failover" in pn.features) == ("callflow", True)
        # the next save that runs the providers refuses the failover
        batch = manager(store).update([TEST_OLD6_NUM], [merge({"custom": 1})])
        trunkstore = "denied by the trunkstore rule (failover needs used_by trunkstore)"
        assert failures(batch) == {TEST_OLD6_NUM: refused(TEST_OLD6_NUM, "failover", trunkstore)}

    def test_the_accounts_resellers_and_system_config_come_in_one_query(
        self, mongo_db: Database[Doc], mongo_url: str
    ) -> None:
        load_kazoo(
            mongo_db,
            account_overrides={RESELLER: {"number_manager": {"features": {"deny": ["prepend"]}}}},
            extra=[number_doc(NUM, "in_service", "knm_telnyx", assigned_to=ACCOUNT_4)],
        )
        listener = _Commands()
        client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
            mongo_url, tz_aware=True, event_listeners=[listener]
        )
        try:
            nm = NumberManager(Store(client[mongo_db.name]), Settings())
            listener.names.clear()
            batch = nm.update(
                [NUM], [merge({"prepend": {"enabled": True}})], Options(auth_by=CHILD)
            )
            # the reseller's list was read
            denied = f"denied by reseller '{RESELLER}' features.deny"
            assert failures(batch) == {NUM: refused(NUM, "prepend", denied)}
            assert listener.names == ["find", "aggregate"]
        finally:
            client.close()


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
