"""Per-carrier throughput control with real workers: a rate limit shared by two worker
processes, and an open circuit breaker that holds one carrier back without slowing the others.

The coordination Redis is the broker's (this module's database), as in a default deployment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from carriers.sandbox import Sandbox, SandboxClient
from config.settings import Settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from tests.carriers_rig import sandbox_worker_env

pytestmark = pytest.mark.integration

BROKER_DB = 0  # this module's Redis database (test_jobs_reliability's db 0 is on its own server)
ACCOUNT = "f2" * 16
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.redis_db(redis_url, BROKER_DB)


def _env(
    sandbox_server: Sandbox,
    broker: str,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **extra: str,
) -> dict[str, str]:
    rig.flush_redis(broker)  # queues and the knm:* coordination keys
    # this process coordinates through the broker's Redis too (knm status reads it)
    monkeypatch.setenv("KNM_BROKER_URL", broker)
    return sandbox_worker_env(
        sandbox_server,
        monkeypatch,
        broker,
        mongo_url,
        db_name,
        tmp_path / "data",
        KNM_CARRIER_RETRY_BASE_S="0.2",
        KNM_CARRIER_RETRY_MAX_S="0.5",
        **extra,
    )


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _knm(mongo_url: str, db_name: str) -> Knm:
    knm = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    knm.create_account(ACCOUNT, "Bulk buyer", allow_additions=True, reseller=True)
    return knm


def _discover(knm: Knm, module: str, prefix: str, quantity: int) -> list[str]:
    results = knm.search(
        SearchQuery(prefix=prefix, quantity=quantity, account_id=ACCOUNT, carriers=[module])
    )
    assert len(results) == quantity, results
    return [r.number for r in results]


def _activate(client: Celery, number: str) -> Any:
    return client.send_task(
        "knm.numbers.activate", kwargs={"numbers": [number], "account": ACCOUNT}, queue="knm"
    )


def test_a_rate_limit_of_10_per_second_holds_across_two_worker_processes(
    sandbox_server: Sandbox,
    sandbox: SandboxClient,
    broker: str,
    mongo_url: str,
    db_name: str,
    client: Celery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(
        sandbox_server,
        broker,
        mongo_url,
        db_name,
        tmp_path,
        monkeypatch,
        KNM_CARRIERS__TELNYX__RATE_LIMIT_PER_S="10",
    )
    knm = _knm(mongo_url, db_name)
    try:
        numbers = _discover(knm, "knm_telnyx", "646555", 36)
    finally:
        knm.close()
    queues = ["knm", "carrier.knm_telnyx"]
    coordination = redis.Redis.from_url(broker)
    with rig.run_workers(env, [queues, queues], tmp_path / "logs", pool="threads", concurrency=6):
        # the shared sequence of send slots starts 2 s from now (on Redis's clock, which the
        # limit reads): a process limiting itself alone would send before then
        seconds, micros = coordination.time()
        first_slot = float(seconds) + float(micros) / 1e6 + 2.0
        coordination.set("knm:rate:knm_telnyx", f"{first_slot:.6f}", px=120_000)
        results = [_activate(client, n) for n in numbers]
        done = [rig.wait_result(r, 90.0) for r in results]
    coordination.close()
    assert {d.state for d in done} == {"SUCCESS"}
    assert all(d.result["failed"] == {} for d in done)
    workers = {d.worker for d in done}
    assert len(workers) == 2, workers  # both processes bought numbers
    orders = sorted(
        c["at"] for c in sandbox.calls() if c["provider"] == "telnyx" and c["endpoint"] == "order"
    )
    assert len(orders) == len(numbers)
    rate = (len(orders) - 1) / (orders[-1] - orders[0])
    print(f"telnyx orders: {rate:.2f}/s across {sorted(workers)}")
    # the limit, counted: by any moment, the two processes together sent at most one order per
    # 0.1 s since the first slot (the k-th order reached the sandbox no earlier than the k-th
    # slot). A loaded machine only sends later, never sooner.
    late = [k for k, at in enumerate(orders) if at < first_slot + k / 10 - 0.002]
    assert late == [], f"orders sent before their slot: {late}"


def test_an_open_breaker_holds_its_carrier_back_without_slowing_the_others(
    sandbox_server: Sandbox,
    sandbox: SandboxClient,
    broker: str,
    mongo_url: str,
    db_name: str,
    client: Celery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _env(
        sandbox_server,
        broker,
        mongo_url,
        db_name,
        tmp_path,
        monkeypatch,
        KNM_CARRIER_HTTP__BREAKER_FAILURES="2",
        KNM_CARRIER_HTTP__BREAKER_OPEN_S="20",
        KNM_TASK_MAX_RETRIES="5",
    )
    knm = _knm(mongo_url, db_name)
    try:
        telnyx = _discover(knm, "knm_telnyx", "718555", 3)
        vitelity = _discover(knm, "knm_vitelity", "312555", 6)
    finally:
        knm.close()
    sandbox.fault("status", provider="telnyx", match="order", status=503, retry_after=0, times=None)
    # one worker, one process, every queue: the harshest case for a bulkhead
    queues = ["knm", "carrier.knm_telnyx", "carrier.knm_vitelity"]
    with rig.run_workers(env, [queues], tmp_path / "logs", concurrency=1) as (worker,):
        held = [_activate(client, n) for n in telnyx]
        rig.wait_until(lambda: _breaker(env) == "open", 30, what="the telnyx breaker to open")
        orders_when_open = sandbox.requests("telnyx")["order"]
        started = time.monotonic()
        fast = [rig.wait_result(_activate(client, n), 20.0) for n in vitelity]
        elapsed = time.monotonic() - started
        assert {d.state for d in fast} == {"SUCCESS"}, [d.result for d in fast]
        assert all(d.result["failed"] == {} for d in fast)
        assert not any(r.ready() for r in held), "telnyx requests wait, they do not fail"
        # the breaker holds: no order went to telnyx while it was open
        assert sandbox.requests("telnyx")["order"] == orders_when_open
        status = _status(env)
        # the vitelity purchases were all done while the telnyx breaker was still open (it
        # stays open KNM_CARRIER_HTTP__BREAKER_OPEN_S): they did not wait behind it
        assert status["carriers"]["knm_telnyx"]["breaker"] == "open"
        assert status["carriers"]["knm_vitelity"]["breaker"] == "closed"
        assert any(
            "HTTP 503" in f["reason"] for f in status["carriers"]["knm_telnyx"]["recent_failures"]
        )
        # telnyx recovers: after the open period one probe goes, succeeds, the rest follow
        sandbox.reset()
        done = [rig.wait_result(r, 60.0) for r in held]
    print(f"6 vitelity purchases behind an open telnyx breaker: {elapsed:.2f} s")
    assert all(d.result["failed"] == {} for d in done), [d.result for d in done]
    assert sorted(sandbox.purchases("telnyx")) == sorted(telnyx)
    assert worker.name


def _status(env: dict[str, str]) -> dict[str, Any]:
    shown = subprocess.run(
        [sys.executable, "-m", "knm", "status", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def _breaker(env: dict[str, str]) -> str:
    return str(_status(env)["carriers"]["knm_telnyx"]["breaker"])
