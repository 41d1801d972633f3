"""The coordinator: one object per process and coordination URL that gives the carrier
integrations their rate limit, circuit breaker, in-flight counts and recent failures.

``LocalCoordinator`` holds them for this process only; ``RedisCoordinator`` shares them with
every process on one Redis, each part falling back to its in-process twin while Redis is
unreachable (``RedisCoordinator.fallback``). ``coordinator_for(settings)`` picks one.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from carriers.coordination.breaker import (
    Admission,
    BreakerState,
    LocalBreakers,
    RedisBreakers,
)
from carriers.coordination.in_flight import DEFAULT_FLIGHT_TTL_S, LocalInFlight, RedisInFlight
from carriers.coordination.rate_limit import LocalRateLimit, RedisRateLimit
from carriers.coordination.recent_failures import LocalRecentFailures, RedisRecentFailures
from carriers.coordination.redis_link import RedisLink
from carriers.coordination.times import iso
from config.settings import Settings


class Coordinator(ABC):
    """Rate limits, circuit breakers, in-flight counts and recent failures, per carrier."""

    rate_limit: LocalRateLimit | RedisRateLimit
    breakers: LocalBreakers | RedisBreakers
    flights: LocalInFlight | RedisInFlight
    failures: LocalRecentFailures | RedisRecentFailures

    # ------------------------------------------------------------------------------ rate limit
    def acquire(self, carrier: str, rate_per_s: float) -> float:
        """Reserve the carrier's next send slot; the seconds to sleep before sending.

        ``rate_per_s`` <= 0 means no limit (0.0 at once, nothing reserved).
        """
        return self.rate_limit.acquire(carrier, rate_per_s)

    def next_slot(self, carrier: str) -> float | None:
        """When the carrier's next send may go (epoch seconds), ``None`` when it may go now."""
        return self.rate_limit.next_slot(carrier)

    # ------------------------------------------------------------------------- circuit breaker
    def admit(self, carrier: str, probe_lease_s: float) -> Admission:
        """May a call go now? Claims the half-open probe (held at most ``probe_lease_s``)."""
        return self.breakers.admit(carrier, probe_lease_s)

    def release_probe(self, carrier: str, token: str) -> None:
        """Give back a probe claim that has not settled the breaker (no-op when it has)."""
        self.breakers.release_probe(carrier, token)

    def record_failure(
        self, carrier: str, window_s: float, threshold: int, open_s: float
    ) -> BreakerState:
        """A provider call failed (retries used up).

        Closed: the failure counts in a ``window_s`` sliding window, and the ``threshold``-th
        opens the breaker for ``open_s``. Half-open: re-opens at once. Open: nothing changes
        (a call that started before the breaker opened).
        """
        return self.breakers.record_failure(carrier, window_s, threshold, open_s)

    def record_success(self, carrier: str) -> BreakerState:
        """The provider answered: a half-open breaker closes (and forgets its failures).

        While closed the window is left alone (failures count whatever succeeds in between);
        while open, a call that started before the breaker opened changes nothing.
        """
        return self.breakers.record_success(carrier)

    def breaker(self, carrier: str) -> BreakerState:
        """The carrier's breaker now."""
        return self.breakers.breaker(carrier)

    # ------------------------------------------------------------------------------- in flight
    def enter(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> str:
        """Count a call in flight until ``leave`` or at most ``ttl_s``; its token."""
        return self.flights.enter(carrier, ttl_s)

    def leave(self, carrier: str, token: str) -> None:
        """The call of ``token`` is over."""
        self.flights.leave(carrier, token)

    def in_flight(self, carrier: str) -> int:
        """Calls in flight to the carrier (every process sharing this coordinator)."""
        return self.flights.in_flight(carrier)

    @contextmanager
    def calling(self, carrier: str, ttl_s: float = DEFAULT_FLIGHT_TTL_S) -> Iterator[None]:
        """Count the block as one call in flight."""
        token = self.enter(carrier, ttl_s)
        try:
            yield
        finally:
            self.leave(carrier, token)

    # ------------------------------------------------------------------------ recent failures
    def note_failure(self, carrier: str, reason: str) -> None:
        """Keep ``reason`` (credential-free) among the carrier's last ``FAILURES_KEPT``."""
        self.failures.note_failure(carrier, reason)

    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        """The carrier's recent failures, newest first: ``{"at": <UTC ISO>, "reason"}``."""
        return self.failures.recent_failures(carrier)

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
                "open_until": iso(state.open_until),
                "retry_in_s": round(state.retry_in_s, 3),
                "probing": state.probing,
                "failures_in_window": state.failures,
                "recent_failures": self.recent_failures(carrier),
                "rate_limit_next_slot": iso(self.next_slot(carrier)),
            }
        return out


class LocalCoordinator(Coordinator):
    """In-process coordination (thread-safe): no-Redis setups and tests. ``clock``: epoch s."""

    rate_limit: LocalRateLimit
    breakers: LocalBreakers
    flights: LocalInFlight
    failures: LocalRecentFailures

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rate_limit = LocalRateLimit(clock)
        self.breakers = LocalBreakers(clock)
        self.flights = LocalInFlight(clock)
        self.failures = LocalRecentFailures(clock)

    def reset(self, carrier: str) -> None:
        for part in (self.rate_limit, self.breakers, self.flights, self.failures):
            part.reset(carrier)

    def close(self) -> None:
        """Nothing to release."""


class RedisCoordinator(Coordinator):
    """Coordination shared by every process on one Redis (Lua scripts on the server's clock).

    If the Redis cannot be reached, it falls back to ``fallback`` (this process only) for a
    few seconds at a time (logged): provider calls go on. The read-only views (``breaker``,
    ``in_flight``, ``recent_failures``, ``next_slot``, ``snapshot``) raise ``redis.RedisError``
    instead, so ``knm status`` can say Redis is down.
    """

    rate_limit: RedisRateLimit
    breakers: RedisBreakers
    flights: RedisInFlight
    failures: RedisRecentFailures

    def __init__(self, redis_url: str) -> None:
        self.link = RedisLink(redis_url)
        self.redis = self.link.redis
        #: Stands in while Redis is unreachable (this process coordinates alone).
        self.fallback = LocalCoordinator()
        self.rate_limit = RedisRateLimit(self.link, self.fallback.rate_limit)
        self.breakers = RedisBreakers(self.link, self.fallback.breakers)
        self.flights = RedisInFlight(self.link, self.fallback.flights)
        self.failures = RedisRecentFailures(self.link, self.fallback.failures)

    def reset(self, carrier: str) -> None:
        self.redis.delete(
            *self.rate_limit.keys(carrier),
            *self.breakers.keys(carrier),
            *self.flights.keys(carrier),
            *self.failures.keys(carrier),
        )
        self.fallback.reset(carrier)

    def close(self) -> None:
        self.link.close()


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
