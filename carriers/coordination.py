"""Per-carrier throughput control shared by every worker: a rate limit, a circuit breaker,
in-flight counts and the recent failures (``knm status`` shows them).

``coordinator_for(settings)`` is the process's ``Coordinator`` for the settings'
``coordination_url`` (else the broker's URL when it is Redis): a ``RedisCoordinator`` that every
worker on that Redis shares, or a ``LocalCoordinator`` that holds for this process only.

* Rate limit: ``acquire`` reserves the carrier's next send slot (evenly spaced sends, a burst of
  one) and returns how long the caller must sleep before sending. In Redis the reservation is one
  Lua script on the server's clock, so it holds across processes and hosts.
* Circuit breaker: ``record_failure`` counts failed provider calls in a sliding window; at the
  threshold the breaker opens for ``open_s``. ``admit`` answers whether a call may go: closed,
  yes; open, no (retry in ...); half-open (``open_s`` has passed), exactly one caller claims the
  probe (atomically, under a lease so a crashed prober does not hold the breaker forever). Its
  ``record_success`` closes the breaker, its ``record_failure`` re-opens it.
* In flight: ``calling`` counts a request while it is on the wire. Each call is a token with its
  own deadline (the HTTP timeouts), so a call of a killed process stops counting at its deadline.
* Recent failures: the last ``FAILURES_KEPT`` reasons per carrier, newest first, with a UTC time.

If the coordination Redis cannot be reached, the Redis coordinator falls back to a local one for
a few seconds at a time (logged): provider calls go on, coordinated within this process only.
The read-only views (``breaker``, ``in_flight``, ``recent_failures``, ``next_slot``,
``snapshot``) raise ``redis.RedisError`` instead, so ``knm status`` can say Redis is down.

Redis keys (``<carrier>`` is the module name, e.g. ``knm_telnyx``):

* ``knm:rate:<carrier>``: string, the next free send slot (epoch seconds), expires when idle;
* ``knm:breaker:<carrier>``: hash ``open_until``, ``open_s``, ``probe_until``, ``probe_token``;
  absent while the breaker is closed;
* ``knm:breaker:<carrier>:failures``: sorted set of failures scored by when they leave the window;
* ``knm:inflight:<carrier>``: sorted set of call tokens scored by their deadline;
* ``knm:failures:<carrier>``: list of JSON ``{"at", "reason"}``, newest first, capped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from redis.exceptions import RedisError

from config.settings import Settings

log = logging.getLogger(__name__)

#: Recent failures kept per carrier.
FAILURES_KEPT = 20
#: How long an in-flight token counts when the caller gives no deadline.
DEFAULT_FLIGHT_TTL_S = 300.0
#: After the coordination Redis failed, how long this process coordinates alone before retrying.
REDIS_RETRY_S = 5.0


class BreakerStatus(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerState:
    """A carrier's circuit breaker as seen at one moment.

    ``open_until`` (epoch seconds) is set while open or half-open; ``retry_in_s`` is how long an
    open breaker still holds calls back; ``failures`` counts failures in the current window;
    ``probing``: a half-open probe is out.
    """

    status: BreakerStatus
    open_until: float | None = None
    retry_in_s: float = 0.0
    failures: int = 0
    probing: bool = False


@dataclass(frozen=True)
class Admission:
    """Whether one call may go to the provider now (``Coordinator.admit``).

    ``probe_token`` is set when this caller is the half-open breaker's one probe (hand it back
    with ``release_probe`` whatever happens); ``retry_in_s`` is the wait when not allowed.
    """

    allowed: bool
    status: BreakerStatus
    retry_in_s: float = 0.0
    probe_token: str | None = None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Coordinator(ABC):
    """Rate limits, circuit breakers, in-flight counts and recent failures, per carrier."""

    # ------------------------------------------------------------------------------ rate limit
    @abstractmethod
    def acquire(self, carrier: str, rate_per_s: float) -> float:
        """Reserve the carrier's next send slot; the seconds to sleep before sending.

        ``rate_per_s`` <= 0 means no limit (0.0 at once, nothing reserved).
        """

    @abstractmethod
    def next_slot(self, carrier: str) -> float | None:
        """When the carrier's next send may go (epoch seconds), ``None`` when it may go now."""

    # ------------------------------------------------------------------------- circuit breaker
    @abstractmethod
    def admit(self, carrier: str, probe_lease_s: float) -> Admission:
        """May a call go now? Claims the half-open probe (held at most ``probe_lease_s``)."""

    @abstractmethod
    def release_probe(self, carrier: str, token: str) -> None:
        """Give back a probe claim that has not settled the breaker (no-op when it has)."""

    @abstractmethod
    def record_failure(
        self, carrier: str, window_s: float, threshold: int, open_s: float
    ) -> BreakerState:
        """A provider call failed (retries used up).

        Closed: the failure counts in a ``window_s`` sliding window, and the ``threshold``-th
        opens the breaker for ``open_s``. Half-open: re-opens at once. Open: nothing changes
        (a call that started before the breaker opened).
        """

    @abstractmethod
    def record_success(self, carrier: str) -> BreakerState:
        """The provider answered: a half-open breaker closes (and forgets its failures).

        While closed the window is left alone (failures count whatever succeeds in between);
        while open, a call that started before the breaker opened changes nothing.
        """

    @abstractmethod
    def breaker(self, carrier: str) -> BreakerState:
        """The carrier's breaker now."""

    # ------------------------------------------------------------------------------- in flight
    @abstractmethod
    def enter(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> str:
        """Count a call in flight until ``leave`` or at most ``ttl_s``; its token."""

    @abstractmethod
    def leave(self, carrier: str, token: str) -> None:
        """The call of ``token`` is over."""

    @abstractmethod
    def in_flight(self, carrier: str) -> int:
        """Calls in flight to the carrier (every process sharing this coordinator)."""

    @contextmanager
    def calling(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> Iterator[None]:
        """Count the block as one call in flight."""
        token = self.enter(carrier, ttl_s)
        try:
            yield
        finally:
            self.leave(carrier, token)

    # ------------------------------------------------------------------------ recent failures
    @abstractmethod
    def note_failure(self, carrier: str, reason: str) -> None:
        """Keep ``reason`` (credential-free) among the carrier's last ``FAILURES_KEPT``."""

    @abstractmethod
    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        """The carrier's recent failures, newest first: ``{"at": <UTC ISO>, "reason"}``."""

    # ------------------------------------------------------------------------------- the rest
    @abstractmethod
    def reset(self, carrier: str) -> None:
        """Forget everything about the carrier (tests, an operator closing a breaker)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections (a process shutting down, tests)."""

    def snapshot(self, carriers: Iterable[str]) -> dict[str, dict[str, Any]]:
        """JSON-ready state per carrier for ``knm status``."""
        out: dict[str, dict[str, Any]] = {}
        for carrier in carriers:
            state = self.breaker(carrier)
            out[carrier] = {
                "in_flight": self.in_flight(carrier),
                "breaker": state.status.value,
                "open_until": _iso(state.open_until),
                "retry_in_s": round(state.retry_in_s, 3),
                "probing": state.probing,
                "failures_in_window": state.failures,
                "recent_failures": self.recent_failures(carrier),
                "rate_limit_next_slot": _iso(self.next_slot(carrier)),
            }
        return out


# ===================================================================================== local
@dataclass
class _LocalBreaker:
    open_until: float | None = None
    open_s: float = 0.0
    probe_token: str | None = None
    probe_until: float = 0.0
    #: When each failure in the window leaves it.
    failures: list[float] = field(default_factory=list)


class LocalCoordinator(Coordinator):
    """In-process coordination (thread-safe): no-Redis setups and tests. ``clock``: epoch s."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._breakers: dict[str, _LocalBreaker] = {}
        self._flights: dict[str, dict[str, float]] = {}
        self._failures: dict[str, deque[dict[str, str]]] = {}

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

    def admit(self, carrier: str, probe_lease_s: float) -> Admission:
        with self._lock:
            now = self.clock()
            b = self._breakers.get(carrier)
            if b is None or b.open_until is None:
                return Admission(True, BreakerStatus.CLOSED)
            if now < b.open_until:
                return Admission(False, BreakerStatus.OPEN, b.open_until - now)
            if b.probe_token is not None and now < b.probe_until:
                wait = min(b.probe_until - now, b.open_s)
                return Admission(False, BreakerStatus.HALF_OPEN, wait)
            b.probe_token = uuid.uuid4().hex
            b.probe_until = now + probe_lease_s
            return Admission(True, BreakerStatus.HALF_OPEN, 0.0, b.probe_token)

    def release_probe(self, carrier: str, token: str) -> None:
        with self._lock:
            b = self._breakers.get(carrier)
            if b is not None and b.probe_token == token:
                b.probe_token = None
                b.probe_until = 0.0

    def record_failure(
        self, carrier: str, window_s: float, threshold: int, open_s: float
    ) -> BreakerState:
        with self._lock:
            now = self.clock()
            b = self._breakers.setdefault(carrier, _LocalBreaker())
            if b.open_until is not None:
                if now >= b.open_until:
                    self._breakers[carrier] = _LocalBreaker(now + open_s, open_s)
                return self._state(carrier, now)
            b.failures = [t for t in b.failures if t > now]
            b.failures.append(now + window_s)
            if len(b.failures) >= threshold:
                self._breakers[carrier] = _LocalBreaker(now + open_s, open_s)
            return self._state(carrier, now)

    def record_success(self, carrier: str) -> BreakerState:
        with self._lock:
            now = self.clock()
            b = self._breakers.get(carrier)
            if b is not None and b.open_until is not None and now >= b.open_until:
                del self._breakers[carrier]
            return self._state(carrier, now)

    def breaker(self, carrier: str) -> BreakerState:
        with self._lock:
            return self._state(carrier, self.clock())

    def _state(self, carrier: str, now: float) -> BreakerState:
        b = self._breakers.get(carrier)
        if b is None:
            return BreakerState(BreakerStatus.CLOSED)
        failures = sum(1 for t in b.failures if t > now)
        if b.open_until is None:
            return BreakerState(BreakerStatus.CLOSED, failures=failures)
        probing = b.probe_token is not None and now < b.probe_until
        if now < b.open_until:
            return BreakerState(
                BreakerStatus.OPEN, b.open_until, b.open_until - now, failures, probing
            )
        return BreakerState(BreakerStatus.HALF_OPEN, b.open_until, 0.0, failures, probing)

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

    def note_failure(self, carrier: str, reason: str) -> None:
        with self._lock:
            kept = self._failures.setdefault(carrier, deque(maxlen=FAILURES_KEPT))
            kept.appendleft({"at": _iso(self.clock()) or "", "reason": reason})

    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        with self._lock:
            return [dict(item) for item in self._failures.get(carrier, ())]

    def reset(self, carrier: str) -> None:
        with self._lock:
            for table in (self._next, self._breakers, self._flights, self._failures):
                table.pop(carrier, None)

    def close(self) -> None:
        """Nothing to release."""


# ===================================================================================== Redis
#: Lua prelude: the server's clock (every process agrees on it) and exact number formatting.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
"""

#: KEYS[1] breaker hash, KEYS[2] failures zset: the breaker's state as a reply.
_STATE = """
local function state_of()
  local n = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now), '+inf')
  local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
  if not ou then return {'closed', '', '0', n, 0} end
  local pu = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
  local probing = 0
  if pu and now < pu then probing = 1 end
  if now < ou then return {'open', fmt(ou), fmt(ou - now), n, probing} end
  return {'half_open', fmt(ou), '0', n, probing}
end
"""

#: KEYS[1] knm:rate:<carrier>; ARGV[1] seconds between sends. Returns the wait (seconds).
_ACQUIRE = (
    _PRELUDE
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
    _PRELUDE
    + """
local slot = tonumber(redis.call('GET', KEYS[1]))
if slot and slot > now then return fmt(slot) end
return ''
"""
)

#: KEYS[1] breaker hash; ARGV[1] probe lease (s), ARGV[2] probe token.
#: Returns {verdict, retry_in_s}: closed | open | busy (a probe is out) | probe (claimed).
_ADMIT = (
    _PRELUDE
    + """
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not ou then return {'closed', '0'} end
if now < ou then return {'open', fmt(ou - now)} end
local pu = tonumber(redis.call('HGET', KEYS[1], 'probe_until'))
if pu and now < pu then
  local open_s = tonumber(redis.call('HGET', KEYS[1], 'open_s')) or 1
  return {'busy', fmt(math.min(pu - now, open_s))}
end
redis.call('HSET', KEYS[1], 'probe_until', fmt(now + tonumber(ARGV[1])), 'probe_token', ARGV[2])
return {'probe', '0'}
"""
)

#: KEYS[1] breaker hash; ARGV[1] probe token.
_RELEASE_PROBE = """
if redis.call('HGET', KEYS[1], 'probe_token') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe_token', 'probe_until')
end
return 1
"""

#: KEYS[1] breaker hash, KEYS[2] failures zset; ARGV window_s, threshold, open_s, member.
_RECORD_FAILURE = (
    _PRELUDE
    + _STATE
    + """
local open_s = tonumber(ARGV[3])
local function open()
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'open_until', fmt(now + open_s), 'open_s', fmt(open_s))
end
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if ou then
  if now >= ou then open() end
  return state_of()
end
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
redis.call('ZADD', KEYS[2], fmt(now + window), ARGV[4])
redis.call('PEXPIRE', KEYS[2], string.format('%d', math.ceil(window * 1000) + 1000))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then open() end
return state_of()
"""
)

#: KEYS[1] breaker hash, KEYS[2] failures zset.
_RECORD_SUCCESS = (
    _PRELUDE
    + _STATE
    + """
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if ou and now >= ou then redis.call('DEL', KEYS[1], KEYS[2]) end
return state_of()
"""
)

#: KEYS[1] breaker hash, KEYS[2] failures zset.
_BREAKER = _PRELUDE + _STATE + "return state_of()\n"

#: KEYS[1] knm:inflight:<carrier>; ARGV[1] token, ARGV[2] ttl (s).
_ENTER = (
    _PRELUDE
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
_IN_FLIGHT = _PRELUDE + "return redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')\n"


def _rate_key(carrier: str) -> str:
    return f"knm:rate:{carrier}"


def _breaker_keys(carrier: str) -> list[str]:
    return [f"knm:breaker:{carrier}", f"knm:breaker:{carrier}:failures"]


def _inflight_key(carrier: str) -> str:
    return f"knm:inflight:{carrier}"


def _failures_key(carrier: str) -> str:
    return f"knm:failures:{carrier}"


def _float(value: Any) -> float:
    return float(value) if value not in (None, "") else 0.0


def _breaker_state(reply: Any) -> BreakerState:
    status, open_until, retry_in, failures, probing = reply
    return BreakerState(
        BreakerStatus(status),
        float(open_until) if open_until else None,
        _float(retry_in),
        int(failures),
        bool(int(probing)),
    )


class RedisCoordinator(Coordinator):
    """Coordination shared by every process on one Redis (Lua scripts on the server's clock)."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._next_slot = self.redis.register_script(_NEXT_SLOT)
        self._admit = self.redis.register_script(_ADMIT)
        self._release_probe = self.redis.register_script(_RELEASE_PROBE)
        self._record_failure = self.redis.register_script(_RECORD_FAILURE)
        self._record_success = self.redis.register_script(_RECORD_SUCCESS)
        self._breaker = self.redis.register_script(_BREAKER)
        self._enter = self.redis.register_script(_ENTER)
        self._in_flight = self.redis.register_script(_IN_FLIGHT)
        #: Stands in while Redis is unreachable (this process coordinates alone).
        self.fallback = LocalCoordinator()
        self._down_until = 0.0
        self._warned = 0.0

    # --------------------------------------------------------------------- Redis unreachable
    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: RedisError) -> LocalCoordinator:
        now = time.monotonic()
        self._down_until = now + REDIS_RETRY_S
        if now - self._warned >= 60:
            self._warned = now
            log.warning(
                "carrier coordination: Redis unreachable (%s: %s); rate limits and breakers "
                "hold for this process only for now",
                type(exc).__name__,
                exc,
            )
        return self.fallback

    # ------------------------------------------------------------------------------ rate limit
    def acquire(self, carrier: str, rate_per_s: float) -> float:
        if rate_per_s <= 0:
            return 0.0
        if self._up():
            try:
                return float(self._acquire(keys=[_rate_key(carrier)], args=[1.0 / rate_per_s]))
            except RedisError as exc:
                return self._down(exc).acquire(carrier, rate_per_s)
        return self.fallback.acquire(carrier, rate_per_s)

    def next_slot(self, carrier: str) -> float | None:
        reply = self._next_slot(keys=[_rate_key(carrier)])
        return float(reply) if reply else None

    # ------------------------------------------------------------------------- circuit breaker
    def admit(self, carrier: str, probe_lease_s: float) -> Admission:
        if self._up():
            token = uuid.uuid4().hex
            try:
                verdict, retry_in = self._admit(
                    keys=_breaker_keys(carrier)[:1], args=[probe_lease_s, token]
                )
            except RedisError as exc:
                return self._down(exc).admit(carrier, probe_lease_s)
            if verdict == "closed":
                return Admission(True, BreakerStatus.CLOSED)
            if verdict == "open":
                return Admission(False, BreakerStatus.OPEN, float(retry_in))
            if verdict == "busy":
                return Admission(False, BreakerStatus.HALF_OPEN, float(retry_in))
            return Admission(True, BreakerStatus.HALF_OPEN, 0.0, token)
        return self.fallback.admit(carrier, probe_lease_s)

    def release_probe(self, carrier: str, token: str) -> None:
        if self._up():
            try:
                self._release_probe(keys=_breaker_keys(carrier)[:1], args=[token])
            except RedisError as exc:
                self._down(exc)  # the claim lapses at the end of its lease
        self.fallback.release_probe(carrier, token)

    def record_failure(
        self, carrier: str, window_s: float, threshold: int, open_s: float
    ) -> BreakerState:
        if self._up():
            try:
                reply = self._record_failure(
                    keys=_breaker_keys(carrier),
                    args=[window_s, threshold, open_s, uuid.uuid4().hex],
                )
                return _breaker_state(reply)
            except RedisError as exc:
                return self._down(exc).record_failure(carrier, window_s, threshold, open_s)
        return self.fallback.record_failure(carrier, window_s, threshold, open_s)

    def record_success(self, carrier: str) -> BreakerState:
        if self._up():
            try:
                return _breaker_state(self._record_success(keys=_breaker_keys(carrier)))
            except RedisError as exc:
                return self._down(exc).record_success(carrier)
        return self.fallback.record_success(carrier)

    def breaker(self, carrier: str) -> BreakerState:
        return _breaker_state(self._breaker(keys=_breaker_keys(carrier)))

    # ------------------------------------------------------------------------------- in flight
    def enter(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> str:
        token = uuid.uuid4().hex
        if self._up():
            try:
                self._enter(keys=[_inflight_key(carrier)], args=[token, ttl_s])
                return token
            except RedisError as exc:
                return self._down(exc).enter(carrier, ttl_s)
        return self.fallback.enter(carrier, ttl_s)

    def leave(self, carrier: str, token: str) -> None:
        if self._up():
            try:
                self.redis.zrem(_inflight_key(carrier), token)
            except RedisError as exc:
                self._down(exc)  # the token stops counting at its deadline
        self.fallback.leave(carrier, token)

    def in_flight(self, carrier: str) -> int:
        return int(self._in_flight(keys=[_inflight_key(carrier)]))

    # ------------------------------------------------------------------------ recent failures
    def note_failure(self, carrier: str, reason: str) -> None:
        if not self._up():
            self.fallback.note_failure(carrier, reason)
            return
        item = json.dumps({"at": _utc_now(), "reason": reason})
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.lpush(_failures_key(carrier), item)
            pipe.ltrim(_failures_key(carrier), 0, FAILURES_KEPT - 1)
            pipe.execute()
        except RedisError as exc:
            self._down(exc).note_failure(carrier, reason)

    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        raw: list[str] = self.redis.lrange(_failures_key(carrier), 0, FAILURES_KEPT - 1)  # type: ignore[assignment]
        for text in raw:
            try:
                item = json.loads(text)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append({"at": str(item.get("at", "")), "reason": str(item.get("reason", ""))})
        return out

    # ------------------------------------------------------------------------------- the rest
    def reset(self, carrier: str) -> None:
        self.redis.delete(
            _rate_key(carrier),
            *_breaker_keys(carrier),
            _inflight_key(carrier),
            _failures_key(carrier),
        )
        self.fallback.reset(carrier)

    def close(self) -> None:
        self.redis.close()


# ============================================================================ per process
def coordination_url(settings: Settings) -> str | None:
    """``coordination_url``, else the broker's URL when it is Redis, else ``None`` (local)."""
    if settings.coordination_url:
        return settings.coordination_url
    broker = settings.broker_url
    if broker and broker.startswith(("redis://", "rediss://")):
        return broker
    return None


_coordinators: dict[str | None, Coordinator] = {}
_coordinators_lock = threading.Lock()


def coordinator_for(settings: Settings) -> Coordinator:
    """The process's coordinator for the settings' coordination URL (one per URL)."""
    url = coordination_url(settings)
    with _coordinators_lock:
        found = _coordinators.get(url)
        if found is None:
            found = RedisCoordinator(url) if url else LocalCoordinator()
            _coordinators[url] = found
        return found


def reset_coordinators() -> None:
    """Forget every coordinator of this process (tests; local state is lost)."""
    with _coordinators_lock:
        for coordinator in _coordinators.values():
            coordinator.close()
        _coordinators.clear()


def _after_fork() -> None:
    # A forked worker must not share the parent's local state or inherit a held lock.
    global _coordinators_lock
    _coordinators_lock = threading.Lock()
    _coordinators.clear()


os.register_at_fork(after_in_child=_after_fork)
