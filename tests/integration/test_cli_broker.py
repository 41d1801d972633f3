"""``knm ... --via-broker``, ``knm worker``, ``knm beat`` and ``knm demo`` over real brokers.

A real worker subprocess (``python -m knm worker --pool solo``) consumes a real Redis broker
(db ``BROKER_DB``, flushed per test) and writes to this test's database on the MongoDB wire
server; the CLI publishes to it. The in-process CLI runs the same commands against a second,
fresh database, and the two JSON results must agree (timestamps and request ids aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from typer.testing import CliRunner, Result

from config.settings import Settings
from knm.cli.root import cli
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.store import embedded
from tests import workers_rig as rig
from workers import producer

pytestmark = pytest.mark.integration

BROKER_DB = 14  # this module's Redis database (tests/conftest.py's redis_url uses 15)
ROOT = "a" * 32  # reseller, allowed additions
CHILD = "b" * 32  # customer under ROOT
N1, N2 = "+14155550101", "+14155550102"
PROBE = "+14155550199"  # never created: a worker is ready once it answers a get for it
READY_TIMEOUT_S = 90.0
#: Written by the store or the request, so they differ between two runs of the same request.
#: Stamped by requests that carry an id (task messages), not by in-process operations.
REQUEST_KEYS = frozenset({"pvt_request_id", "pvt_request_ids"})
VOLATILE = frozenset({"pvt_created", "pvt_modified", *REQUEST_KEYS})

Run = Callable[..., Result]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture
def broker_url(redis_url: str) -> str:
    """This module's Redis database, empty."""
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture
def other_db(mongo_client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A second fresh database: where the in-process CLI runs the same requests."""
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        mongo_client.drop_database(name)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}


@pytest.fixture
def env(mongo_url: str, mongo_db: Any, broker_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of the worker and of the ``--via-broker`` CLI (this test's database)."""
    return {
        **_clean_env(),
        "KNM_BROKER_URL": broker_url,
        "KNM_MONGODB_URL": mongo_url,
        "KNM_MONGODB_DB": mongo_db.name,
        "KNM_DATA_DIR": str(tmp_path / "knm-data"),
    }


def _runner(env: dict[str, str | None]) -> Run:
    runner = CliRunner()

    def run(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        if code is not None:
            assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def via(env: dict[str, str]) -> Run:
    """``knm ARGS`` in-process with the broker's environment (add ``--via-broker`` to publish)."""
    return _runner(dict(env))


@pytest.fixture
def local(env: dict[str, str], other_db: str) -> Run:
    """``knm ARGS`` in-process on the second database, no broker involved."""
    return _runner({**env, "KNM_MONGODB_DB": other_db, "KNM_BROKER_URL": None})


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    hostname: str
    ready_s: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, settings: Settings) -> float:
    """Seconds until the worker answered a ``knm.numbers.get`` (fails if it died first)."""
    started = time.monotonic()
    celery_app = producer.create_app(settings)
    probe = NumbersRequest(numbers=[PROBE])
    result = producer.publish(Operation.GET, probe, timeout=READY_TIMEOUT_S, app=celery_app)
    while True:
        code = proc.poll()
        assert code is None, f"worker exited with {code}:\n{log.read_text(errors='replace')}"
        try:
            reply = producer.wait(result, "knm.numbers.get", timeout=0.5)
        except (producer.NoWorkerError, producer.StillRunningError):
            elapsed = time.monotonic() - started
            assert elapsed < READY_TIMEOUT_S, f"no answer:\n{log.read_text(errors='replace')}"
            continue
        assert reply.result == {"succeeded": {}, "failed": {PROBE: {"error": "not_found"}}}
        return time.monotonic() - started


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    """A real ``knm worker`` subprocess on the broker, stopped (SIGTERM, SIGKILL) afterwards."""
    hostname = f"knm-test-{uuid.uuid4().hex[:6]}@%h"
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "knm", "worker", "--pool", "solo", "--concurrency", "1"]
    cmd += ["--loglevel", "INFO", "--hostname", hostname]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        settings = Settings(
            broker_url=env["KNM_BROKER_URL"],
            mongodb_url=env["KNM_MONGODB_URL"],
            mongodb_db=env["KNM_MONGODB_DB"],
            data_dir=Path(env["KNM_DATA_DIR"]),
        )
        ready_s = _wait_ready(proc, log, settings)
        yield Worker(proc=proc, log=log, hostname=hostname, ready_s=ready_s)
    finally:
        _stop(proc)


