"""A carrier added by a test module alone works end to end, on its own queue, in real workers.

``tests/fake_carrier.py`` is a carrier plugin: no line of knm names it. The workers get it from
their environment only (``KNM_CARRIER_PLUGINS=tests.fake_carrier``, its settings in
``KNM_CARRIERS__FAKE__*``). Worker A consumes ``knm`` (validation, routing, search); worker B
consumes the plugin's queue, which the registry derives from the class (``carrier.knm_fake``).
A plain Celery client searches, activates, sets an E911 address and releases; the carrier and
the E911 provider it offers record every call with their process id, so the test sees that the
search ran on A and everything that touched the carrier on B.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pymongo.database import Database

from config.settings import Settings
from knm.services.facade import Knm
from tests import workers_rig as rig
from tests.fake_carrier import CALLS
from workers.app import all_queues

pytestmark = pytest.mark.integration

ACCOUNT = "f1" * 16
PLUGIN = {
    "KNM_CARRIER_PLUGINS": "tests.fake_carrier",
    "KNM_CARRIERS__FAKE__STOCK": "2",
    "KNM_CARRIERS__FAKE__TOKEN": "plugin-secret",
}
ADDRESS = {"street_address": "1 Main St", "locality": "New York", "postal_code": "10001"}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.RedisServer]:
    """This module's own ``redis-server`` (every database of the shared one is taken)."""
    server = rig.RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def broker(redis_server: rig.RedisServer) -> str:
    url = redis_server.url(0)
    rig.flush_redis(url)
    return url


@pytest.fixture
def knm(mongo_url: str, mongo_db: Database[dict[str, Any]]) -> Iterator[Knm]:
    """knm in the test process, without the plugin: it only creates the account and reads."""
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=mongo_db.name))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def env(broker: str, mongo_url: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> Any:
    return rig.worker_env(broker, mongo_url, mongo_db.name, tmp_path / "worker-data", PLUGIN)


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _send(client: Celery, task: str, **kwargs: Any) -> Any:
    result = rig.wait_result(client.send_task(task, kwargs=kwargs, queue="knm"), 60.0)
    assert result.state == "SUCCESS", (result.result, result.traceback)
    return result


def test_the_plugins_queue_is_the_workers_without_naming_it(env: dict[str, str]) -> None:
    """A fresh process with the plugin in its environment consumes the plugin's queue."""
    script = "import json; from workers.app import all_queues; print(json.dumps(all_queues()))"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    queues = json.loads(done.stdout.strip().splitlines()[-1])
    builtin = all_queues(Settings())
    assert queues == ["knm", "celery", *sorted([*builtin[2:], "carrier.knm_fake"])]
    assert "carrier.knm_fake" not in builtin


def test_a_carrier_plugin_works_end_to_end_on_its_own_queue(
    knm: Knm, env: dict[str, str], client: Celery, tmp_path: Path
) -> None:
    knm.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
    with_plugin = Settings(carrier_plugins=[PLUGIN["KNM_CARRIER_PLUGINS"]])
    plugin_queues = [q for q in all_queues(with_plugin) if q not in all_queues(Settings())]
    assert plugin_queues == ["carrier.knm_fake"]
    logs = tmp_path / "logs"
    with rig.run_workers(env, [["knm"], plugin_queues], logs, label="plugin") as (a, b):
        # -- search: the carrier's settings reached it (stock 2), on A ----------------------
        found = _send(
            client,
            "knm.search",
            prefix="646555",
            quantity=5,
            account_id=ACCOUNT,
            carriers=["knm_fake"],
        )
        assert found.worker == a.name
        assert found.result == [
            {"number": n, "state": "discovery", "carrier_module": "knm_fake"}
            for n in ("+16465550001", "+16465550002")
        ]
        number = "+16465550001"

        # -- activate: validated and routed on A, bought on B -----------------------------
        activated = _send(client, "knm.numbers.activate", numbers=[number], account=ACCOUNT)
        assert (activated.worker, activated.name) == (b.name, "knm.carrier.run")
        doc = activated.result["succeeded"][number]
        assert (doc["pvt_state"], doc["pvt_assigned_to"]) == ("in_service", ACCOUNT)
        assert doc["pvt_carrier_module"] == "knm_fake"
        assert doc["pvt_carrier_data"] == {"order": f"fake-{number}"}
        assert f"knm.carrier.run[{activated.id}]" in b.log()

        # -- E911: the carrier's own provider, on B -----------------------------------------
        updated = _send(
            client, "knm.numbers.update", numbers=[number], public_fields={"e911": ADDRESS}
        )
        assert updated.worker == b.name
        assert updated.result["succeeded"][number]["pvt_features"] == {"e911": ADDRESS}

        # -- release: the provider removes the address, the carrier disconnects, on B -------
        released = _send(client, "knm.numbers.release", numbers=[number])
        assert released.worker == b.name
        doc = released.result["succeeded"][number]
        assert (doc["pvt_state"], doc.get("pvt_assigned_to")) == ("available", None)
        assert doc["pvt_carrier_module"] == "knm_fake"  # not local: back in the pool
        assert "pvt_features" not in doc

    calls = list(knm.store.db[CALLS].find({}, {"_id": 0}).sort("_id", 1))
    assert [(c["action"], c["number"]) for c in calls] == [
        ("acquire", number),
        ("e911_save", number),
        ("e911_delete", number),
        ("disconnect", number),
    ]
    assert {c["pid"] for c in calls} == {b.proc.pid}
    assert calls[0]["token_set"] is True
    stored = knm.store.numbers.find_one({"_id": number})
    assert stored is not None
    assert (stored["pvt_state"], stored["pvt_carrier_module"]) == ("available", "knm_fake")
    assert "plugin-secret" not in a.log() + b.log()
