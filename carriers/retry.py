"""How a provider call's failure is classified, and how long to wait before the next try
(DECISIONS 7).

Four kinds of failure:

* ``NOT_SENT``: the request never reached the provider (connection refused, connect timeout,
  no free connection in the pool). Safe to send again, whatever the call.
* ``REFUSED``: the provider answered that it did not process the request (HTTP 429, 503).
  Safe to send again after the delay it asks for (``Retry-After``).
* ``AMBIGUOUS``: the request may have taken effect (read timeout, connection lost after sending,
  500/502/504). Safe to repeat for a read; an order or a release must first ask the provider
  whether the earlier attempt took effect.
* ``PERMANENT``: repeating cannot help (other 4xx, a malformed answer, the provider's refusal).
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import httpx


class FailureKind(StrEnum):
    NOT_SENT = "not_sent"
    REFUSED = "refused"
    AMBIGUOUS = "ambiguous"
    PERMANENT = "permanent"

    @property
    def transient(self) -> bool:
        return self is not FailureKind.PERMANENT


#: Exceptions raised before any byte of the request left this process.
_NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: Exceptions raised after the request (or part of it) was sent.
_AMBIGUOUS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def classify_exception(exc: httpx.HTTPError) -> FailureKind:
    """The kind of a transport failure (a malformed URL or a redirect loop is permanent)."""
    if isinstance(exc, _NOT_SENT):
        return FailureKind.NOT_SENT
    if isinstance(exc, _AMBIGUOUS):
        return FailureKind.AMBIGUOUS
    return FailureKind.PERMANENT


def classify_status(status: int) -> FailureKind | None:
    """The kind of an HTTP status that is a transient failure; ``None`` for every other status."""
    if status in (429, 503):
        return FailureKind.REFUSED
    if status >= 500:
        return FailureKind.AMBIGUOUS
    return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); ``None`` when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; ``Retry-After`` wins when given."""

    max_attempts: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    retry_after_max_s: float = 60.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``None`` means do not retry: the attempts are used up, or the provider asks for a wait
        longer than ``retry_after_max_s``.
        """
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.retry_after_max_s else None
        ceiling = min(self.max_s, self.base_s * (2 ** (attempt - 1)))
        return float(ceiling * self.rng())
