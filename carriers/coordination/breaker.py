"""The per-carrier circuit breaker, and the gate every provider call passes.

``record_failure`` counts failed provider calls in a sliding window; at the threshold the
breaker opens for ``open_s``. ``admit`` answers whether a call may go: closed, yes; open, no
(retry in ...); half-open (``open_s`` has passed), exactly one caller claims the probe
(atomically, under a lease so a crashed prober does not hold the breaker forever). Its
``record_success`` closes the breaker, its ``record_failure`` re-opens it. The wait an open
breaker reports is simply what is left of its open period: breakers compute no backoff.

In Redis every step is one Lua script on the server's clock. Keys (``<carrier>`` is the module
name, e.g. ``knm_telnyx``):

* ``knm:breaker:<carrier>``: hash ``open_until``, ``open_s``, ``probe_until``, ``probe_token``;
  absent while the breaker is closed;
* ``knm:breaker:<carrier>:failures``: sorted set of failures scored by when they leave the window.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from carriers.coordination.redis_link import RedisLink
from carriers.coordination.times import LUA_PRELUDE
from carriers.retry import CircuitOpenError
from config.carrier_settings import CarrierHttpSettings

if TYPE_CHECKING:
    from carriers.coordination.coordinator import Coordinator

log = logging.getLogger(__name__)


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


# ===================================================================================== local
@dataclass
class _Breaker:
    open_until: float | None = None
    open_s: float = 0.0
    probe_token: str | None = None
    probe_until: float = 0.0
    #: When each failure in the window leaves it.
    failures: list[float] = field(default_factory=list)


class LocalBreakers:
    """The breakers of this process (thread-safe). ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, _Breaker] = {}

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
            b = self._breakers.setdefault(carrier, _Breaker())
            if b.open_until is not None:
                if now >= b.open_until:
                    self._breakers[carrier] = _Breaker(now + open_s, open_s)
                return self._state(carrier, now)
            b.failures = [t for t in b.failures if t > now]
            b.failures.append(now + window_s)
            if len(b.failures) >= threshold:
                self._breakers[carrier] = _Breaker(now + open_s, open_s)
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

    def reset(self, carrier: str) -> None:
        with self._lock:
            self._breakers.pop(carrier, None)

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


# ===================================================================================== Redis
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

#: KEYS[1] breaker hash; ARGV[1] probe lease (s), ARGV[2] probe token.
#: Returns {verdict, retry_in_s}: closed | open | busy (a probe is out) | probe (claimed).
_ADMIT = (
    LUA_PRELUDE
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
    LUA_PRELUDE
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
    LUA_PRELUDE
    + _STATE
    + """
local ou = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if ou and now >= ou then redis.call('DEL', KEYS[1], KEYS[2]) end
return state_of()
"""
)

#: KEYS[1] breaker hash, KEYS[2] failures zset.
_BREAKER = LUA_PRELUDE + _STATE + "return state_of()\n"


def breaker_keys(carrier: str) -> list[str]:
    return [f"knm:breaker:{carrier}", f"knm:breaker:{carrier}:failures"]


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


