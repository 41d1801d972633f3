"""Shared benchmark plumbing: the store to measure against, a private Redis, a command counter.

The store is what users run unless told otherwise: the embedded default (knm's own server
process on SQLite, started as ``knm`` starts it, in a temporary data directory).
``KNM_BENCH_ENGINE=memory`` uses mongoeco's in-memory engine in a thread instead;
``KNM_BENCH_MONGODB_URL`` a MongoDB server. Redis is a private ``redis-server`` on a free port,
so no benchmark touches (or flushes) the machine's Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient, monitoring

from knm.store import embedded

#: The documents MongoDB puts in a cursor's first batch when the command sets no batch size.
MONGODB_FIRST_BATCH = 101


def _sets_batch_size(command: Mapping[str, Any]) -> bool:
    cursor = command.get("cursor")
    return "batchSize" in command or (isinstance(cursor, Mapping) and "batchSize" in cursor)


def implied_get_more(command: Mapping[str, Any] | None, reply: Mapping[str, Any]) -> bool:
    """Whether MongoDB would have needed a ``getMore`` that the embedded server did not.

    Without a batch size MongoDB answers a ``find`` or ``aggregate`` with 101 documents and
    the rest on ``getMore``; mongoeco's wire server answers everything at once. So a reply
    with more than 101 documents to a command that set no batch size stands for a ``getMore``
    too (one: the rest fits the 16 MiB of one batch at the sizes measured here).
    """
    cursor = reply.get("cursor")
    if command is None or not isinstance(cursor, Mapping) or _sets_batch_size(command):
        return False
    batch = cursor.get("firstBatch")
    return cursor.get("id") == 0 and isinstance(batch, list) and len(batch) > MONGODB_FIRST_BATCH


class CommandCounter(monitoring.CommandListener):
    """Counts the commands pymongo sends, by name (independent of the server's speed), and the
    ``getMore`` MongoDB would add (:func:`implied_get_more`) as ``getMore`` too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.implied_get_more = 0
        self._pending: dict[int, Mapping[str, Any]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.counts[event.command_name] += 1
            if event.command_name in ("find", "aggregate"):
                self._pending[event.request_id] = event.command

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        with self._lock:
            command = self._pending.pop(event.request_id, None)
            if implied_get_more(command, event.reply):
                self.counts["getMore"] += 1
                self.implied_get_more += 1

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            self._pending.pop(event.request_id, None)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.implied_get_more = 0
            self._pending.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def worker_argv(
    module: str, name: str, pool: str, *extra: str, loglevel: str = "WARNING"
) -> list[str]:
    """``python -m <module> -A workers.app worker ...`` for a benchmark's own worker: a unique
    node name, no gossip, mingle or heartbeat (one worker, nothing to agree with)."""
    return [
        *(sys.executable, "-m", module, "-A", "workers.app", "worker"),
        *("--pool", pool, *extra),
        *("-n", f"{name}-{uuid.uuid4().hex[:6]}@%h"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *("--loglevel", loglevel),
    ]


def engine_name() -> str:
    """Which store the benchmarks measure: ``embedded`` (default), ``memory`` or ``external``."""
    if os.environ.get("KNM_BENCH_MONGODB_URL"):
        return "external"
    return "memory" if os.environ.get("KNM_BENCH_ENGINE") == "memory" else "embedded"


@contextmanager
def mongo_server() -> Iterator[str]:
    """The store to measure: the embedded default, unless ``KNM_BENCH_ENGINE`` or
    ``KNM_BENCH_MONGODB_URL`` says otherwise. Either way its CPU is not this process's."""
    url = os.environ.get("KNM_BENCH_MONGODB_URL")
    if url:
        yield url
        return
    if engine_name() == "memory":
        server = embedded.WireServerThread()
        try:
            yield server.start()
        finally:
            server.stop()
        return
    with embedded_server() as url:
        yield url


def server_pid(url: str) -> int | None:
    """The pid of the embedded server answering at ``url`` (None for any other store)."""
    return _EMBEDDED_PIDS.get(url)


_EMBEDDED_PIDS: dict[str, int] = {}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` (no persistence) on a free port: its stats are this run's."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def embedded_server() -> Iterator[str]:
    """The embedded default store (mongoeco over SQLite, its own process) in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="knm-bench-") as tmp:
        data_dir = Path(tmp)
        try:
            url = embedded.ensure_server(data_dir)
            state = embedded.read_state(data_dir.resolve())
            if state is not None:
                _EMBEDDED_PIDS[url] = state.pid
            yield url
        finally:
            embedded.stop_server(data_dir)


def counted_client(url: str) -> tuple[MongoClient[dict[str, object]], CommandCounter]:
    counter = CommandCounter()
    client: MongoClient[dict[str, object]] = MongoClient(
        url, tz_aware=True, event_listeners=[counter]
    )
    return client, counter
