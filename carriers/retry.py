"""Retrying provider calls: how a failure is classified, how long to wait before the next
try, the loop that repeats one HTTP request while that is safe, and the send-then-confirm loop
of non-idempotent calls.

Four kinds of failure:

* ``NOT_SENT``: the request never reached the provider (connection refused, connect timeout,
  no free connection in the pool). Safe to send again, whatever the call.
* ``REFUSED``: the provider answered that it did not process the request (HTTP 429, 503).
  Safe to send again after the delay it asks for (``Retry-After``).
* ``AMBIGUOUS``: the request may have taken effect (read timeout, connection lost after sending,
  500/502/504). Safe to repeat for a read; an order or a release must first ask the provider
  whether the earlier attempt took effect.
* ``PERMANENT``: repeating cannot help (other 4xx, a malformed answer, the provider's refusal).

The wait between tries is exponential backoff with full jitter, capped (``backoff_delay``); a
provider's ``Retry-After`` wins (``RetryPolicy``). The task layer re-queues whole requests with
the same formula. ``call_with_retries`` repeats one request: a read (``idempotent=True``) on any
transient failure; an order or a release only when the provider cannot have acted on it (not
sent, 429/503). A failure after which an order may have taken effect raises
``AmbiguousCallError`` at once, so the caller asks the provider before trying again:
``SendThenConfirm`` is that caller, for the integrations' orders and releases and the upstream
feature providers' changes alike.
"""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import httpx

log = logging.getLogger(__name__)


class FailureKind(StrEnum):
    NOT_SENT = "not_sent"
    REFUSED = "refused"
    AMBIGUOUS = "ambiguous"
    PERMANENT = "permanent"

    @property
    def transient(self) -> bool:
        return self is not FailureKind.PERMANENT


class CarrierCallError(Exception):
    """A provider call failed; ``reason`` is safe to show (no credentials)."""

    def __init__(self, carrier: str, reason: str, kind: FailureKind, status: int | None = None):
        super().__init__(f"{carrier}: {reason}")
        self.carrier = carrier
        self.reason = reason
        self.kind = kind
        self.status = status


class AmbiguousCallError(CarrierCallError):
    """A non-idempotent call may have taken effect: ask the provider before sending it again."""


class TransientCallError(CarrierCallError):
    """Transient failures used up every attempt (or the provider asked for too long a wait)."""


class PermanentCallError(CarrierCallError):
    """Repeating the call cannot help."""


class ProviderRefusalError(PermanentCallError):
    """The provider answered and said no (its own error message is the reason)."""

    def __init__(self, carrier: str, reason: str, status: int | None = None) -> None:
        super().__init__(carrier, reason, FailureKind.PERMANENT, status)


class MalformedAnswerError(PermanentCallError):
    """The provider's answer could not be read. After an order or a release its effect is
    unknown: the provider is asked, as after a timeout (a search simply finds nothing)."""

    def __init__(self, carrier: str, reason: str, status: int | None = None) -> None:
        super().__init__(carrier, reason, FailureKind.PERMANENT, status)


class UnresolvedOutcomeError(CarrierCallError):
    """The provider could not say whether an earlier attempt took effect."""

    def __init__(self, carrier: str, reason: str) -> None:
        super().__init__(carrier, reason, FailureKind.AMBIGUOUS)


class CircuitOpenError(Exception):
    """The carrier's circuit breaker holds calls back: nothing was sent; retry the request in
    ``retry_in_s`` seconds.

    Deliberately neither a ``CarrierCallError`` nor a ``KnmError``: it leaves the operation
    untouched so the task layer can re-queue the whole request with a countdown.
    """

    def __init__(self, carrier: str, retry_in_s: float) -> None:
        super().__init__(f"{carrier}: circuit breaker open, retry in {retry_in_s:.1f} s")
        self.carrier = carrier
        self.retry_in_s = retry_in_s


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


