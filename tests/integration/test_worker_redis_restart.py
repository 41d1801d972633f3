"""The broker goes away and comes back: a running worker reconnects by itself and serves again.

Design. The test owns a throwaway ``redis-server --save "" --appendonly no`` on a free port (the
machine's Redis is never touched). Without persistence, whatever Redis holds when it stops
(queued messages, results, bindings) is gone, so "queue tasks, stop Redis, start it, expect them
to run" cannot hold and is not what this test claims. The realistic sequence is:

1. A worker (one process, solo pool) serves a first request: the setup works.
2. Redis shuts down (``SHUTDOWN NOSAVE``) while the worker idles on its queues; the worker logs
   that it lost the broker and keeps retrying (same process, not restarted).
3. Redis starts again on the same port, empty.
4. A producer publishes new requests; the *same* worker process (it reconnected and declared its
   queues again) runs them; results and documents are correct.

Step 2 also covers a worker that loses the broker with nothing in flight; a task in flight at
that moment would have its message, unacknowledged, vanish with Redis' memory: without Redis
persistence that is data loss by configuration, not something a worker can fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from knm.services.facade import Knm
from tests import workers_rig as rig

pytestmark = pytest.mark.integration

ACCOUNT = "e5" * 16
BEFORE, AFTER = "+17185550130", ["+17185550131", "+17185550132"]

Doc = dict[str, Any]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[rig.RedisServer]:
    server = rig.RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def knm(mongo_url: str, db_name: str) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        app.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
        yield app
    finally:
        app.close()


def _create(numbers: list[str]) -> Doc:
    return {"numbers": numbers, "account": ACCOUNT, "state": "in_service"}


def test_the_worker_reconnects_after_redis_restarts_and_serves_new_requests(
    redis_server: rig.RedisServer, knm: Knm, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    broker = redis_server.url()
    env = rig.worker_env(broker, mongo_url, db_name, tmp_path / "data")
    queues = ["knm", "celery", "carrier.knm_local"]
    with rig.run_worker(env, queues, tmp_path / "logs", label="rr") as worker:
        pid = worker.proc.pid
        client = rig.producer(broker)
        try:
            first = client.send_task("knm.numbers.create", kwargs=_create([BEFORE]), queue="knm")
            rig.wait_result(first)
            assert first.state == "SUCCESS", first.result
        finally:
            client.close()

        redis_server.shutdown()
        worker.wait_for_log("Connection to broker lost", 20.0)
        worker.wait_for_log("Cannot connect to redis://", 20.0)  # at least one failed retry
        assert worker.alive()
        redis_server.start()  # same port, empty

        client = rig.producer(broker)
        try:
            sent = [
                client.send_task("knm.numbers.create", kwargs=_create([number]), queue="knm")
                for number in AFTER
            ]
            values = []
            for result in sent:
                rig.wait_result(result, 30.0)
                assert result.state == "SUCCESS", (result.result, worker.tail())
                assert result.worker == worker.name
                values.append(result.result)
            # a read through the plain default queue ("celery"): everything is there
            read = client.send_task("knm.numbers.get", kwargs={"numbers": [BEFORE, *AFTER]})
            rig.wait_result(read, 30.0)
            assert read.state == "SUCCESS", (read.result, worker.tail())
            values.append(read.result)
        finally:
            client.close()
        assert worker.proc.pid == pid
        assert worker.alive(), "the same worker process served before and after the restart"

    *created, got = values
    for number, value in zip(AFTER, created, strict=True):
        assert list(value["succeeded"]) == [number]
        assert value["failed"] == {}
    assert sorted(got["succeeded"]) == sorted([BEFORE, *AFTER])
    docs = {d["_id"]: d for d in knm.store.numbers.find({})}
    assert sorted(docs) == sorted([BEFORE, *AFTER])
    for number in AFTER:
        assert docs[number]["pvt_state"] == "in_service"
        assert docs[number]["pvt_rev"] == 1
