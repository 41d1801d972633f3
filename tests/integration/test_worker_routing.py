"""Routing through real workers: a number's carrier work runs on its carrier's queue.

Workers are real ``celery -A workers.app worker`` processes; the producer is a plain Celery
client calling ``send_task("knm.numbers.activate", kwargs=..., queue="knm")`` like any service.
Worker A consumes only ``knm`` (validation, routing, and the local carriers' work, which takes
no second hop), worker B only ``carrier.knm_managed``, worker C (started late) only
``carrier.knm_inum``. A producer that names the carrier queue is served there in one hop; a
number published to another carrier's queue is forwarded to its own.
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
MANAGED = ["+12025550140", "+12025550141", "+12025550142", "+12025550143"]
INUM = "+13035550180"
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
    report = knm.generate_numbers("inum", ACCOUNT, int(INUM[1:]), 1)
    assert report["errors"] == {}
    found = knm.search(
        SearchQuery(prefix="303555", quantity=5, account_id=ACCOUNT, carriers=["knm_inum"])
    )
    assert {r.number: r.carrier_module for r in found} == {INUM: "knm_inum"}
    created = requests.execute(
        knm,
        Operation.CREATE,
        requests.parse(
            Operation.CREATE, {"numbers": [LOCAL], "account": ACCOUNT, "state": "available"}
        ),
    )
    assert list(created["succeeded"]) == [LOCAL], created


def _activate(client: Celery, number: str, queue: str = "knm") -> Any:
    return client.send_task(
        "knm.numbers.activate", kwargs={"numbers": [number], "account": ACCOUNT}, queue=queue
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

        # -- a local number: done on A itself, no second hop -------------------------------
        local = rig.wait_result(_activate(client, LOCAL))
        assert local.state == "SUCCESS", (local.result, local.traceback)
        assert (local.worker, local.name) == (a.name, "knm.numbers.activate")
        assert local.result["failed"] == {}
        assert local.result["succeeded"][LOCAL]["pvt_state"] == "in_service"
        stored_local = knm.store.numbers.find_one({"_id": LOCAL})
        assert stored_local is not None
        assert stored_local["pvt_state"] == "in_service"
        assert stored_local["pvt_assigned_to"] == ACCOUNT
        assert stored_local["pvt_request_id"] == local.id
        assert f"knm.carrier.run[{local.id}]" not in a.log() + b.log()

        # -- bulkhead: nobody consumes carrier.knm_inum yet -----------------------------------
        inum = _activate(client, INUM)
        managed = rig.wait_result(_activate(client, MANAGED[1]))
        assert managed.state == "SUCCESS", (managed.result, managed.traceback)
        assert managed.worker == b.name
        assert list(managed.result["succeeded"]) == [MANAGED[1]]
        # A routed the inum share to carrier.knm_inum, where it waits: no other queue blocked
        queued = redis.Redis.from_url(broker)
        try:
            rig.wait_until(
                lambda: queued.llen("carrier.knm_inum") == 1, 10.0, what="the inum share queued"
            )
        finally:
            queued.close()
        # not done: STARTED is what A recorded before it forwarded the share
        assert not inum.ready()
        assert inum.state in {"PENDING", "STARTED"}
        assert knm.store.numbers.find_one({"_id": INUM}) is None  # still only discovered
        assert f"knm.carrier.run[{inum.id}]" not in b.log()

        # -- one hop: a producer naming the carrier's queue is served there directly --------
        direct = rig.wait_result(_activate(client, MANAGED[2], "carrier.knm_managed"))
        assert direct.state == "SUCCESS", (direct.result, direct.traceback)
        assert (direct.worker, direct.name) == (b.name, "knm.numbers.activate")
        assert direct.result["succeeded"][MANAGED[2]]["pvt_state"] == "in_service"
        assert f"knm.carrier.run[{direct.id}]" not in b.log()
        assert direct.id not in a.log()

        # -- a knm_inum worker arrives: the waiting share runs there --------------------------
        with rig.run_worker(env, ["carrier.knm_inum"], logs, label="c") as c:
            done = rig.wait_result(inum)
            assert done.state == "SUCCESS", (done.result, done.traceback)
            assert (done.worker, done.name) == (c.name, "knm.carrier.run")
            assert done.result["failed"] == {}
            assert done.result["succeeded"][INUM]["pvt_state"] == "in_service"
            stored = knm.store.numbers.find_one({"_id": INUM})
            assert stored is not None
            assert stored["pvt_state"] == "in_service"
            assert stored["pvt_assigned_to"] == ACCOUNT
            assert stored["pvt_request_id"] == inum.id

            # -- the wrong queue: C verifies the stored module and forwards to B ---------------
            wrong = rig.wait_result(_activate(client, MANAGED[3], "carrier.knm_inum"))
            assert wrong.state == "SUCCESS", (wrong.result, wrong.traceback)
            assert (wrong.worker, wrong.name) == (b.name, "knm.carrier.run")
            assert wrong.result["succeeded"][MANAGED[3]]["pvt_carrier_module"] == "knm_managed"
            assert f"knm.numbers.activate[{wrong.id}]" in c.log()
            assert f"knm.carrier.run[{wrong.id}]" not in c.log()