# ------------------------------------------------------------------------------ helpers
def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A JSON result without what legitimately differs between two runs."""
    return {
        "succeeded": {
            number: {k: v for k, v in doc.items() if k not in VOLATILE}
            for number, doc in result["succeeded"].items()
        },
        "failed": result["failed"],
    }


def accounts(run: Run) -> None:
    run("accounts", "create", ROOT, "--name", "Root", "--allow-additions")
    run("accounts", "create", CHILD, "--name", "Child", "--parent", ROOT)


# ------------------------------------------------------------------------------ worker path
def test_lifecycle_via_broker_equals_in_process(
    worker: Worker, via: Run, local: Run, mongo_db: Any, broker_url: str
) -> None:
    accounts(via)
    accounts(local)
    steps: list[tuple[tuple[str, ...], int]] = [
        (("create", N1, N2, "1000", "--account", ROOT, "--state", "available"), 1),
        (("reserve", N1, N2, "--account", CHILD, "--auth-by", ROOT), 0),
        (("activate", N1, "--account", CHILD, "--auth-by", CHILD), 0),
        (("delete", N1, "--auth-by", CHILD), 1),  # forbidden: admins only
        (("release", N1, "--auth-by", CHILD), 0),
        (("get", N1, N2, "--auth-by", CHILD), 1),
    ]
    for args, code in steps:
        remote = as_json(via("numbers", *args, "--via-broker", "--json", code=code))
        here = as_json(local("numbers", *args, "--json", code=code))
        assert comparable(remote) == comparable(here), args
        for number, doc in remote["succeeded"].items():
            assert set(doc) == set(here["succeeded"][number]) | (REQUEST_KEYS & set(doc)), args

    # what the worker wrote is in the worker's database, and only there
    stored = mongo_db.numbers.find_one({"_id": N2})
    assert stored is not None
    assert stored["pvt_state"] == "reserved"
    assert stored["pvt_assigned_to"] == CHILD
    assert mongo_db.numbers.find_one({"_id": N1}) is None  # released knm_local: deleted

    # the table is the same whichever way the result travelled (nothing volatile in it)
    remote_table = via("numbers", "get", N2, "--auth-by", CHILD, "--via-broker").stdout
    local_table = local("numbers", "get", N2, "--auth-by", CHILD).stdout
    assert remote_table == local_table
    assert "reserved" in remote_table
    assert "1 succeeded, 0 failed" in remote_table

    log = worker.output()
    assert f"knm worker: broker: {broker_url} (KNM_BROKER_URL)" in log
    queues = next(line for line in log.splitlines() if line.startswith("knm worker: queues: "))
    assert queues.startswith("knm worker: queues: knm, celery, carrier.")
    assert "carrier.knm_local" in queues
    assert "knm.carrier.run" in log  # the routed tasks ran on the carrier queues


def test_search_and_rejected_requests_via_broker(
    worker: Worker, via: Run, env: dict[str, str]
) -> None:
    accounts(via)
    via("numbers", "create", N1, "--account", ROOT, "--state", "available")
    args = ("search", "415555", "--account", CHILD, "--quantity", "5")
    remote = as_json(via(*args, "--via-broker", "--json"))
    assert remote == as_json(via(*args, "--json"))
    assert remote == [{"number": N1, "state": "available", "carrier_module": "knm_local"}]

    # rejected by the worker (not retried): the same exit code as in process
    unknown = ("search", "415", "--account", "c" * 32)
    assert "does not exist" in one_line_error(via(*unknown, code=2))
    assert "does not exist" in one_line_error(via(*unknown, "--via-broker", code=2))

    # a payload that only the worker can reject
    settings = Settings(broker_url=env["KNM_BROKER_URL"], data_dir=Path(env["KNM_DATA_DIR"]))
    celery_app = producer.create_app(settings)
    with pytest.raises(producer.TaskFailedError) as failed:
        producer.call_task("knm.numbers.get", {"numbers": []}, timeout=30, app=celery_app)
    assert failed.value.invalid
    assert "invalid get request" in str(failed.value)


def test_via_broker_without_a_worker(via: Run) -> None:
    started = time.monotonic()
    result = via("numbers", "get", N1, "--via-broker", "--timeout", "2", code=1)
    assert time.monotonic() - started < 15
    assert result.stdout == ""
    assert one_line_error(result) == (
        "knm: error: no worker answered within 2 s: start one with 'knm worker'"
    )


def test_via_broker_usage_errors_are_caught_before_publishing(via: Run, broker_url: str) -> None:
    line = one_line_error(via("numbers", "activate", N1, "--via-broker", code=2))
    assert "--account" in line
    line = one_line_error(via("numbers", "get", N1, "--via-broker", "--timeout", "0", code=2))
    assert "--timeout" in line
    client = redis.Redis.from_url(broker_url)
    try:
        assert client.llen("knm") == 0  # nothing was published
    finally:
        client.close()


def test_unreachable_broker_is_one_line(env: dict[str, str]) -> None:
    run = _runner({**env, "KNM_BROKER_URL": "redis://:secret@127.0.0.1:9/0"})
    line = one_line_error(run("numbers", "get", N1, "--via-broker", "--timeout", "2", code=1))
    assert line.startswith("knm: error: cannot publish knm.numbers.get to redis://:**@127.0.0.1:9")
    assert "secret" not in line


# ------------------------------------------------------------------------------ beat, demo
def test_beat_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    data_dir = tmp_path / "beat-data"
    env = {**_clean_env(), "KNM_DATA_DIR": str(data_dir)}
    log = tmp_path / "beat.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "knm", "beat", "--loglevel", "INFO"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not list(data_dir.glob("beat-schedule*")) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert list(data_dir.glob("beat-schedule*")), log.read_text()
    finally:
        _stop(proc)
    text = log.read_text()
    assert "broker: knmfs:// (the embedded broker" in text
    assert f"schedule: {data_dir.resolve() / 'beat-schedule'}" in text


def test_demo_embedded_end_to_end(tmp_path: Path) -> None:
    """``knm demo`` with nothing configured: embedded MongoDB, embedded broker, real worker."""
    data_dir = tmp_path / "demo-data"
    env = {**_clean_env(), "KNM_DATA_DIR": str(data_dir)}
    try:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "knm", "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, (done.stdout, done.stderr)
        out = done.stdout
        for step in (
            "1. accounts",
            "2. create the demo numbers",
            "3. the customer searches",
            "4. the reseller reserves",
            "5. the customer activates",
            "6. the customer tries to delete",
            "7. the customer releases",
            "8. the customer searches 646555 at Telnyx",
            "9. the customer activates",
            "10. the sandbox saw 2 order requests",
            "11. the customer releases it",
            "12. where everything stands",
        ):
            assert step in out
        assert "carrier sandbox (fake providers over HTTP): http://127.0.0.1:" in out
        assert "knm.numbers.activate → queue carrier.knm_telnyx, worker knm-demo-" in out
        assert "and 1 purchase of +1646555" in " ".join(out.split())
        assert "the embedded broker" in out
        # knm_local makes no provider call: its share runs where the request was received
        assert "knm.numbers.create → queue knm, worker knm-demo-" in out
        assert "knm.numbers.get → queue knm" in out
        assert "forbidden" in out
        assert "in_service" in out
        assert "worker stopped" in out
        pid = int(out.split("started a worker: pid ", 1)[1].split(",", 1)[0])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the demo's worker is gone
        print(f"knm demo took {elapsed:.1f} s")

        again = subprocess.run(
            [sys.executable, "-m", "knm", "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert "removed 2 demo numbers" in again.stdout
    finally:
        embedded.stop_server(data_dir)
