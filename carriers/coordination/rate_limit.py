"""The per-carrier rate limit: evenly spaced sends, a burst of one.

``acquire`` reserves the carrier's next send slot and returns how long the caller must sleep
before sending; ``rate_per_s`` <= 0 means no limit. Idle time is not saved up. In Redis the
reservation is one Lua script on the server's clock, so it holds across processes and hosts;
the key ``knm:rate:<carrier>`` (a string, the next free slot in epoch seconds) expires when idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from carriers.coordination.redis_link import RedisLink
from carriers.coordination.times import LUA_PRELUDE

#: KEYS[1] knm:rate:<carrier>; ARGV[1] seconds between sends. Returns the wait (seconds).
_ACQUIRE = (
    LUA_PRELUDE
    + """
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1])) or now
if slot < now then slot = now end
local ttl = math.ceil((slot + interval - now) * 1000) + 1000
redis.call('SET', KEYS[1], fmt(slot + interval), 'PX', string.format('%d', ttl))
return fmt(slot - now)
"""
)

#: KEYS[1] knm:rate:<carrier>. Returns the next slot when it is in the future, else ''.
_NEXT_SLOT = (
    LUA_PRELUDE
    + """
local slot = tonumber(redis.call('GET', KEYS[1]))
if slot and slot > now then return fmt(slot) end
return ''
"""
)


def rate_key(carrier: str) -> str:
    return f"knm:rate:{carrier}"


class LocalRateLimit:
    """The rate limit within this process (thread-safe). ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def acquire(self, carrier: str, rate_per_s: float) -> float:
        if rate_per_s <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            slot = max(now, self._next.get(carrier, now))
            self._next[carrier] = slot + 1.0 / rate_per_s
            return slot - now

    def next_slot(self, carrier: str) -> float | None:
        with self._lock:
            slot = self._next.get(carrier)
            return slot if slot is not None and slot > self.clock() else None

    def reset(self, carrier: str) -> None:
        with self._lock:
            self._next.pop(carrier, None)


class RedisRateLimit:
    """The rate limit shared through Redis; reservations fall back to ``local`` while Redis is
    unreachable. ``next_slot`` (a read-only view) raises ``RedisError`` instead."""

    def __init__(self, link: RedisLink, local: LocalRateLimit) -> None:
        self.link = link
        self.local = local
        self._acquire = link.redis.register_script(_ACQUIRE)
        self._next_slot = link.redis.register_script(_NEXT_SLOT)

    def acquire(self, carrier: str, rate_per_s: float) -> float:
        if rate_per_s <= 0:
            return 0.0
        if self.link.up():
            try:
                return float(self._acquire(keys=[rate_key(carrier)], args=[1.0 / rate_per_s]))
            except RedisError as exc:
                self.link.down(exc)
        return self.local.acquire(carrier, rate_per_s)

    def next_slot(self, carrier: str) -> float | None:
        reply = self._next_slot(keys=[rate_key(carrier)])
        return float(reply) if reply else None

    def keys(self, carrier: str) -> list[str]:
        return [rate_key(carrier)]
