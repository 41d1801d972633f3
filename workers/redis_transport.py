"""kombu's Redis transport with one Redis client per channel instead of one per publish.

kombu's Redis channel builds a new ``redis.Redis`` client (over its shared connection pool) for
every message it publishes (``Channel.conn_or_acquire``); building one costs more CPU than the
publish itself. This channel builds it once and reuses it: a ``redis.Redis`` client is safe to
share between threads (each command takes a connection from the pool). ``register()`` makes the
``redis://`` and ``rediss://`` broker URLs use it; everything else is kombu's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A Redis channel whose publishing client is built once (per connection pool)."""

    _sync_client: Any = None
    _sync_client_pool: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        if self._sync_client is None or self._sync_client_pool is not pool:
            self._sync_client = self._create_client()  # type: ignore[attr-defined]
            self._sync_client_pool = pool
        yield self._sync_client


class Transport(kombu_redis.Transport):
    Channel = Channel


def register() -> None:
    """Make ``redis://`` and ``rediss://`` broker URLs use this transport (idempotent)."""
    for alias in ("redis", "rediss"):
        TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"
