"""Calls in flight per carrier: ``enter`` counts a request while it is on the wire.

Each call is a token with its own deadline (the HTTP timeouts), so a call of a killed process
stops counting at its deadline. In Redis the tokens are a sorted set ``knm:inflight:<carrier>``
scored by their deadline; the key expires too.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError

from carriers.coordination.redis_link import RedisLink
from carriers.coordination.times import LUA_PRELUDE

#: How long an in-flight token counts when the caller gives no deadline.
DEFAULT_FLIGHT_TTL_S = 300.0

#: KEYS[1] knm:inflight:<carrier>; ARGV[1] token, ARGV[2] ttl (s).
_ENTER = (
    LUA_PRELUDE
    + """
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
redis.call('ZADD', KEYS[1], fmt(now + ttl), ARGV[1])
local want = math.ceil(ttl * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', want))
end
return 1
"""
)

#: KEYS[1] knm:inflight:<carrier>: tokens whose deadline has not passed.
_IN_FLIGHT = LUA_PRELUDE + "return redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')\n"


def inflight_key(carrier: str) -> str:
    return f"knm:inflight:{carrier}"


class LocalInFlight:
    """Calls in flight within this process (thread-safe). ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, dict[str, float]] = {}

    def enter(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            now = self.clock()
            flights = self._flights.setdefault(carrier, {})
            for stale in [t for t, deadline in flights.items() if deadline <= now]:
                del flights[stale]
            flights[token] = now + ttl_s
        return token

    def leave(self, carrier: str, token: str) -> None:
        with self._lock:
            self._flights.get(carrier, {}).pop(token, None)

    def in_flight(self, carrier: str) -> int:
        with self._lock:
            now = self.clock()
            return sum(1 for d in self._flights.get(carrier, {}).values() if d > now)

    def reset(self, carrier: str) -> None:
        with self._lock:
            self._flights.pop(carrier, None)


class RedisInFlight:
    """Calls in flight to a carrier from every process on one Redis; ``enter`` and ``leave``
    fall back to ``local`` while Redis is unreachable, ``in_flight`` (a read-only view) raises
    ``RedisError`` instead."""

    def __init__(self, link: RedisLink, local: LocalInFlight) -> None:
        self.link = link
        self.local = local
        self._enter = link.redis.register_script(_ENTER)
        self._in_flight = link.redis.register_script(_IN_FLIGHT)

    def enter(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> str:
        token = uuid.uuid4().hex
        if self.link.up():
            try:
                self._enter(keys=[inflight_key(carrier)], args=[token, ttl_s])
                return token
            except RedisError as exc:
                self.link.down(exc)
        return self.local.enter(carrier, ttl_s)

    def leave(self, carrier: str, token: str) -> None:
        if self.link.up():
            try:
                self.link.redis.zrem(inflight_key(carrier), token)
            except RedisError as exc:
                self.link.down(exc)  # the token stops counting at its deadline
        self.local.leave(carrier, token)

    def in_flight(self, carrier: str) -> int:
        return int(self._in_flight(keys=[inflight_key(carrier)]))

    def keys(self, carrier: str) -> list[str]:
        return [inflight_key(carrier)]
