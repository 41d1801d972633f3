"""Background provisioning for other services: caller-chosen request ids, outcome events to
``reply_to`` and the ``knm.events`` exchange, dead letters and their retry, ``knm requests``.

Real workers on Redis, the sandbox over HTTP, plain Celery and kombu clients as the other
service (no knm configuration on the client side).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from carriers.sandbox import Sandbox, SandboxClient
from config.settings import Settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from tests.carriers_rig import sandbox_worker_env

pytestmark = pytest.mark.integration

BROKER_DB = 8  # this module's Redis database
ACCOUNT = "e1" * 16
MODULE = "knm_telnyx"
QUEUES = ["knm", f"carrier.{MODULE}"]
ROOT = Path(__file__).resolve().parents[2]


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
        KNM_CARRIER_RETRY_BASE_S="0.2",
        KNM_CARRIER_RETRY_MAX_S="0.5",
        KNM_TASK_MAX_RETRIES="2",
    )


@pytest.fixture
def knm(env: dict[str, str], mongo_url: str, db_name: str) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        app.create_account(ACCOUNT, "Portal customer", allow_additions=True, reseller=True)
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


def _discover(knm: Knm, prefix: str, quantity: int = 1) -> list[str]:
    results = knm.search(
        SearchQuery(prefix=prefix, quantity=quantity, account_id=ACCOUNT, carriers=[MODULE])
    )
    assert len(results) == quantity
    return [r.number for r in results]


def _activate(client: Celery, numbers: list[str], **extra: Any) -> Any:
    return client.send_task(
        "knm.numbers.activate",
        kwargs={"numbers": numbers, "account": ACCOUNT, **extra},
        queue="knm",
    )


def _drain(conn: Connection, queue: Queue, want: int, timeout_s: float) -> list[dict[str, Any]]:
    """Read ``want`` JSON messages from ``queue`` (acknowledging them)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    simple = conn.SimpleQueue(queue)
    try:
        while len(got) < want and time.monotonic() < deadline:
            try:
                message = simple.get(timeout=0.5)
            except simple.Empty:
                continue
            got.append(dict(message.payload))
            message.ack()
    finally:
        simple.close()
    return got


def _knm_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knm", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_same_request_id_twice_concurrently_buys_once_with_identical_outcomes(
    env: dict[str, str], knm: Knm, client: Celery, sandbox: SandboxClient, tmp_path: Path
) -> None:
    number = _discover(knm, "917555")[0]
    sandbox.configure(latency_ms=400)  # both requests are in flight at once
    request_id = f"portal-{uuid.uuid4().hex}"
    logs = tmp_path / "logs"
    with rig.run_workers(env, [QUEUES, QUEUES], logs, pool="threads", concurrency=4):
        results: list[Any] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(_activate(client, [number], request_id=request_id))
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = [rig.wait_result(r, 60.0) for r in results]
    assert [d.state for d in done] == ["SUCCESS", "SUCCESS"], [d.result for d in done]
    first, second = (d.result for d in done)
    assert first == second
    assert first["failed"] == {}
    assert first["succeeded"][number]["pvt_state"] == "in_service"
    assert sandbox.purchases("telnyx") == {number: 1}
    assert sandbox.requests("telnyx")["order"] == 1
    # and the same key once more, later: the first outcome, no effect
    with rig.run_workers(env, [QUEUES], logs):
        again = rig.wait_result(_activate(client, [number], request_id=request_id), 30.0)
    assert again.result == first
    assert sandbox.requests("telnyx")["order"] == 1


def test_outcome_events_reach_reply_to_and_the_events_exchange(
    env: dict[str, str],
    broker: str,
    knm: Knm,
    client: Celery,
    sandbox: SandboxClient,
    tmp_path: Path,
) -> None:
    bought, missing = _discover(knm, "929555")[0], "+19295550000"
    request_id = f"portal-{uuid.uuid4().hex}"
    reply_to = f"portal.replies.{uuid.uuid4().hex[:8]}"
    exchange = Exchange("knm.events", type="topic", durable=True)
    audit = Queue(f"audit-{uuid.uuid4().hex[:8]}", exchange, routing_key="number.activate.#")
    with Connection(broker) as conn:
        audit.maybe_bind(conn)
        audit.declare()  # an auditing service listening to every activation
        with rig.run_workers(env, [QUEUES], tmp_path / "logs"):
            result = _activate(client, [bought, missing], request_id=request_id, reply_to=reply_to)
            done = rig.wait_result(result, 45.0)
            assert done.state == "SUCCESS", done.result
            replies = _drain(conn, Queue(reply_to, durable=True), 2, 15.0)
            audited = _drain(conn, audit, 2, 15.0)
    by_number = {e["number"]: e for e in replies}
    assert set(by_number) == {bought, missing}
    ok = by_number[bought]
    assert ok["request_id"] == request_id
    assert ok["operation"] == "activate"
    assert ok["outcome"] == "succeeded"
    assert ok["old_state"] is None  # discovered, not stored before
    assert ok["new_state"] == "in_service"
    assert ok["carrier"] == MODULE
    assert ok["account"] == ACCOUNT
    assert ok["error"] is None
    failed = by_number[missing]
    assert failed["outcome"] == "failed"
    assert failed["error"] == {"error": "not_found"}
    assert sorted(e["number"] for e in audited) == sorted([bought, missing])
    assert {json.dumps(e, sort_keys=True) for e in audited} == {
        json.dumps(e, sort_keys=True) for e in replies
    }
    shown = _knm_cli(env, "requests", "show", request_id, "--json")
    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert described["status"] == "done"
    assert described["result"] == done.result
    assert sorted(e["number"] for e in described["events"]) == sorted([bought, missing])
    assert described["provider_calls"] == [
        {"module": MODULE, "number": bought, "action": "acquire", "status": "done", "error": None}
    ]


