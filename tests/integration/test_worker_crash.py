"""A worker SIGKILLed in the middle of a write: the request completes exactly once.

Design. The window that matters is deterministic here, not a race against a sleep:

- Worker B consumes ``knm`` (validation, routing, and the local carrier's share, which runs
  where the request was received) and ``carrier.knm_local`` (prefork, one child) and talks to
  MongoDB through a TCP proxy owned by the test (``FreezeProxy``).
- The proxy reads the MongoDB wire protocol (OP_MSG) from B. When B sends the write chosen by the
  test (``insert`` into ``numbers`` or into ``request_outcomes``), the proxy forwards it,
  waits for the server's reply (so the write is applied), and swallows the reply: B hangs inside
  the task with the write durable but not known to it.
- The test then SIGKILLs B's whole process group (main process and pool child): nothing is
  acknowledged, rejected or requeued; the request's message stays in Redis' ``unacked`` set.
- With ``KNM_BROKER_VISIBILITY_TIMEOUT_S=12``, once the message is older than the timeout a new
  worker C restores it when it starts (kombu restores visible unacked messages when it begins
  polling, flagged ``redelivered``; a running worker only sweeps every ~100 s by default, which
  is why C is started after the timeout instead of before) and runs it.
- A third case kills only B's pool child: B's main process sees ``WorkerLostError`` and, with
  ``task_reject_on_worker_lost``, requeues the message at once; B's next child reruns it.

Then every number exists once, in the right state, written once (``pvt_rev == 1``, stamped with
the request id), one outcome is recorded, and the producer's result is SUCCESS with every number.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from config.settings import Settings
from knm.services.facade import Knm
from tests import workers_rig as rig
from tests.mongo_wire import command as _command
from tests.mongo_wire import read_message as _read_message

pytestmark = pytest.mark.integration

BROKER_DB = 7  # Redis dbs: 5, 6, 7, 9, 12, 13 are the test_worker_* modules
VISIBILITY_TIMEOUT_S = 12
TASK_TIME_LIMIT_S = 10
ACCOUNT = "d4" * 16
NUMBERS = [f"+1646555{n:04d}" for n in range(120, 126)]

Doc = dict[str, Any]


# ================================================================================ the proxy
class FreezeProxy:
    """A loopback TCP proxy in front of MongoDB that can swallow the reply to one write."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.trigger: tuple[str, str] | None = None
        self.write_sent = threading.Event()
        self.write_applied = threading.Event()
        self.seen: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="freeze-proxy", daemon=True).start()

    def arm(self, command: str, collection: str) -> None:
        """Swallow the reply to the next ``command`` on ``collection`` (and hang its sender)."""
        self.trigger = (command, collection)

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
            threading.Thread(
                target=self._client_to_server, args=(client, upstream, state), daemon=True
            ).start()
            threading.Thread(
                target=self._server_to_client, args=(upstream, client, state), daemon=True
            ).start()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket, state: Doc) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                message = _read_message(client)
                command = _command(message)
                if command is not None:
                    self.seen.append(command)
                if (
                    command is not None
                    and self.trigger is not None
                    and (command[0], command[1]) == self.trigger
                    and not self.write_sent.is_set()
                ):
                    state["frozen"] = True
                    self.write_sent.set()
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
@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture
def knm(mongo_url: str, db_name: str) -> Iterator[Knm]:
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        app.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
        yield app
    finally:
        app.close()


