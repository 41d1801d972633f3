"""The HTTP layer every integration shares: one pooled httpx client per carrier per process.

``CarrierHttp.call`` sends one request through ``carriers.retry.call_with_retries``, which
retries what is safe to retry: a read (``idempotent=True``) on any transient failure; an order
or a release only when the provider cannot have acted on it (not sent, 429/503). A failure after
which an order may have taken effect raises ``AmbiguousCallError`` at once, so the caller asks
the provider before trying again (``carriers.integration``). Every other answer is returned for
the carrier's own parser to judge. The failure classes live in ``carriers.retry`` and are
importable from here too.

Credentials never reach a log line or an error: URLs are logged without their query string,
here and in httpx's own request log (Vitelity sends its password there), and every configured
secret is masked in error texts.

With a ``coordinator`` (``carriers.coordination``) every attempt first takes the carrier's next
send slot under its shared rate limit (``rate_per_s``; 0: none) and counts as in flight while
on the wire. ``CircuitOpenError`` is what an integration raises, before sending anything, while
the carrier's circuit breaker is open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import httpx

from carriers.retry import AmbiguousCallError as AmbiguousCallError
from carriers.retry import CarrierCallError as CarrierCallError
from carriers.retry import CircuitOpenError as CircuitOpenError
from carriers.retry import PermanentCallError as PermanentCallError
from carriers.retry import RetryPolicy, SendThenConfirm, call_with_retries, describe_failure
from carriers.retry import TransientCallError as TransientCallError
from config.carrier_settings import CarrierHttpSettings

if TYPE_CHECKING:
    from carriers.coordination import Coordinator

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("knm")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"knm/{_version()} (telephone-number manager)"


class _QueryFilter(logging.Filter):
    """httpx logs every request's full URL at INFO ("HTTP Request: POST <url> ..."); some
    providers (Vitelity) take credentials as query parameters, so the query is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _QueryFilter) for f in logger.filters):
        logger.addFilter(_QueryFilter())


_install_log_filter()


@dataclass(frozen=True)
class ClientKey:
    carrier: str
    verify: bool
    connect_timeout_s: float
    timeout_s: float


_clients: dict[ClientKey, httpx.Client] = {}
_clients_lock = threading.Lock()


def pooled_client(key: ClientKey) -> httpx.Client:
    """The process's client for one carrier: connections are reused across calls and threads."""
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.is_closed:
            client = httpx.Client(
                verify=key.verify,
                timeout=httpx.Timeout(key.timeout_s, connect=key.connect_timeout_s),
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
            )
            _clients[key] = client
        return client


def close_clients() -> None:
    """Close every pooled client (a worker shutting down, tests)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


class CarrierHttp:
    """Calls to one provider with knm's retry policy."""

    def __init__(
        self,
        carrier: str,
        settings: CarrierHttpSettings,
        *,
        secrets: Iterable[str] = (),
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        policy: RetryPolicy | None = None,
        coordinator: Coordinator | None = None,
        rate_per_s: float = 0.0,
    ) -> None:
        self.carrier = carrier
        self.client = client or pooled_client(
            ClientKey(carrier, settings.verify_tls, settings.connect_timeout_s, settings.timeout_s)
        )
        self.policy = policy or RetryPolicy(
            max_attempts=settings.max_attempts,
            base_s=settings.backoff_base_s,
            max_s=settings.backoff_max_s,
            retry_after_max_s=settings.retry_after_max_s,
        )
        self.sleep = sleep
        self.coordinator = coordinator
        self.rate_per_s = rate_per_s
        #: How long one attempt counts as in flight at most (a killed process's call stops
        #: counting then): every timeout of one request, with room to spare.
        self.flight_ttl_s = 2 * (settings.connect_timeout_s + settings.timeout_s)
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def safe(self, text: str) -> str:
        """``text`` with every configured secret masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def call(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = None,
        auth: httpx.BasicAuth | None = None,
    ) -> httpx.Response:
        """Send one request, retrying what is safe to retry; return the provider's answer."""

        def attempt(number: int) -> httpx.Response:
            self._pace()
            started = time.monotonic()
            try:
                with self._in_flight():
                    response = self.client.request(
                        method,
                        url,
                        params=params,
                        headers=headers,
                        content=content,
                        json=json,
                        auth=auth,
                    )
            except httpx.HTTPError as exc:
                self._log(method, url, number, started, self.safe(describe_failure(exc)))
                raise
            self._log(method, url, number, started, str(response.status_code))
            return response

        return call_with_retries(
            attempt,
            carrier=self.carrier,
            idempotent=idempotent,
            policy=self.policy,
            sleep=self.sleep,
            mask=self.safe,
        )

    def send_then_confirm(self, label: str, *, ask_first: bool = False) -> SendThenConfirm:
        """The send-then-confirm loop for one non-idempotent change to this provider, with this
        client's retry policy and sleep (``label`` names the change in the log)."""
        return SendThenConfirm(
            self.carrier, self.policy, self.sleep, label=label, ask_first=ask_first
        )

    def _pace(self) -> None:
        """Wait for this carrier's next send slot (the rate limit shared by every worker)."""
        if self.coordinator is None or self.rate_per_s <= 0:
            return
        wait = self.coordinator.acquire(self.carrier, self.rate_per_s)
        if wait > 0:
            self.sleep(wait)

    def _in_flight(self) -> contextlib.AbstractContextManager[None]:
        if self.coordinator is None:
            return contextlib.nullcontext()
        return self.coordinator.calling(self.carrier, self.flight_ttl_s)

    def _log(self, method: str, url: str, attempt: int, started: float, outcome: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            path = httpx.URL(url).copy_with(query=None)
            log.debug(
                "%s %s %s attempt %d -> %s in %.0f ms",
                self.carrier,
                method,
                path,
                attempt,
                outcome,
                (time.monotonic() - started) * 1000,
            )
