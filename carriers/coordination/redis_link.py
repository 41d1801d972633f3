"""The coordination Redis, and whether to use it right now.

If the coordination Redis cannot be reached, a process coordinates alone for ``REDIS_RETRY_S``
at a time (warned in the log at most once a minute), then tries Redis again: provider calls go
on, coordinated within this process only. Each part of the coordination (rate limit, breaker,
in-flight counts, recent failures) falls back to its in-process twin on its own.
"""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: After the coordination Redis failed, how long this process coordinates alone before retrying.
REDIS_RETRY_S = 5.0


class RedisLink:
    """One Redis client and the process's view of whether it is reachable."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        self._down_until = 0.0
        self._warned = 0.0

    def up(self) -> bool:
        """Whether to try Redis now (not within ``REDIS_RETRY_S`` of its last failure)."""
        return time.monotonic() >= self._down_until

    def down(self, exc: RedisError) -> None:
        """Redis failed: coordinate in this process alone for a while."""
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

    def close(self) -> None:
        self.redis.close()
