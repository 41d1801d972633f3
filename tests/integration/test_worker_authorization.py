"""Authorization through the broker: ``send_task`` from another service, ``--via-broker``, a
share sent straight to a carrier queue, and ``knm status`` flagging queues nobody consumes.

One real worker (``knm``, ``celery`` and two local carriers' queues) serves the module on its
own Redis database; a second database has no worker at all, so whatever is published there
stays visible. The accounts are KAZOO's fixtures plus SIBLING beside CHILD.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from pymongo import MongoClient
from typer.testing import CliRunner, Result

from config.settings import Settings
from knm.services.facade import Knm
from tests import workers_rig as rig
from tests.fixtures_kazoo import ACCOUNT_4, CHILD, MASTER, RESELLER, Doc, load_kazoo, number_doc

pytestmark = pytest.mark.integration

BROKER_DB = 2  # this module's worker (dbs 0-1 and 3-15 belong to the other modules)
IDLE_DB = 4  # a broker database nobody consumes
SIBLING = "account0000000000000000000000005"
N1, N2 = "+14155550401", "+14155550402"
QUEUES = ["knm", "celery", "carrier.knm_local", "carrier.knm_inventory"]
FORBIDDEN = "requestor is unauthorized to perform operation"


@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture(scope="module")
def db_name(mongo_client: MongoClient[Doc]) -> Iterator[str]:
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def worker(
    broker: str, mongo_url: str, db_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rig.Worker]:
    tmp = tmp_path_factory.mktemp("authorization")
    env = rig.worker_env(broker, mongo_url, db_name, tmp / "worker-data")
    with rig.run_worker(env, QUEUES, tmp / "logs", label="auth") as running:
        yield running


@pytest.fixture
def knm(mongo_url: str, db_name: str, worker: rig.Worker) -> Iterator[Knm]:
    """The module's database emptied, then the accounts and SIBLING."""
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        for collection in app.store.db.list_collection_names():
            app.store.db[collection].delete_many({})
        load_kazoo(app.store.db)
        app.create_account(SIBLING, "Sibling", parent=RESELLER, allow_additions=True)
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _send(client: Celery, name: str, kwargs: Doc, **options: Any) -> Doc:
    result = client.send_task(name, kwargs=kwargs, queue="knm", **options)
    rig.wait_result(result, 30.0)
    assert result.state == "SUCCESS", (name, kwargs, result.result)
    value: Doc = result.result
    return value


def _carrier_keys(url: str) -> list[str]:
    """The ``carrier.*`` lists on a broker database (a message waiting on a carrier queue)."""
    conn = redis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in conn.scan_iter(match="carrier.*", _type="list"))
    finally:
        conn.close()


def _cli(env: dict[str, str]) -> Any:
    from knm.cli.root import cli

    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def _env(broker: str, mongo_url: str, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KNM_BROKER_URL": broker,
        "KNM_MONGODB_URL": mongo_url,
        "KNM_MONGODB_DB": db_name,
        "KNM_DATA_DIR": str(tmp_path / "cli-data"),
    }


def conflict(cause: str) -> Doc:
    return {
        "error": "request_id_conflict",
        "code": 409,
        "message": "request_id is already used by another request",
        "cause": cause,
    }


# ===================================================================== 1. the carrier choice
def test_send_task_naming_a_carrier_module_as_a_non_admin_gets_403(
    knm: Knm, client: Celery, broker: str, worker: rig.Worker
) -> None:
    kwargs = {
        "numbers": [N1],
        "account": RESELLER,
        "auth_by": RESELLER,
        "carrier_module": "knm_vitelity",
    }
    result = _send(client, "knm.numbers.create", kwargs)
    cause = "only system or a superduper admin may choose the carrier module ('knm_vitelity')"
    assert result == {
        "succeeded": {},
        "failed": {N1: {"error": "forbidden", "code": 403, "message": FORBIDDEN, "cause": cause}},
    }
    assert knm.store.numbers.count_documents({}) == 0
    assert _carrier_keys(broker) == []
    # an admin may name it (knm_local: nothing to buy)
    admin = {**kwargs, "auth_by": MASTER, "carrier_module": "knm_local"}
    assert list(_send(client, "knm.numbers.create", admin)["succeeded"]) == [N1]


