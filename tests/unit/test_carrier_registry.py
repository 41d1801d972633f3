"""Carriers describe themselves, and everything knm knows about them comes from the registry:
queues, the traits the number rules read, feature providers, settings, plugins, and the
deployment files and docs that list carriers (checked here against the registry).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from carriers.base import Carrier, CarrierContext, CarrierKind
from carriers.local import LocalCarrier
from carriers.registry import CarrierPluginError, CarrierRegistry, default_registry
from config.settings import Settings
from knm.domain.carrier_modules import UNKNOWN_MODULE, ModuleTraits
from knm.services.feature_providers import ProviderRegistry
from tests import fake_carrier
from workers.app import all_queues

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = CarrierRegistry()
PLUGIN = Settings(carrier_plugins=["tests.fake_carrier"])

#: The docker-compose service that serves each kind of carrier (its comment says why).
COMPOSE_SERVICE = {
    CarrierKind.LOCAL: "worker",
    CarrierKind.INVENTORY: "carrier-worker",
    CarrierKind.PROVIDER: "provider-worker",
}


# ================================================================================ queues
def test_every_carrier_has_its_queue_and_a_worker_serves_them_all() -> None:
    for cls in BUILTIN.classes():
        assert cls.queue == f"carrier.{cls.name}"
    assert all_queues(Settings()) == ["knm", "celery", *(c.queue for c in BUILTIN.classes())]
    assert set(BUILTIN.queues()) == {q for kind in CarrierKind for q in BUILTIN.queues(kind)}


def test_a_subclass_gets_the_queue_of_its_own_name() -> None:
    class Renamed(LocalCarrier):
        name: ClassVar[str] = "knm_renamed"

    assert (LocalCarrier.queue, Renamed.queue) == ("carrier.knm_local", "carrier.knm_renamed")


# ================================================================================ traits
def test_the_number_rules_read_what_the_carriers_say() -> None:
    modules = BUILTIN.modules("knm_inventory")
    assert (modules.home, modules.default) == ("knm_local", "knm_inventory")
    assert modules.of("knm_local") == ModuleTraits(local=True, deleted_on_release=True, home=True)
    assert modules.of("knm_mdn") == ModuleTraits(local=True, mobile=True, deleted_on_release=True)
    for name in BUILTIN.names():
        if name not in ("knm_local", "knm_mdn"):
            assert modules.of(name) == UNKNOWN_MODULE, name
    assert modules.of("knm_pacwest") == UNKNOWN_MODULE
    assert modules.of(None) == UNKNOWN_MODULE
    assert modules.renamed == {"knm_bandwidth": "knm_bandwidth2"}
    assert modules.migrate("undefined") == "knm_local"


def test_at_most_one_carrier_is_home() -> None:
    class Second(LocalCarrier):
        name: ClassVar[str] = "knm_second_home"

    registry = CarrierRegistry([LocalCarrier, Second])
    with pytest.raises(ValueError, match="at most one registered carrier may be home"):
        registry.modules("knm_local")
    assert CarrierRegistry([]).modules("knm_x").home is None


def test_registering_a_carrier_updates_the_traits() -> None:
    registry = CarrierRegistry()
    assert registry.modules("knm_local").of("knm_sim") == UNKNOWN_MODULE

    class Sim(Carrier):
        name: ClassVar[str] = "knm_sim"
        mobile: ClassVar[bool] = True

    registry.register(Sim)
    assert registry.modules("knm_local").of("knm_sim").mobile


# ================================================================================ features
def test_carriers_name_their_feature_providers() -> None:
    assert {p.name for p in BUILTIN.feature_providers()} == {
        "knm_telnyx_e911",
        "knm_telnyx_cnam",
        "knm_vitelity_e911",
        "knm_vitelity_cnam",
    }
    providers = ProviderRegistry(carriers=BUILTIN)
    assert providers.carrier_provider("knm_telnyx", "e911") == "knm_telnyx_e911"
    assert providers.carrier_provider("knm_vitelity", "e911") == "knm_vitelity_e911"
    assert providers.carrier_provider("knm_local", "e911") is None
    assert providers.carrier_provider("knm_pacwest", "e911") is None


# ================================================================================ settings
def test_a_carrier_reads_its_own_settings_section() -> None:
    settings = Settings(
        carriers={"telnyx": {"user": "u"}, "fake": {"stock": "2", "token": "s3cr3t"}}
    )
    telnyx = default_registry(settings).carrier_class("knm_telnyx")
    assert telnyx is not None
    assert telnyx.read_config(settings) is settings.carriers.telnyx
    config = fake_carrier.FakeCarrier.read_config(settings)
    assert (config.stock, config.token.get_secret_value()) == (2, "s3cr3t")
    assert "s3cr3t" not in repr(config)
    assert fake_carrier.FakeCarrier.read_config(Settings()).stock == 3
    assert LocalCarrier.read_config(settings) is None


def test_a_carriers_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_CARRIERS__FAKE__STOCK", "7")
    assert fake_carrier.FakeCarrier.read_config(Settings()).stock == 7


# ================================================================================ plugins
def test_a_plugin_module_registers_its_carriers_everywhere() -> None:
    registry = default_registry(PLUGIN)
    assert registry.carrier_class("knm_fake") is fake_carrier.FakeCarrier
    assert registry.names() == sorted([*BUILTIN.names(), "knm_fake"])
    assert "carrier.knm_fake" in all_queues(PLUGIN)
    assert "carrier.knm_fake" not in all_queues(Settings())
    assert "carrier.knm_fake" in registry.queues(CarrierKind.PROVIDER)
    providers = ProviderRegistry(carriers=registry)
    assert providers.carrier_provider("knm_fake", "e911") == "knm_fake_e911"
    assert registry.modules("knm_local").of("knm_fake") == UNKNOWN_MODULE


def test_plugins_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_CARRIER_PLUGINS", "tests.fake_carrier")
    assert "knm_fake" in default_registry(Settings())


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("tests.no_such_plugin", "cannot import 'tests.no_such_plugin'"),
        ("tests.fixtures_kazoo", "'tests.fixtures_kazoo' has no CARRIERS tuple"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_refused(module: str, message: str) -> None:
    with pytest.raises(CarrierPluginError, match=re.escape(message)):
        default_registry(Settings(carrier_plugins=[module]))


def test_a_plugin_may_not_take_a_registered_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class Impostor(Carrier):
        name: ClassVar[str] = "knm_telnyx"

    monkeypatch.setattr(fake_carrier, "CARRIERS", (Impostor,))
    with pytest.raises(CarrierPluginError, match="registers 'knm_telnyx'"):
        default_registry(PLUGIN)


def test_a_plugin_carrier_works_in_process(mongo_free_ctx: CarrierContext) -> None:
    carrier = default_registry(PLUGIN).get("knm_fake", mongo_free_ctx)
    assert isinstance(carrier, fake_carrier.FakeCarrier)
    assert carrier.config.stock == 3


@pytest.fixture
def mongo_free_ctx() -> CarrierContext:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9", connect=False)
    return CarrierContext(client["unused"], PLUGIN)


# ================================================================================ files
def _compose_queues() -> dict[str, list[str]]:
    """``--queues`` of each docker-compose service (the file's own layout, no YAML library)."""
    out: dict[str, list[str]] = {}
    service = None
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        if match := re.fullmatch(r"  ([a-z-]+):", line):
            service = match.group(1)
        elif line.strip() == "- --queues" and service is not None:
            out[service] = lines[index + 1].strip().removeprefix("- ").split(",")
    return out


def test_docker_compose_serves_every_registered_queue_once() -> None:
    compose = _compose_queues()
    expected = {service: sorted(BUILTIN.queues(kind)) for kind, service in COMPOSE_SERVICE.items()}
    expected["worker"] = sorted(["knm", "celery", *expected["worker"]])
    got = {service: sorted(queues) for service, queues in compose.items()}
    assert got == expected, "docker-compose.yml --queues should be:\n" + "\n".join(
        f"  {service}: {','.join(queues)}" for service, queues in expected.items()
    )


def test_the_carrier_docs_list_every_registered_carrier() -> None:
    page = (ROOT / "docs" / "carriers.md").read_text()
    section = page.split("\n## Carrier modules\n", 1)[1].split("\n## ", 1)[0]
    listed: set[str] = set()
    for row in re.findall(r"^\| (`knm_[^|]*)\|", section, flags=re.MULTILINE):
        listed.update(re.findall(r"`(knm_[a-z0-9_]+)`", row))
    assert listed == set(BUILTIN.names())