def describe_failure(exc: httpx.HTTPError) -> str:
    """A transport failure as one line (``ReadTimeout: timed out``); mask secrets before use."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


# ================================================================================= waiting
def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    *,
    min_s: float = 0.0,
    rng: Callable[[], float] | None = None,
) -> float:
    """The wait after failed try number ``attempt`` (1-based): exponential backoff with full
    jitter, a random share (``rng()`` in [0, 1), by default ``random.random``) of ``base_s``
    doubled per earlier try and capped at ``max_s``; never below ``min_s``.

    The one backoff formula of knm: provider calls, re-queued carrier shares and task retries
    after a store failure all wait this long.
    """
    ceiling = min(max_s, base_s * (2 ** (attempt - 1)))
    share = rng() if rng is not None else random.random()  # noqa: S311  (jitter, not security)
    return float(max(min_s, ceiling * share))


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
        return backoff_delay(attempt, self.base_s, self.max_s, rng=self.rng)


# ============================================================================ one request
def call_with_retries(
    send: Callable[[int], httpx.Response],
    *,
    carrier: str,
    idempotent: bool,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    mask: Callable[[str], str] = str,
) -> httpx.Response:
    """``send`` try number 1, 2, ... until an answer that is not a transient failure; return it
    (the carrier's own parser judges it).

    A read (``idempotent``) is repeated after any transient failure, an order or a release only
    when the provider cannot have acted on it (``NOT_SENT``, ``REFUSED``); after an ambiguous
    one it raises ``AmbiguousCallError`` at once. A permanent transport failure raises
    ``PermanentCallError``; transient failures that use up ``policy`` raise
    ``TransientCallError``. ``mask`` hides credentials in the reasons.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            response = send(attempt)
        except httpx.HTTPError as exc:
            kind = classify_exception(exc)
            reason = mask(describe_failure(exc))
            if kind is FailureKind.PERMANENT:
                raise PermanentCallError(carrier, reason, kind) from None
            if kind is FailureKind.AMBIGUOUS and not idempotent:
                raise AmbiguousCallError(carrier, reason, kind) from None
            _wait_or_give_up(policy, sleep, carrier, attempt, None, reason, kind, None)
            continue
        status = response.status_code
        kind_of_status = classify_status(status)
        if kind_of_status is None:
            return response
        reason = f"HTTP {status}"
        if kind_of_status is FailureKind.AMBIGUOUS and not idempotent:
            raise AmbiguousCallError(carrier, reason, kind_of_status, status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        _wait_or_give_up(
            policy, sleep, carrier, attempt, retry_after, reason, kind_of_status, status
        )


def _wait_or_give_up(
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    carrier: str,
    attempt: int,
    retry_after: float | None,
    reason: str,
    kind: FailureKind,
    status: int | None,
) -> None:
    delay = policy.delay(attempt, retry_after)
    if delay is None:
        raise TransientCallError(carrier, f"{reason} (after {attempt} attempts)", kind, status)
    if delay > 0:
        sleep(delay)


# ======================================================================= send, then confirm
def ask[T](confirm: Callable[[], T], carrier: str, sent: str | None = None) -> T:
    """The provider's answer to a reconciliation question (did an earlier attempt take effect?).

    Any failure to get an answer (even a permanent one, say a 404 from the ownership call)
    leaves the outcome unknown: ``UnresolvedOutcomeError``, never a refusal, so whoever retries
    asks again before sending. ``sent``: what became of our own last attempt, for the reason.
    """
    try:
        return confirm()
    except CarrierCallError as exc:
        earlier = f" (the attempt sent: {sent})" if sent else ""
        raise UnresolvedOutcomeError(
            carrier, f"cannot tell whether an earlier attempt took effect{earlier}: {exc.reason}"
        ) from None


class SendThenConfirm:
    """The loop that makes a non-idempotent call (an order, a release, a feature change) safe
    to repeat: nothing is sent again before the provider has said the last send did not work.

    ``run(send, confirm)`` sends; after an ambiguous failure (the request was sent, its effect
    is unknown; an answer that cannot be read counts too) it backs off (``policy``), then asks
    ``confirm`` (the provider's answer when the change took effect, ``None`` when it did not)
    before sending again. Without a ``confirm`` the change sets an absolute state and is simply
    sent again. A refusal after an ambiguous attempt is checked the same way: the earlier
    attempt may have worked. ``ask_first``: an earlier attempt's outcome is unknown already (the
    provisioning ledger says so), so the first step is the question. Used up attempts raise
    ``TransientCallError`` (kind ``AMBIGUOUS``); a question without an answer raises
    ``UnresolvedOutcomeError``.

    After ``run``: ``reconciled`` says the result is ``confirm``'s, and ``uncertain`` (after a
    failure too) that an attempt of this run may have taken effect.
    """

    def __init__(
        self,
        carrier: str,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        *,
        label: str | None = None,
        ask_first: bool = False,
    ) -> None:
        self.carrier = carrier
        self.policy = policy
        self.sleep = sleep
        self.label = label or carrier
        self.ask_first = ask_first
        self.uncertain = False
        self.reconciled = False

    def run[T](self, send: Callable[[], T], confirm: Callable[[], T | None] | None = None) -> T:
        attempt = 0
        pending = self.ask_first  # an attempt's outcome is unknown: ask before sending
        sent: str | None = None  # what became of the last attempt of this run
        while True:
            attempt += 1
            if pending and confirm is not None:
                found = ask(confirm, self.carrier, sent)
                if found is not None:
                    self.reconciled = True
                    return found
            pending = False
            try:
                return send()
            except (AmbiguousCallError, MalformedAnswerError) as exc:
                self.uncertain = True
                delay = self.policy.delay(attempt)
                if delay is None:
                    raise TransientCallError(
                        self.carrier,
                        f"{exc.reason} (after {attempt} attempts)",
                        FailureKind.AMBIGUOUS,
                    ) from None
                log.info("%s: %s; asking the provider before sending again", self.label, exc)
                self.sleep(delay)
                pending = True
                sent = exc.reason
            except PermanentCallError:
                if self.uncertain and confirm is not None:
                    found = self._confirm_quietly(confirm)
                    if found is not None:
                        self.reconciled = True
                        return found
                raise

    @staticmethod
    def _confirm_quietly[T](confirm: Callable[[], T | None]) -> T | None:
        """After a refusal that followed an ambiguous attempt: did that attempt succeed?"""
        try:
            return confirm()
        except CarrierCallError:
            return None