@pytest.fixture
def proxy(mongo_url: str) -> Iterator[FreezeProxy]:
    port = int(mongo_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    running = FreezeProxy(port)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _via(mongo_url: str, port: int) -> str:
    scheme, rest = mongo_url.split("//", 1)
    _, tail = rest.split("/", 1)
    return f"{scheme}//127.0.0.1:{port}/{tail}"


def _unacked(broker: str) -> list[tuple[str, float]]:
    """``(task name, delivery time)`` of every delivered-but-unacknowledged message."""
    conn = redis.Redis.from_url(broker)
    try:
        entries = []
        for tag, score in conn.zrange("unacked_index", 0, -1, withscores=True):
            raw = conn.hget("unacked", tag)
            payload = json.loads(raw)[0] if raw else {}
            entries.append((payload.get("headers", {}).get("task", "?"), float(score)))
        return entries
    finally:
        conn.close()


# ================================================================================ the test
@pytest.mark.parametrize(
    ("command", "collection", "victim"),
    [
        ("insert", "numbers", "group"),
        ("insert", "request_outcomes", "group"),
        ("insert", "numbers", "pool-child"),
    ],
    ids=["after-numbers-written", "after-outcome-recorded", "pool-child-after-numbers-written"],
)
def test_sigkill_mid_write_then_the_request_completes_exactly_once(
    command: str,
    collection: str,
    victim: str,
    knm: Knm,
    proxy: FreezeProxy,
    client: Celery,
    broker: str,
    mongo_url: str,
    db_name: str,
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    extra = {
        "KNM_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        # below the visibility timeout, as knm requires; B is killed long before either
        "KNM_TASK_TIME_LIMIT_S": str(TASK_TIME_LIMIT_S),
    }
    env = rig.worker_env(broker, mongo_url, db_name, tmp_path / "data", extra)
    env_b = rig.worker_env(broker, _via(mongo_url, proxy.port), db_name, tmp_path / "data", extra)
    request = {"numbers": NUMBERS, "account": ACCOUNT, "state": "in_service"}

    queues = ["knm", "carrier.knm_local"]
    b = rig.spawn_worker(env_b, queues, logs, label="b", pool="prefork")
    c: rig.Worker | None = None
    stored: dict[str, Doc] | None
    try:
        b.wait_ready()
        proxy.arm(command, collection)
        result = client.send_task("knm.numbers.create", kwargs=request, queue="knm")
        assert proxy.write_applied.wait(20), (proxy.seen, b.tail())
        assert f"knm.numbers.create[{result.id}] received" in b.log()
        if victim == "pool-child":
            # Only the pool process dies: B's main process sees WorkerLostError and, with
            # task_reject_on_worker_lost, requeues the message at once; B's new child reruns it.
            children = b.pool_children()
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
            rerun_by = b
            stored = None
        else:
            b.kill()  # SIGKILL to the group: main process and pool child die at once
            assert not result.ready()
            # The write is durable (the outcome too in one case); nothing is acknowledged.
            stored = {d["_id"]: d for d in knm.store.numbers.find({})}
            assert sorted(stored) == NUMBERS
            outcomes = knm.outcomes.for_request(result.id)
            assert len(outcomes) == (1 if collection == "request_outcomes" else 0)
            unacked = _unacked(broker)
            assert [name for name, _ in unacked] == ["knm.numbers.create"], unacked
            delivered = unacked[0][1]
            # Past the visibility timeout a new worker restores the message, runs it.
            rig.wait_until(
                lambda: time.time() > delivered + VISIBILITY_TIMEOUT_S + 0.5,
                VISIBILITY_TIMEOUT_S + 5,
                what="the visibility timeout",
            )
            rerun_by = c = rig.start_worker(env, queues, logs, label="c")

        done = rig.wait_result(result, 30.0)
        assert done.state == "SUCCESS", (done.result, done.traceback, rerun_by.tail())
        assert done.worker == rerun_by.name
        if victim == "pool-child":
            assert "WorkerLostError" in b.log(), b.tail()
        value = done.result
    finally:
        rig.stop_all([b, c])

    assert value["failed"] == {}
    assert sorted(value["succeeded"]) == NUMBERS
    docs = list(knm.store.numbers.find({}))
    assert sorted(d["_id"] for d in docs) == NUMBERS, "every number exists exactly once"
    for doc in docs:
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == ACCOUNT
        assert doc["pvt_rev"] == 1, ("written twice", doc)
        assert doc["pvt_request_id"] == result.id
        if stored is not None:
            assert doc == stored[doc["_id"]], ("the rerun rewrote a number", doc)
        assert value["succeeded"][doc["_id"]]["pvt_rev"] == 1
    outcomes = knm.outcomes.for_request(result.id)
    assert [o["part"].split(":")[0] for o in outcomes] == ["knm_local"]
    assert [sorted(o["numbers"]) for o in outcomes] == [sorted(NUMBERS)]
    assert outcomes[0]["result"] == value
    assert _unacked(broker) == [], "the redelivered message was acknowledged"
