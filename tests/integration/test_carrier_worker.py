"""Buying through real workers: the order runs on the carrier's queue, and a worker SIGKILLed in
the middle of an order leaves the number bought exactly once.

The crash is deterministic: the sandbox takes the order (the purchase is recorded upstream) and
then holds its answer (``stall_after``), so worker B hangs inside the order call with the effect
done but unknown to it. The test SIGKILLs B's process group; nothing is acknowledged and the
ledger's intent for the number stays ``pending``. Past the broker's visibility timeout a new
worker C restores the message and reruns the share: the ledger's lease has expired, so C asks the
provider whether the number is ours (it is) instead of ordering again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from carriers.sandbox import Sandbox, SandboxClient
from config.settings import Settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from tests.carriers_rig import sandbox_worker_env

pytestmark = pytest.mark.integration

BROKER_DB = 1  # this module's Redis database
VISIBILITY_TIMEOUT_S = 3
ACCOUNT = "c7" * 16
MODULE = "knm_telnyx"


@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture
def env(
    sandbox_server: Sandbox,
    broker: str,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    return sandbox_worker_env(
        sandbox_server,
        monkeypatch,
        broker,
        mongo_url,
        db_name,
        tmp_path / "data",
        KNM_CARRIER_HTTP__TIMEOUT_S="60",  # B waits for the held answer until it is killed
        KNM_CARRIER_HTTP__ORDER_LEASE_S="2",
        KNM_BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
        # below the visibility timeout, as knm requires (the solo pool does not enforce it)
        KNM_TASK_TIME_LIMIT_S=str(VISIBILITY_TIMEOUT_S - 1),
    )


@pytest.fixture
def knm(env: dict[str, str], mongo_url: str, db_name: str) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        app.create_account(ACCOUNT, "Buyer", allow_additions=True, reseller=True)
        yield app
    finally:
        app.close()


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _discover(knm: Knm) -> str:
    results = knm.search(
        SearchQuery(prefix="718555", quantity=1, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert [r.carrier_module for r in results] == [MODULE]
    return results[0].number


def test_activate_buys_on_the_carrier_queue(
    env: dict[str, str], knm: Knm, client: Celery, sandbox: SandboxClient, tmp_path: Path
) -> None:
    number = _discover(knm)
    with rig.run_workers(env, [["knm"], [f"carrier.{MODULE}"]], tmp_path / "logs") as (_a, b):
        result = client.send_task(
            "knm.numbers.activate", kwargs={"numbers": [number], "account": ACCOUNT}, queue="knm"
        )
        done = rig.wait_result(result, 30.0)
        assert done.state == "SUCCESS", (done.result, b.tail())
        assert done.worker == b.name  # the carrier's share ran on the carrier's queue
    assert done.result["failed"] == {}
    assert done.result["succeeded"][number]["pvt_state"] == "in_service"
    assert done.result["succeeded"][number]["pvt_carrier_data"]["order_id"]
    assert sandbox.purchases("telnyx") == {number: 1}


def test_sigkill_in_the_middle_of_an_order_buys_exactly_once(
    env: dict[str, str], knm: Knm, client: Celery, sandbox: SandboxClient, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    number = _discover(knm)
    sandbox.fault("stall_after", provider="telnyx", match="order", stall_s=60)
    queues = ["knm", f"carrier.{MODULE}"]
    b = rig.start_worker(env, queues, logs, label="b")
    c: rig.Worker | None = None
    try:
        result = client.send_task(
            "knm.numbers.activate", kwargs={"numbers": [number], "account": ACCOUNT}, queue="knm"
        )
        # the provider took the order; B is waiting for an answer that is held back
        rig.wait_until(
            lambda: sandbox.purchases("telnyx") == {number: 1}, 30, what="the order upstream"
        )
        ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
        assert ledger is not None
        assert ledger["status"] == "pending"  # intent recorded before the call
        b.kill()
        assert not result.ready()
        assert knm.store.find_numbers([number]) == {}  # B never saved the number
        # past the visibility timeout (and the ledger's 2 s lease) a new worker restores it
        time.sleep(VISIBILITY_TIMEOUT_S + 0.5)
        c = rig.start_worker(env, queues, logs, label="c")
        done = rig.wait_result(result, 45.0)
        assert done.state == "SUCCESS", (done.result, done.traceback, c.tail())
        assert done.worker == c.name
    finally:
        rig.stop_all([b, c])

    assert done.result["failed"] == {}
    assert sandbox.purchases("telnyx") == {number: 1}, "bought exactly once"
    requests = sandbox.requests("telnyx")
    assert requests["order"] == 1  # C asked instead of ordering again
    assert requests["number"] == 1
    doc = knm.store.find_numbers([number])[number]
    assert doc["pvt_state"] == "in_service"
    assert doc["pvt_assigned_to"] == ACCOUNT
    assert doc["pvt_rev"] == 1
    ledger = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert ledger is not None
    assert ledger["status"] == "done"
    assert [e["what"] for e in ledger["events"]] == ["intent", "reconcile", "reconciled"]