class RedisBreakers:
    """The breakers shared through Redis; every step but ``breaker`` (a read-only view, which
    raises ``RedisError``) falls back to ``local`` while Redis is unreachable."""

    def __init__(self, link: RedisLink, local: LocalBreakers) -> None:
        self.link = link
        self.local = local
        self._admit = link.redis.register_script(_ADMIT)
        self._release_probe = link.redis.register_script(_RELEASE_PROBE)
        self._record_failure = link.redis.register_script(_RECORD_FAILURE)
        self._record_success = link.redis.register_script(_RECORD_SUCCESS)
        self._breaker = link.redis.register_script(_BREAKER)

    def admit(self, carrier: str, probe_lease_s: float) -> Admission:
        if self.link.up():
            token = uuid.uuid4().hex
            try:
                verdict, retry_in = self._admit(
                    keys=breaker_keys(carrier)[:1], args=[probe_lease_s, token]
                )
            except RedisError as exc:
                self.link.down(exc)
                return self.local.admit(carrier, probe_lease_s)
            if verdict == "closed":
                return Admission(True, BreakerStatus.CLOSED)
            if verdict == "open":
                return Admission(False, BreakerStatus.OPEN, float(retry_in))
            if verdict == "busy":
                return Admission(False, BreakerStatus.HALF_OPEN, float(retry_in))
            return Admission(True, BreakerStatus.HALF_OPEN, 0.0, token)
        return self.local.admit(carrier, probe_lease_s)

    def release_probe(self, carrier: str, token: str) -> None:
        if self.link.up():
            try:
                self._release_probe(keys=breaker_keys(carrier)[:1], args=[token])
            except RedisError as exc:
                self.link.down(exc)  # the claim lapses at the end of its lease
        self.local.release_probe(carrier, token)

    def record_failure(
        self, carrier: str, window_s: float, threshold: int, open_s: float
    ) -> BreakerState:
        if self.link.up():
            try:
                reply = self._record_failure(
                    keys=breaker_keys(carrier),
                    args=[window_s, threshold, open_s, uuid.uuid4().hex],
                )
                return _breaker_state(reply)
            except RedisError as exc:
                self.link.down(exc)
        return self.local.record_failure(carrier, window_s, threshold, open_s)

    def record_success(self, carrier: str) -> BreakerState:
        if self.link.up():
            try:
                return _breaker_state(self._record_success(keys=breaker_keys(carrier)))
            except RedisError as exc:
                self.link.down(exc)
        return self.local.record_success(carrier)

    def breaker(self, carrier: str) -> BreakerState:
        return _breaker_state(self._breaker(keys=breaker_keys(carrier)))

    def keys(self, carrier: str) -> list[str]:
        return breaker_keys(carrier)


# ====================================================================================== gate
class BreakerGate:
    """How one carrier's provider calls pass its breaker (the integrations and their feature
    providers share it): ``admitted`` lets a call through or raises ``CircuitOpenError``
    (nothing sent); ``answered`` and ``failed`` report how the call went. A call whose
    transient failures outlived every retry counts against the breaker; any answer from the
    provider (a success or a refusal) closes a half-open one. Failures are kept for
    ``knm status``."""

    def __init__(
        self, coordinator: Coordinator, carrier: str, settings: CarrierHttpSettings
    ) -> None:
        self.coordinator = coordinator
        self.carrier = carrier
        self.settings = settings

    @contextmanager
    def admitted(self) -> Iterator[Admission]:
        """Pass the breaker for the block, or raise ``CircuitOpenError`` (nothing sent); a
        half-open breaker's probe claim is handed back when the block ends, whatever happens."""
        admission = self.coordinator.admit(self.carrier, self.settings.order_lease_s)
        if not admission.allowed:
            raise CircuitOpenError(self.carrier, admission.retry_in_s)
        if admission.probe_token is not None:
            log.info("%s: circuit breaker half-open, this call probes the provider", self.carrier)
        try:
            yield admission
        finally:
            if admission.probe_token is not None:
                self.coordinator.release_probe(self.carrier, admission.probe_token)

    def answered(self) -> None:
        """The provider answered (a success or a refusal): a half-open breaker closes."""
        self.coordinator.record_success(self.carrier)

    def failed(self, what: str, reason: str, *, transient: bool) -> None:
        """Keep ``what`` failed (``"<action> <number>"``) for ``knm status``; a transient
        failure counts against the breaker, any other is an answer."""
        self.coordinator.note_failure(self.carrier, f"{what}: {reason}")
        if not transient:
            self.answered()
            return
        http = self.settings
        state = self.coordinator.record_failure(
            self.carrier, http.breaker_window_s, http.breaker_failures, http.breaker_open_s
        )
        if state.open_until is not None and state.retry_in_s > 0:
            log.warning(
                "%s: circuit breaker open for %.0f s after repeated failures (last: %s)",
                self.carrier,
                state.retry_in_s,
                reason,
            )
