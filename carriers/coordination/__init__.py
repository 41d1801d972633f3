"""Per-carrier throughput control shared by every worker: a rate limit, a circuit breaker,
in-flight counts and the recent failures (``knm status`` shows them). One concept per module:

* ``rate_limit``: evenly spaced sends, a burst of one;
* ``breaker``: the circuit breaker with its single half-open probe;
* ``in_flight``: calls on the wire, each with its own deadline;
* ``recent_failures``: the last reasons per carrier, for ``knm status``;
* ``redis_link``: the coordination Redis and the fall-back to this process when it is down;
* ``coordinator``: the object integrations use (``coordinator_for(settings)``).

``coordinator_for(settings)`` is the process's ``Coordinator`` for the settings'
``coordination_url`` (else the broker's URL when it is Redis): a ``RedisCoordinator`` that every
worker on that Redis shares, or a ``LocalCoordinator`` that holds for this process only. Redis
keys (``<carrier>`` is the module name, e.g. ``knm_telnyx``): ``knm:rate:<carrier>``,
``knm:breaker:<carrier>`` and ``knm:breaker:<carrier>:failures``, ``knm:inflight:<carrier>``,
``knm:failures:<carrier>`` (each module says what it holds).
"""

from carriers.coordination.breaker import Admission, BreakerGate, BreakerState, BreakerStatus
from carriers.coordination.coordinator import (
    Coordinator,
    LocalCoordinator,
    RedisCoordinator,
    coordination_url,
    coordinator_for,
    reset_coordinators,
)
from carriers.coordination.in_flight import DEFAULT_FLIGHT_TTL_S
from carriers.coordination.recent_failures import FAILURES_KEPT
from carriers.coordination.redis_link import REDIS_RETRY_S

__all__ = [
    "DEFAULT_FLIGHT_TTL_S",
    "FAILURES_KEPT",
    "REDIS_RETRY_S",
    "Admission",
    "BreakerGate",
    "BreakerState",
    "BreakerStatus",
    "Coordinator",
    "LocalCoordinator",
    "RedisCoordinator",
    "coordination_url",
    "coordinator_for",
    "reset_coordinators",
]
