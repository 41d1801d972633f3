"""Sweeps on real workers (issue 5): a SIGKILLed sweep is finished by the next one, two sweeps
sent together never overlap, and ``knm beat`` schedules the three sweeps.

The kill is deterministic, not a race against a sleep: the worker talks to MongoDB through a TCP
proxy owned by the test, which forwards the worker's third bulk write on ``numbers`` (batches of
10), waits for the server's reply (the write is applied) and swallows it. The worker hangs inside
the sweep with 30 numbers aged and 30 still due; the test SIGKILLs its process group. Then,
once the dead sweep's lock expires (``KNM_SWEEP_LOCK_TTL_S=5``), a new worker's sweep takes the
lock over, records the dead run as ``abandoned`` and ages the other 30: every number is
available with ``pvt_rev`` bumped exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from config.settings import Settings
from knm.domain.number import utcnow
from knm.services.facade import Knm
from knm.services.sweeps import SweepKind, lock_id
from tests import workers_rig as rig
from tests.fixtures_kazoo import number_doc
from tests.mongo_wire import command as _command
from tests.mongo_wire import read_message as _read_message

pytestmark = pytest.mark.integration

BROKER_DB = 3  # Redis dbs: 3 is this module's (5-15 belong to the others)
MODULE = "knm_telnyx"
Doc = dict[str, Any]


# ================================================================================ the proxy
class FreezeProxy:
    """A loopback proxy in front of MongoDB that swallows the reply to the n-th matching command
    (the command is applied; its sender waits forever)."""

    def __init__(self, upstream_port: int, command: str, collection: str, nth: int) -> None:
        self.upstream_port = upstream_port
        self.trigger = (command, collection)
        self.nth = nth
        self.matched = 0
        self.write_applied = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="freeze-proxy", daemon=True).start()

    def url(self, mongo_url: str) -> str:
        scheme, rest = mongo_url.split("//", 1)
        _, tail = rest.split("/", 1)
        return f"{scheme}//127.0.0.1:{self.port}/{tail}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            state = {"frozen": False}
            for target, args in (
                (self._client_to_server, (client, upstream, state)),
                (self._server_to_client, (upstream, client, state)),
            ):
                threading.Thread(target=target, args=args, daemon=True).start()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket, state: Doc) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                message = _read_message(client)
                command = _command(message)
                if command is not None and command == self.trigger:
                    with self._lock:
                        self.matched += 1
                        if self.matched == self.nth:
                            state["frozen"] = True
                upstream.sendall(message)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket, state: Doc) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                message = _read_message(upstream)
                if state["frozen"]:
                    self.write_applied.set()  # the server answered: the write is durable
                    continue  # ... and its sender never hears about it
                client.sendall(message)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


# ================================================================================ fixtures
@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    url = rig.empty_redis_db(redis_url, BROKER_DB)
    yield url
    rig.flush_redis(url)  # the killed sweep's message stays unacknowledged: drop it


@pytest.fixture
def knm(mongo_url: str, db_name: str) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
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


def _seed_due(knm: Knm, count: int, prefix: str = "+1347555") -> list[str]:
    """``count`` aging numbers released 100 days ago (due), ``pvt_rev`` 1."""
    old = utcnow() - timedelta(days=100)
    numbers = [f"{prefix}{n:04d}" for n in range(count)]
    knm.store.numbers.insert_many(
        [number_doc(n, "aging", MODULE, pvt_modified=old) for n in numbers]
    )
    return numbers


def _states(knm: Knm) -> dict[str, tuple[str, int]]:
    return {d["_id"]: (d["pvt_state"], d["pvt_rev"]) for d in knm.store.numbers.find({})}


# ================================================================================ SIGKILL
def test_sigkill_mid_sweep_then_the_next_sweep_finishes_the_work(
    knm: Knm, client: Celery, broker: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    numbers = _seed_due(knm, 60)
    port = int(mongo_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    proxy = FreezeProxy(port, "update", "numbers", nth=3)
    extra = {"KNM_SWEEP_BATCH_SIZE": "10", "KNM_SWEEP_LOCK_TTL_S": "5"}
    logs = tmp_path / "logs"
    env_b = rig.worker_env(broker, proxy.url(mongo_url), db_name, tmp_path / "data", extra)
    env = rig.worker_env(broker, mongo_url, db_name, tmp_path / "data", extra)
    b = c = None
    try:
        b = rig.start_worker(env_b, ["knm"], logs, label="b")
        first = client.send_task("knm.sweeps.age", kwargs={}, queue="knm")
        assert proxy.write_applied.wait(30), b.tail()
        b.kill()  # SIGKILL to the group, in the middle of the sweep
        assert not first.ready()

        # three batches of 10 were written, nothing else; the lock and the run are left behind
        states = _states(knm)
        assert sorted(states.values()).count(("available", 2)) == 30
        assert sorted(states.values()).count(("aging", 1)) == 30
        lock = knm.store.db["locks"].find_one({"_id": lock_id(SweepKind.AGE)})
        assert lock is not None, "the dead sweep's lock stays until it expires"
        dead_run = lock["run"]["id"]
        assert knm.store.db["sweep_runs"].count_documents({}) == 0

        c = rig.start_worker(env, ["knm"], logs, label="c")
        rig.wait_until(
            lambda: utcnow() > lock["expires_at"], 15, what="the dead sweep's lock to expire"
        )
        done = rig.wait_result(client.send_task("knm.sweeps.age", kwargs={}, queue="knm"), 60)
        assert done.state == "SUCCESS", (done.result, done.traceback, c.tail())
        report: Doc = done.result  # type: ignore[assignment]
    finally:
        rig.stop_all([b, c])
        proxy.close()

    assert report.get("locked") is None, report
    assert report["aged"] == 30
    assert report["errors"] == []
    states = _states(knm)
    assert sorted(states) == numbers
    assert set(states.values()) == {("available", 2)}, "every number aged exactly once"
    runs = {r["_id"]: r for r in knm.store.db["sweep_runs"].find({})}
    assert runs[dead_run]["status"] == "abandoned"
    assert runs[report["id"]]["status"] == "finished"
    assert runs[report["id"]]["counts"] == {"aged": 30}
    assert list(knm.store.db["locks"].find({})) == []


# ================================================================================ together
def test_two_sweeps_sent_together_one_runs_the_other_reports_the_lock(
    knm: Knm, client: Celery, broker: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    numbers = _seed_due(knm, 300)
    extra = {"KNM_SWEEP_BATCH_SIZE": "2"}  # 150 batches: the sweep lasts a second or two
    env = rig.worker_env(broker, mongo_url, db_name, tmp_path / "data", extra)
    with rig.run_worker(env, ["knm"], tmp_path / "logs", pool="prefork", concurrency=2) as w:
        results = [client.send_task("knm.sweeps.age", kwargs={}, queue="knm") for _ in range(2)]
        values = [rig.wait_result(r, 60) for r in results]
        assert [v.state for v in values] == ["SUCCESS", "SUCCESS"], w.tail()
        assert len({v.worker for v in values}) == 1
    results_json: list[Doc] = [v.result for v in values]  # type: ignore[misc]
    outcomes = sorted(results_json, key=lambda r: "locked" in r)
    ran, locked = outcomes
    assert ran["aged"] == len(numbers), outcomes
    assert locked["locked"] is True, outcomes
    assert "another age sweep is running" in locked["message"]
    assert set(_states(knm).values()) == {("available", 2)}, "nothing transitioned twice"
    assert knm.store.db["sweep_runs"].count_documents({}) == 1


# ================================================================================ beat
def test_knm_beat_schedules_the_three_sweeps(
    knm: Knm, broker: str, mongo_url: str, db_name: str, tmp_path: Path
) -> None:
    """``knm beat`` with a 2-second interval: a worker runs every kind of sweep it sends."""
    aging = _seed_due(knm, 5)
    old = utcnow() - timedelta(days=3)
    knm.store.numbers.insert_many(
        [
            number_doc("+13475559001", "discovery", MODULE, pvt_modified=old),
            number_doc("+13475559002", "deleted", MODULE),
        ]
    )
    extra = {"KNM_CRAWLER_INTERVAL": "PT2S"}
    env = rig.worker_env(broker, mongo_url, db_name, tmp_path / "data", extra)
    log_path = tmp_path / "beat.log"
    with (
        rig.run_worker(env, ["knm"], tmp_path / "logs", pool="prefork", concurrency=2) as w,
        log_path.open("wb") as log,
    ):
        beat = subprocess.Popen(
            [sys.executable, "-m", "knm", "beat", "--loglevel", "INFO"],
            cwd=rig.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def all_kinds_ran() -> bool:
                if beat.poll() is not None:
                    raise AssertionError(f"knm beat exited: {log_path.read_text()}")
                kinds = {
                    k
                    for r in knm.store.db["sweep_runs"].find({"status": "finished"})
                    for k in r["kinds"]
                }
                return kinds >= {k.value for k in SweepKind}

            rig.wait_until(all_kinds_ran, 45, 0.2, "a finished run of every kind of sweep")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(beat.pid, signal.SIGTERM)
            try:
                beat.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(beat.pid, signal.SIGKILL)
                beat.wait(10)
        worker_log = w.log()
    text = log_path.read_text()
    assert "knm beat: schedule:" in text
    for name in ("knm.sweeps.age", "knm.sweeps.purge_discovery", "knm.sweeps.purge_deleted"):
        assert f"Sending due task {name}" in text, text
        assert name in worker_log
    states = _states(knm)
    assert {states[n] for n in aging} == {("available", 2)}
    assert sorted(states) == aging, "the stale discovery and the deleted documents are gone"
