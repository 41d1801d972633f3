"""One request sequence through Redis and through RabbitMQ: the same results.

Both runs use knm's default result backend: the Redis broker itself, and for an AMQP broker
knm's MongoDB (``rpc://`` cannot deliver the result of a routed request: the share that
produces it is published by a worker, not by the caller).

Each broker gets its own worker (consuming every queue) and its own fresh database, then runs
the same sequence: create two knm_local numbers, activate one of them together with a
knm_managed number (two carrier queues: a chain replacing the routing task), release both.
Results and stored documents must be equal across brokers once timestamps and
``pvt_request_id`` (the task id) are removed; ``pvt_rev`` must be equal too.

RabbitMQ is part of the machine: if it does not answer, the test fails (it is not skipped).
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from pymongo import MongoClient

from config.settings import Settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from workers.celery_config import mongodb_backend_url

pytestmark = pytest.mark.integration

#: Redis broker of the Redis run; dbs 5, 6, 7, 9, 12, 13 are the test_worker_* modules.
REDIS_DB = 6
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
QUEUES = ["knm", "celery", "carrier.knm_local", "carrier.knm_managed"]
ACCOUNT = "f6" * 16
N1, N2 = "+13035550150", "+13035550151"
M1 = "+12025550160"

SEQUENCE: list[tuple[str, dict[str, Any]]] = [
    ("knm.numbers.create", {"numbers": [N1, N2], "account": ACCOUNT, "state": "available"}),
    ("knm.numbers.activate", {"numbers": [N1, M1], "account": ACCOUNT}),
    ("knm.numbers.release", {"numbers": [N1, M1]}),
]
VOLATILE = {"pvt_created", "pvt_modified", "pvt_request_id", "pvt_request_ids"}

Doc = dict[str, Any]


def _stable(value: Any) -> Any:
    """``value`` without timestamps and request ids (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def amqp_url() -> str:
    """RabbitMQ must answer; its knm queues are purged so nothing stale is consumed."""
    try:
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
            for name in QUEUES:
                channel = conn.channel()
                # a queue that does not exist yet has nothing to purge (and the 404 closes
                # the channel)
                with contextlib.suppress(Exception):
                    channel.queue_purge(name)
                with contextlib.suppress(Exception):
                    channel.close()
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ at {AMQP_URL} does not answer ({type(exc).__name__}: {exc}); "
            "it is part of this machine's test setup: start rabbitmq-server"
        )
    return AMQP_URL


@pytest.fixture(scope="module")
def redis_broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, REDIS_DB)


def _run_sequence(
    broker: str,
    backend: str | None,
    mongo_url: str,
    mongo_client: MongoClient[Doc],
    tmp: Path,
) -> tuple[list[Doc], dict[str, Doc]]:
    """The sequence on a fresh database through ``broker``: results, and final documents."""
    db_name = f"knm_test_{uuid.uuid4().hex[:8]}"
    knm = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        knm.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
        assert knm.generate_numbers("managed", ACCOUNT, int(M1[1:]), 1)["errors"] == {}
        found = knm.search(
            SearchQuery(prefix=M1[2:8], account_id=ACCOUNT, carriers=["knm_managed"])
        )
        assert [r.number for r in found] == [M1]

        extra = {"KNM_RESULT_BACKEND": backend} if backend else {}
        env = rig.worker_env(broker, mongo_url, db_name, tmp / "data", extra)
        if backend is None and not broker.startswith("redis"):
            backend = mongodb_backend_url(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
        client = rig.producer(broker, backend)
        results: list[Doc] = []
        try:
            with rig.run_worker(env, QUEUES, tmp / "logs", label="brk", pool="prefork") as worker:
                for name, kwargs in SEQUENCE:
                    result = client.send_task(name, kwargs=kwargs, queue="knm")
                    rig.wait_result(result, 30.0)
                    assert result.state == "SUCCESS", (broker, name, result.result, worker.tail())
                    value: Doc = result.result
                    assert value["failed"] == {}, (broker, name, value)
                    for doc in value["succeeded"].values():
                        assert doc["pvt_request_id"] == result.id
                    results.append(value)
        finally:
            client.close()
        docs = {d["_id"]: d for d in knm.store.numbers.find({})}
        docs.update({f"inventory:{d['_id']}": d for d in knm.store.db["numbers_managed"].find({})})
        return results, docs
    finally:
        knm.close()
        mongo_client.drop_database(db_name)


def test_redis_and_rabbitmq_give_the_same_results(
    redis_broker: str,
    amqp_url: str,
    redis_url: str,
    mongo_url: str,
    mongo_client: MongoClient[Doc],
    tmp_path: Path,
) -> None:
    redis_results, redis_docs = _run_sequence(
        redis_broker, None, mongo_url, mongo_client, tmp_path / "redis"
    )
    amqp_results, amqp_docs = _run_sequence(
        amqp_url, None, mongo_url, mongo_client, tmp_path / "amqp"
    )
    assert _stable(amqp_results) == _stable(redis_results)
    assert _stable(amqp_docs) == _stable(redis_docs)

    # and the sequence did what it says
    assert sorted(redis_docs) == sorted([N2, M1, f"inventory:{M1}"])  # N1 (knm_local) released
    assert redis_docs[N2]["pvt_state"] == "available"
    assert (redis_docs[M1]["pvt_state"], redis_docs[M1]["pvt_rev"]) == ("available", 2)
    assert redis_docs[f"inventory:{M1}"]["pvt_state"] == "available"
    assert [sorted(r["succeeded"]) for r in redis_results] == [
        sorted(kwargs["numbers"]) for _, kwargs in SEQUENCE
    ]