def test_via_broker_naming_a_carrier_module_as_a_non_admin_gets_403(
    knm: Knm, broker: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    cli = _cli(_env(broker, mongo_url, db_name, tmp_path))
    out = json.loads(
        cli(
            *("numbers", "create", N1, "--account", RESELLER, "--auth-by", RESELLER),
            *("--carrier", "knm_vitelity", "--via-broker", "--timeout", "30", "--json"),
            code=1,
        ).stdout
    )
    assert out["succeeded"] == {}
    assert out["failed"][N1]["error"] == "forbidden"
    assert "choose the carrier module ('knm_vitelity')" in out["failed"][N1]["cause"]
    assert knm.store.numbers.count_documents({}) == 0


# ===================================================================== 2. unknown modules
def test_send_task_with_an_unknown_carrier_module_fails_at_once_and_publishes_nothing(
    knm: Knm, client: Celery, broker: str, worker: rig.Worker
) -> None:
    for module in ("knm_bogus", "knm_simwood"):
        result = _send(
            client,
            "knm.numbers.create",
            {"numbers": [N1], "account": RESELLER, "carrier_module": module},
        )
        assert result == {
            "succeeded": {},
            "failed": {
                N1: {
                    "error": "carrier_not_found",
                    "code": 400,
                    "message": f"carrier module {module} is not known",
                    "cause": module,
                }
            },
        }
    assert _carrier_keys(broker) == []
    assert knm.store.numbers.count_documents({}) == 0


def test_via_broker_with_an_unknown_module_fails_at_once_and_publishes_nothing(
    redis_url: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """No worker listens on this broker: a published request would wait out the timeout."""
    idle = rig.empty_redis_db(redis_url, IDLE_DB)
    cli = _cli(_env(idle, mongo_url, db_name, tmp_path))
    out = json.loads(
        cli(
            *("numbers", "create", N1, "--account", RESELLER, "--carrier", "knm_bogus"),
            *("--via-broker", "--timeout", "600", "--json"),
            code=1,
        ).stdout
    )
    assert out == {
        "succeeded": {},
        "failed": {
            N1: {
                "error": "carrier_not_found",
                "code": 400,
                "message": "carrier module knm_bogus is not known",
                "cause": "knm_bogus",
            }
        },
    }
    conn = redis.Redis.from_url(idle)
    try:
        assert conn.dbsize() == 0  # not a message, not a binding: nothing was published
    finally:
        conn.close()


def test_knm_status_flags_carrier_queues_nobody_consumes(
    knm: Knm, client: Celery, broker: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """A message left on ``carrier.knm_bogus`` (by an older producer): listed, no consumer."""
    client.send_task(
        "knm.carrier.run", args=[None, "get", {}, "r", "knm_bogus"], queue="carrier.knm_bogus"
    )
    try:
        rig.wait_until(lambda: _carrier_keys(broker) == ["carrier.knm_bogus"], 5.0)
        cli = _cli(_env(broker, mongo_url, db_name, tmp_path))
        report = json.loads(cli("status", "--json").stdout)
        assert report["queues"]["carrier.knm_bogus"] == 1
        assert report["consumers"]["carrier.knm_bogus"] == 0
        assert report["consumers"]["carrier.knm_local"] == 1  # the module's worker
        assert report["consumers"]["knm"] == 1
        assert report["unconsumed"] == ["carrier.knm_bogus"]
        text = cli("status").stdout
        assert "carrier.knm_bogus" in text
        assert "no consumer" in text
    finally:
        conn = redis.Redis.from_url(broker)
        try:
            conn.delete("carrier.knm_bogus")
        finally:
            conn.close()


# ===================================================================== 4. request ids
def test_another_account_reusing_a_request_id_gets_409_and_nothing_changes(
    knm: Knm, client: Celery, worker: rig.Worker
) -> None:
    """The review's example: another account sends the key RESELLER used; it must neither run
    nor receive RESELLER's stored documents."""
    knm.store.numbers.insert_many(
        [number_doc(N1, "available", "knm_inventory"), number_doc(N2, "available", "knm_inventory")]
    )
    request_id = f"rid-{uuid.uuid4().hex[:8]}"
    first_kwargs = {
        "numbers": [N1],
        "account": CHILD,
        "auth_by": RESELLER,
        "request_id": request_id,
    }
    first = _send(client, "knm.numbers.activate", first_kwargs)
    assert list(first["succeeded"]) == [N1]
    after = list(knm.store.numbers.find({}).sort("_id", 1))
    events = knm.store.db["request_outcomes"].count_documents({})

    owner = f"request_id '{request_id}' belongs to"
    attempts = [
        # another requester: any operation, even the very same payload
        (
            "knm.numbers.release",
            {"numbers": [N1], "auth_by": SIBLING},
            "another requester's request",
        ),
        (
            "knm.numbers.activate",
            {"numbers": [N1], "account": SIBLING, "auth_by": SIBLING},
            "another requester's request",
        ),
        (
            "knm.numbers.activate",
            {**first_kwargs, "auth_by": SIBLING},
            "another requester's request",
        ),
        # the same requester: another operation, other options, other numbers
        (
            "knm.numbers.release",
            {"numbers": [N1], "auth_by": RESELLER},
            "a request to activate, not to release",
        ),
        (
            "knm.numbers.activate",
            {**first_kwargs, "account": ACCOUNT_4},
            "a request to activate with other options",
        ),
        (
            "knm.numbers.activate",
            {**first_kwargs, "numbers": [N2]},
            "a request to activate other numbers",
        ),
    ]
    for name, kwargs, cause in attempts:
        result = _send(client, name, {**kwargs, "request_id": request_id})
        assert result == {
            "succeeded": {},
            "failed": {kwargs["numbers"][0]: conflict(f"{owner} {cause}")},
        }
    assert list(knm.store.numbers.find({}).sort("_id", 1)) == after
    assert knm.store.db["request_outcomes"].count_documents({}) == events
    # the first requester resending its request gets its first outcome
    assert _send(client, "knm.numbers.activate", first_kwargs) == first


def test_a_share_sent_straight_to_a_carrier_queue_with_another_requesters_id_gets_409(
    knm: Knm, client: Celery, worker: rig.Worker
) -> None:
    knm.store.numbers.insert_one(number_doc(N1, "available", "knm_local"))
    request_id = f"rid-{uuid.uuid4().hex[:8]}"
    mine = {"numbers": [N1], "account": CHILD, "auth_by": RESELLER, "request_id": request_id}
    assert list(_send(client, "knm.numbers.activate", mine)["succeeded"]) == [N1]
    after = knm.store.numbers.find_one({"_id": N1})
    share = {"numbers": [N1], "auth_by": SIBLING}
    result = client.send_task(
        "knm.carrier.run",
        args=[None, "release", share, request_id, "knm_local"],
        queue="carrier.knm_local",
    )
    rig.wait_result(result, 30.0)
    assert result.state == "SUCCESS", result.result
    assert result.result == {
        "succeeded": {},
        "failed": {
            N1: conflict(f"request_id '{request_id}' belongs to another requester's request")
        },
    }
    assert knm.store.numbers.find_one({"_id": N1}) == after
