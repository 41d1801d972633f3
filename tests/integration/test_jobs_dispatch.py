"""CSV jobs go through dispatch: provider rows wait on their carrier's queue, local rows finish.

Real servers only: a ``redis-server`` of this module's own (flushed before each test), real
``celery -A workers.app worker`` subprocesses, the carrier sandbox over HTTP and the test rig's
MongoDB wire server. Jobs are created in process with ``jobs.create_job`` and published with
``producer.submit_job``, the way the CLI does.

- A job whose rows name a provider carrier (``knm_telnyx``) and a local one (``knm_local``):
  with only a ``knm`` worker, the local rows finish and the provider rows wait on
  ``carrier.knm_telnyx`` (nothing bought, the job running); a worker serving that queue then
  buys them and the job finishes, with one outcome event per row. Publishing the job again
  changes nothing (exact per-row results and counters under redelivery).
- A breaker opened during a job re-queues the provider rows without failing them: the first
  order fails (503) and opens the breaker; the rows are re-queued untouched and bought once the
  breaker lets calls through again.
- Rows still failing transiently after their retries fail with a dead letter; the retry (what
  ``knm requests retry <job id>:<chunk>`` does) reopens them and the job finishes again.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from carriers.sandbox import Sandbox, SandboxClient
from config.settings import Settings
from knm.domain.options import Options
from knm.services import jobs, request_status
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from tests.carriers_rig import sandbox_worker_env
from workers import producer

pytestmark = pytest.mark.integration

BROKER_DB = 0  # of this module's own redis-server
ACCOUNT = "d15" + "0" * 29
TELNYX = "knm_telnyx"
LOCAL = ["+13125550181", "+13125550182"]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rig.RedisServer]:
    server = rig.RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def broker(redis_server: rig.RedisServer) -> str:
    url = redis_server.url(BROKER_DB)
    rig.flush_redis(url)
    return url


def _env(
    sandbox_server: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    mongo_url: str,
    db_name: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    return sandbox_worker_env(
        sandbox_server, monkeypatch, broker, mongo_url, db_name, data_dir, **extra
    )


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _knm(mongo_url: str, db_name: str) -> Knm:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    app.create_account(ACCOUNT, "Buyer", allow_additions=True, reseller=True)
    return app


def _discover(knm: Knm, prefix: str, quantity: int) -> list[str]:
    found = knm.search(
        SearchQuery(prefix=prefix, quantity=quantity, account_id=ACCOUNT, carriers=[TELNYX])
    )
    assert len(found) == quantity
    return [r.number for r in found]


def _job(knm: Knm, numbers: list[str]) -> jobs.Job:
    data = ("e164\n" + "".join(f"{n}\n" for n in numbers)).encode()
    job = jobs.create_job(knm, "assign_to", io.BytesIO(data), account_id=ACCOUNT)
    assert (job.rows, job.chunks) == (len(numbers), 1)
    return job


def _rows(knm: Knm, job_id: str) -> dict[str, dict[str, Any]]:
    return {d["number"]: d for d in knm.store.db["job_rows"].find({"job_id": job_id})}


def _drain(conn: Connection, queue: Queue, want: int, timeout_s: float = 15.0) -> list[Any]:
    got: list[Any] = []
    simple = conn.SimpleQueue(queue)
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            try:
                message = simple.get(timeout=0.5)
            except simple.Empty:
                continue
            got.append(message.payload)
            message.ack()
    finally:
        simple.close()
    return got


def _final(knm: Knm, job_id: str, timeout_s: float = 60.0) -> jobs.Job:
    store = jobs.JobStore(knm)

    def done() -> jobs.Job | None:
        job = store.get(job_id)
        return job if job is not None and job.status in jobs.FINAL_STATUSES else None

    return rig.wait_until(done, timeout_s, what=f"job {job_id} to finish")


def test_provider_rows_wait_for_their_carrier_worker_while_local_rows_finish(
    sandbox_server: Sandbox,
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    client: Celery,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
) -> None:
    env = _env(sandbox_server, monkeypatch, broker, mongo_url, db_name, tmp_path / "data")
    knm = _knm(mongo_url, db_name)
    try:
        created = knm.numbers.create(LOCAL, Options(assign_to=ACCOUNT))
        assert created.failed == {}
        bought = _discover(knm, "646", 2)
        job = _job(knm, [LOCAL[0], bought[0], LOCAL[1], bought[1]])
        logs = tmp_path / "logs"
        queued = redis.Redis.from_url(broker)
        exchange = Exchange("knm.events", type="topic", durable=True)
        audit = Queue("audit-job-events", exchange, routing_key="number.activate.#")
        with Connection(broker) as conn:
            audit.maybe_bind(conn)
            audit.declare()  # a service listening to every activation, the rows' too
        with rig.run_worker(env, ["knm"], logs, label="a") as a:
            assert producer.submit_job(job.id, job.chunks, client) == 1

            # the local rows finish on A; the provider rows wait on carrier.knm_telnyx
            def local_done() -> bool:
                rows = _rows(knm, job.id)
                return all(rows[n]["status"] == "succeeded" for n in LOCAL)

            rig.wait_until(local_done, 30.0, what="the local rows")
            rig.wait_until(
                lambda: queued.llen(f"carrier.{TELNYX}") == 1, 10.0, what="the telnyx share"
            )
            rows = _rows(knm, job.id)
            assert [rows[n]["status"] for n in bought] == ["pending", "pending"]
            assert {rows[n]["carrier"] for n in bought} == {TELNYX}
            waiting = jobs.JobStore(knm).get(job.id)
            assert waiting is not None
            assert waiting.status == jobs.JobStatus.RUNNING
            assert (waiting.done, waiting.chunks_done) == (0, [])
            assert sandbox.purchases("telnyx") == {}
            assert knm.store.numbers.count_documents({"_id": {"$in": bought}}) == 0

            # a worker serving the carrier's queue arrives: it buys them and finishes the job
            with rig.run_worker(env, [f"carrier.{TELNYX}"], logs, label="b") as b:
                done = _final(knm, job.id)
                assert "knm.jobs.rows[" in b.log()
            assert "knm.jobs.rows[" not in a.log()
            assert (done.status, done.succeeded, done.failed, done.done) == (
                jobs.JobStatus.SUCCEEDED,
                4,
                0,
                4,
            )
            assert sandbox.purchases("telnyx") == dict.fromkeys(bought, 1)
            # one outcome event per row, local or provider, under the chunk's request id
            with Connection(broker) as conn:
                events = _drain(conn, audit, 4)
            assert sorted(e["number"] for e in events) == sorted(LOCAL + bought)
            assert {(e["request_id"], e["outcome"]) for e in events} == {
                (f"{job.id}:0", "succeeded")
            }
            assert {e["number"]: e["carrier"] for e in events} == {
                **dict.fromkeys(LOCAL, "knm_local"),
                **dict.fromkeys(bought, TELNYX),
            }
            rows = _rows(knm, job.id)
            assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys(
                LOCAL + bought, "succeeded"
            )
            for number in bought:
                stored = knm.store.numbers.find_one({"_id": number})
                assert stored is not None
                assert (stored["pvt_state"], stored["pvt_assigned_to"]) == ("in_service", ACCOUNT)
                assert stored["pvt_carrier_module"] == TELNYX

            # the job published again (a redelivery): nothing is redone or counted twice
            assert a.log().count(" succeeded in ") == 1
            assert producer.submit_job(job.id, job.chunks, client) == 1
            a.wait_for_log(" succeeded in ", 30.0, count=2)
            again = jobs.JobStore(knm).get(job.id)
            assert again is not None
            assert (again.succeeded, again.failed, again.done) == (4, 0, 4)
            assert sandbox.purchases("telnyx") == dict.fromkeys(bought, 1)
            assert _rows(knm, job.id) == rows
        queued.close()
    finally:
        knm.close()


def test_a_breaker_opened_during_a_job_requeues_its_provider_rows_without_failing_them(
    sandbox_server: Sandbox,
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    client: Celery,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
) -> None:
    env = _env(
        sandbox_server,
        monkeypatch,
        broker,
        mongo_url,
        db_name,
        tmp_path / "data",
        KNM_CARRIER_HTTP__MAX_ATTEMPTS="1",
        KNM_CARRIER_HTTP__BREAKER_FAILURES="1",
        KNM_CARRIER_HTTP__BREAKER_OPEN_S="1",
        KNM_CARRIER_RETRY_BASE_S="0.2",
        KNM_CARRIER_RETRY_MAX_S="0.5",
    )
    knm = _knm(mongo_url, db_name)
    try:
        bought = _discover(knm, "917", 3)
        job = _job(knm, bought)
        # the first order fails transiently: the breaker opens (one failure is enough here)
        sandbox.fault("status", provider="telnyx", match="order", status=503, times=1)
        with rig.run_worker(env, ["knm", f"carrier.{TELNYX}"], tmp_path / "logs") as worker:
            assert producer.submit_job(job.id, job.chunks, client) == 1
            done = _final(knm, job.id)
            log = worker.log()
        assert (done.status, done.succeeded, done.failed) == (jobs.JobStatus.SUCCEEDED, 3, 0)
        # the rows went back to the queue while the breaker was open, none failed
        assert "knm.jobs.rows[" in log
        assert " retry: Retry in " in log
        assert all(r["status"] == "succeeded" for r in _rows(knm, job.id).values())
        assert all(r["error"] is None for r in _rows(knm, job.id).values())
        assert sandbox.purchases("telnyx") == dict.fromkeys(bought, 1)
        assert sandbox.requests("telnyx")["order"] == len(bought) + 1  # + the refused one
        assert knm.dead_letters.count() == 0
    finally:
        knm.close()


def test_rows_failing_past_their_retries_leave_a_dead_letter_that_retry_runs_again(
    sandbox_server: Sandbox,
    sandbox: SandboxClient,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    client: Celery,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
) -> None:
    env = _env(
        sandbox_server,
        monkeypatch,
        broker,
        mongo_url,
        db_name,
        tmp_path / "data",
        KNM_CARRIER_HTTP__MAX_ATTEMPTS="1",
        KNM_CARRIER_HTTP__BREAKER_FAILURES="100",
        KNM_CARRIER_RETRY_BASE_S="0.1",
        KNM_CARRIER_RETRY_MAX_S="0.2",
        KNM_TASK_MAX_RETRIES="1",
    )
    knm = _knm(mongo_url, db_name)
    try:
        [number] = _discover(knm, "415", 1)
        job = _job(knm, [number])
        sandbox.fault("status", provider="telnyx", match="order", status=503, times=None)
        with rig.run_worker(env, ["knm", f"carrier.{TELNYX}"], tmp_path / "logs"):
            assert producer.submit_job(job.id, job.chunks, client) == 1
            failed = _final(knm, job.id)
            assert (failed.status, failed.failed, failed.done) == (jobs.JobStatus.FAILED, 1, 1)
            assert "HTTP 503" in _rows(knm, job.id)[number]["error"]
            [dead] = request_status.dead_shares(knm, f"{job.id}:0")
            assert (dead["task"], dead["kwargs"]) == (
                "knm.jobs.chunk",
                {"job_id": job.id, "chunk": 0},
            )
            assert dead["attempts"] == 2

            # the provider is back: the retry reopens the row and sends its chunk again
            sandbox.reset()
            request_status.prepare_retry(knm, dead)
            client.send_task(dead["task"], kwargs=dead["kwargs"], queue="knm")
            done = _final(knm, job.id)
        assert (done.status, done.succeeded, done.failed, done.done) == (
            jobs.JobStatus.SUCCEEDED,
            1,
            0,
            1,
        )
        assert _rows(knm, job.id)[number]["status"] == "succeeded"
        assert knm.dead_letters.count() == 0
        assert sandbox.purchases("telnyx") == {number: 1}
    finally:
        knm.close()
