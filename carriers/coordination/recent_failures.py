"""The last ``FAILURES_KEPT`` failure reasons per carrier, newest first, with a UTC time
(``knm status`` shows them). In Redis: the list ``knm:failures:<carrier>`` of JSON
``{"at", "reason"}``, capped."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable

from redis.exceptions import RedisError

from carriers.coordination.redis_link import RedisLink
from carriers.coordination.times import iso, utc_now

#: Recent failures kept per carrier.
FAILURES_KEPT = 20


def failures_key(carrier: str) -> str:
    return f"knm:failures:{carrier}"


class LocalRecentFailures:
    """Recent failures within this process (thread-safe). ``clock``: epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[dict[str, str]]] = {}

    def note_failure(self, carrier: str, reason: str) -> None:
        with self._lock:
            kept = self._failures.setdefault(carrier, deque(maxlen=FAILURES_KEPT))
            kept.appendleft({"at": iso(self.clock()) or "", "reason": reason})

    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        with self._lock:
            return [dict(item) for item in self._failures.get(carrier, ())]

    def reset(self, carrier: str) -> None:
        with self._lock:
            self._failures.pop(carrier, None)


class RedisRecentFailures:
    """Recent failures of every process on one Redis; ``note_failure`` falls back to ``local``
    while Redis is unreachable, ``recent_failures`` (a read-only view) raises ``RedisError``."""

    def __init__(self, link: RedisLink, local: LocalRecentFailures) -> None:
        self.link = link
        self.local = local

    def note_failure(self, carrier: str, reason: str) -> None:
        if not self.link.up():
            self.local.note_failure(carrier, reason)
            return
        item = json.dumps({"at": utc_now(), "reason": reason})
        try:
            pipe = self.link.redis.pipeline(transaction=True)
            pipe.lpush(failures_key(carrier), item)
            pipe.ltrim(failures_key(carrier), 0, FAILURES_KEPT - 1)
            pipe.execute()
        except RedisError as exc:
            self.link.down(exc)
            self.local.note_failure(carrier, reason)

    def recent_failures(self, carrier: str) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        raw: list[str] = self.link.redis.lrange(failures_key(carrier), 0, FAILURES_KEPT - 1)  # type: ignore[assignment]
        for text in raw:
            try:
                item = json.loads(text)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append({"at": str(item.get("at", "")), "reason": str(item.get("reason", ""))})
        return out

    def keys(self, carrier: str) -> list[str]:
        return [failures_key(carrier)]