def test_exhausted_retries_leave_a_dead_letter_that_retry_resends(
    env: dict[str, str], knm: Knm, client: Celery, sandbox: SandboxClient, tmp_path: Path
) -> None:
    number = _discover(knm, "347555")[0]
    sandbox.fault("status", provider="telnyx", match="order", status=503, retry_after=0, times=None)
    request_id = f"portal-{uuid.uuid4().hex}"
    logs = tmp_path / "logs"
    with rig.run_workers(env, [QUEUES], logs):
        done = rig.wait_result(_activate(client, [number], request_id=request_id), 60.0)
    assert done.state == "SUCCESS", done.result
    error = done.result["failed"][number]
    assert "HTTP 503" in error["cause"]
    # in-call attempts (KNM_CARRIER_HTTP__MAX_ATTEMPTS=4) times 1 + KNM_TASK_MAX_RETRIES=2 runs
    assert sandbox.requests("telnyx")["order"] == 4 * 3
    assert sandbox.purchases("telnyx") == {}
    shown = _knm_cli(env, "requests", "show", request_id, "--json")
    described = json.loads(shown.stdout)
    assert described["status"] == "dead_letter"
    [dead] = described["dead_letters"]
    assert dead["module"] == MODULE
    assert dead["numbers"] == [number]
    assert dead["attempts"] == 3

    sandbox.reset()  # the provider is back
    with rig.run_workers(env, [QUEUES], logs):
        retried = _knm_cli(env, "requests", "retry", request_id, "--json", "--timeout", "45")
    assert retried.returncode == 0, retried.stderr
    [result] = json.loads(retried.stdout)["retried"]
    assert result["failed"] == {}
    assert result["succeeded"][number]["pvt_state"] == "in_service"
    assert sandbox.purchases("telnyx") == {number: 1}
    after = json.loads(_knm_cli(env, "requests", "show", request_id, "--json").stdout)
    assert after["status"] == "done"
    assert after["dead_letters"] == []
    assert after["result"]["succeeded"][number]["pvt_state"] == "in_service"


def test_an_unreadable_order_answer_is_reconciled_by_a_scheduled_retry_not_reported_failed(
    env: dict[str, str], knm: Knm, client: Celery, sandbox: SandboxClient, tmp_path: Path
) -> None:
    """The order took effect but its answer is garbage, and the provider cannot be asked at
    first: the share is re-queued (never left pending with nobody to reconcile it), the retry
    asks, finds the number bought, and the caller gets one purchase."""
    number = _discover(knm, "347556")[0]
    sandbox.fault("malformed", provider="telnyx", match="order")
    sandbox.fault("status", provider="telnyx", match="number", status=500, times=4)
    with rig.run_workers(env, [QUEUES], tmp_path / "logs"):
        done = rig.wait_result(_activate(client, [number]), 60.0)
    assert done.state == "SUCCESS", done.result
    assert done.result["failed"] == {}, done.result
    assert done.result["succeeded"][number]["pvt_state"] == "in_service"
    assert sandbox.purchases("telnyx") == {number: 1}
    assert sandbox.requests("telnyx")["order"] == 1
    assert sandbox.requests("telnyx")["number"] == 5  # 4 unanswered, then the retry's answer
    doc = knm.store.db["provisioning"].find_one({"_id": f"{MODULE}:{number}"})
    assert doc is not None
    assert (doc["status"], doc["events"][-1]["what"]) == ("done", "reconciled")


def test_unknown_request_is_reported(env: dict[str, str], knm: Knm) -> None:
    shown = _knm_cli(env, "requests", "show", "no-such-request")
    assert shown.returncode == 1
    assert "no request no-such-request is recorded" in shown.stderr
