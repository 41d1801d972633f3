"""Shared benchmark plumbing: a MongoDB to measure against and a command counter."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymongo import MongoClient, monitoring

from knm import embedded


class CommandCounter(monitoring.CommandListener):
    """Counts the commands pymongo sends, by name (independent of the server's speed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.counts[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextmanager
def mongo_server() -> Iterator[str]:
    """``KNM_BENCH_MONGODB_URL`` if set, else a mongoeco wire server (in memory) in a thread.

    The server thread's CPU is not the caller's ``thread_time``, so knm's own CPU stays apart.
    """
    url = os.environ.get("KNM_BENCH_MONGODB_URL")
    if url:
        yield url
        return
    server = embedded.WireServerThread()
    try:
        yield server.start()
    finally:
        server.stop()


@contextmanager
def embedded_server() -> Iterator[str]:
    """The embedded default store (mongoeco over SQLite, its own process) in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="knm-bench-") as tmp:
        data_dir = Path(tmp)
        try:
            yield embedded.ensure_server(data_dir)
        finally:
            embedded.stop_server(data_dir)


def counted_client(url: str) -> tuple[MongoClient[dict[str, object]], CommandCounter]:
    counter = CommandCounter()
    client: MongoClient[dict[str, object]] = MongoClient(
        url, tz_aware=True, event_listeners=[counter]
    )
    return client, counter
