"""Routing through real workers: a number's carrier work runs on its carrier's queue.

Workers are real ``celery -A workers.app worker`` processes; the producer is a plain Celery
client calling ``send_task("knm.numbers.activate", kwargs=..., queue="knm")`` like any service.
Worker A consumes only ``knm`` (validation and routing), worker B only ``carrier.knm_managed``,
worker C (started late) only ``carrier.knm_local``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from pymongo.database import Database

from config.settings import Settings
from knm.services import numbers_requests as requests
from knm.services.facade import Knm
from knm.services.numbers_requests import Operation
from knm.services.search import SearchQuery
from tests import workers_rig as rig

pytestmark = pytest.mark.integration

BROKER_DB = 13  # Redis dbs: 5, 6, 7, 9, 12, 13 are the test_worker_* modules
ACCOUNT = "a1" * 16
MANAGED = ["+12025550140", "+12025550141"]
LOCAL = "+13125550170"


@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture
def knm(mongo_url: str, mongo_db: Database[dict[str, Any]]) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=mongo_db.name))
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def env(broker: str, mongo_url: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> Any:
    return rig.worker_env(broker, mongo_url, mongo_db.name, tmp_path / "worker-data")


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _seed(knm: Knm) -> None:
    """An account with managed inventory (discovered by a search) and one local number."""
    knm.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
    report = knm.generate_numbers("managed", ACCOUNT, int(MANAGED[0][1:]), len(MANAGED))
    assert report["errors"] == {}
    found = knm.search(
        SearchQuery(prefix="202555", quantity=5, account_id=ACCOUNT, carriers=["knm_managed"])
    )
    assert {r.number: r.carrier_module for r in found} == dict.fromkeys(MANAGED, "knm_managed")
    created = requests.execute(
        knm,
        Operation.CREATE,
        requests.parse(
            Operation.CREATE, {"numbers": [LOCAL], "account": ACCOUNT, "state": "available"}
        ),
    )
    assert list(created["succeeded"]) == [LOCAL], created


def _activate(client: Celery, number: str) -> Any:
    return client.send_task(
        "knm.numbers.activate", kwargs={"numbers": [number], "account": ACCOUNT}, queue="knm"
    )


def test_carrier_work_runs_on_the_carrier_queue_and_a_missing_carrier_worker_blocks_no_other(
    knm: Knm, env: dict[str, str], client: Celery, broker: str, tmp_path: Path
) -> None:
    _seed(knm)
    logs = tmp_path / "logs"
    with rig.run_workers(env, [["knm"], ["carrier.knm_managed"]], logs, label="ab") as (a, b):
        # -- a knm_managed number: validated on A, executed on B ------------------------------
        result = rig.wait_result(_activate(client, MANAGED[0]))
        assert result.state == "SUCCESS", (result.result, result.traceback)
        assert result.worker == b.name
        assert result.name == "knm.carrier.run"
        assert result.retries == 0
        doc = result.result["succeeded"][MANAGED[0]]
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == ACCOUNT
        assert doc["pvt_carrier_module"] == "knm_managed"
        assert doc["pvt_request_id"] == result.id
        assert result.result["failed"] == {}

        stored = knm.store.numbers.find_one({"_id": MANAGED[0]})
        assert stored is not None
        assert stored["pvt_state"] == "in_service"
        assert stored["pvt_carrier_module"] == "knm_managed"
        assert stored["pvt_request_id"] == result.id
        inventory = knm.store.db["numbers_managed"].find_one({"_id": MANAGED[0]})
        assert inventory is not None
        assert inventory["pvt_state"] == "in_service"
        assert inventory["pvt_assigned_to"] == ACCOUNT
        assert f"knm.numbers.activate[{result.id}]" in a.log()
        assert "Task knm.carrier.run[" not in a.log()
        assert f"knm.carrier.run[{result.id}]" in b.log()

        # -- bulkhead: nobody consumes carrier.knm_local yet ------------------------------------
        local = _activate(client, LOCAL)
        managed = rig.wait_result(_activate(client, MANAGED[1]))
        assert managed.state == "SUCCESS", (managed.result, managed.traceback)
        assert managed.worker == b.name
        assert list(managed.result["succeeded"]) == [MANAGED[1]]
        # A routed the local share to carrier.knm_local, where it waits: no other queue blocked
        queued = redis.Redis.from_url(broker)
        try:
            rig.wait_until(
                lambda: queued.llen("carrier.knm_local") == 1, 10.0, what="the local share queued"
            )
        finally:
            queued.close()
        # not done: STARTED is what A recorded before it replaced itself (task_track_started)
        assert not local.ready()
        assert local.state in {"PENDING", "STARTED"}
        stored_local = knm.store.numbers.find_one({"_id": LOCAL})
        assert stored_local is not None
        assert stored_local["pvt_state"] == "available"
        assert f"knm.carrier.run[{local.id}]" not in b.log()

        # -- a knm_local worker arrives: the waiting share runs there ------------------------------
        with rig.run_worker(env, ["carrier.knm_local"], logs, label="c") as c:
            done = rig.wait_result(local)
            assert done.state == "SUCCESS", (done.result, done.traceback)
            assert done.worker == c.name
        assert done.result["failed"] == {}
        assert done.result["succeeded"][LOCAL]["pvt_state"] == "in_service"
        stored_local = knm.store.numbers.find_one({"_id": LOCAL})
        assert stored_local is not None
        assert stored_local["pvt_state"] == "in_service"
        assert stored_local["pvt_assigned_to"] == ACCOUNT
        assert stored_local["pvt_request_id"] == local.id
