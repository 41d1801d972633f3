"""What every HTTP integration shares: the provisioning gates and the safe order/release flow.

A subclass says how to talk to its provider (``_order``, ``_owned``, and for providers that
release upstream ``_release``/``_released``); this class makes each order or release safe to
retry:

1. the provisioning ledger records the intent before anything is sent (``carriers.ledger``);
2. if an earlier attempt's outcome is unknown, the provider is asked first (``_owned`` /
   ``_released``) and nothing is sent when the earlier attempt took effect;
3. a call that fails ambiguously (timeout or lost connection after sending, 500/502/504, an
   answer that cannot be read: the request was sent, its effect is unknown) is followed by the
   same question before any new attempt or any report, with backoff in between (steps 2 and 3
   are ``carriers.retry.SendThenConfirm``, the loop the feature providers use too);
4. the outcome is recorded: ``done`` with the carrier data, ``failed`` on the provider's refusal,
   or left for reconciliation when retries ran out with the outcome still unknown.

Errors reach the caller as KAZOO's ``by_carrier`` fault carrying the provider's message.

Every order or release first passes the carrier's circuit breaker (``Integration.breaker``):
while it is open nothing is sent and ``CircuitOpenError`` leaves the operation (the task layer
re-queues the request); once half-open, one call probes the provider. A call whose transient
failures outlived every retry counts against the breaker; any answer from the provider (a
success or a refusal) closes a half-open one. Failures and refusals are kept for ``knm status``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from carriers.base import Carrier, CarrierContext, each_number
from carriers.coordination import BreakerGate, coordinator_for
from carriers.http import CarrierHttp
from carriers.ledger import Action, LeaseLostError, ProvisioningLedger, Settled, Ticket
from carriers.retry import (
    CarrierCallError,
    FailureKind,
    PermanentCallError,
    TransientCallError,
)
from carriers.retry import MalformedAnswerError as MalformedAnswerError
from carriers.retry import ProviderRefusalError as ProviderRefusalError
from carriers.retry import UnresolvedOutcomeError as UnresolvedOutcomeError
from knm.domain import errors
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber

log = logging.getLogger(__name__)

Send = Callable[[PhoneNumber, Ticket], dict[str, Any]]
Confirm = Callable[[PhoneNumber, Ticket], dict[str, Any] | None]


class Integration(Carrier):
    """A carrier module reached over HTTP."""

    #: The section of ``settings.carriers`` (``KNM_CARRIERS__<KEY>__...``).
    config_key: ClassVar[str]
    #: Disconnect checks the provisioning gates (Telnyx, VoIP Innovations).
    gated_disconnect: ClassVar[bool] = False
    #: Disconnect calls the provider (Vitelity, VoIP Innovations); others are no-ops upstream.
    releases_upstream: ClassVar[bool] = False

    def __init__(self, ctx: CarrierContext) -> None:
        super().__init__(ctx)
        self.config: Any = self.read_config(ctx.settings)
        self.coordinator = coordinator_for(ctx.settings)
        self.http = CarrierHttp(
            self.name,
            ctx.settings.carrier_http,
            secrets=self._secrets(),
            coordinator=self.coordinator,
            rate_per_s=self.config.rate_limit_per_s,
        )
        self.ledger = ProvisioningLedger(
            ctx.db["provisioning"], ctx.settings.carrier_http.order_lease_s
        )

    # ----------------------------------------------------------------- what subclasses provide
    def _secrets(self) -> list[str]:
        """Every credential of this carrier's config (masked in errors and logs)."""
        out: list[str] = []
        for value in self.config.__dict__.values():
            if hasattr(value, "get_secret_value"):
                out.append(value.get_secret_value())
        return out

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        """Buy ``pn``; return the carrier data the number keeps afterwards."""
        raise NotImplementedError

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        """The number's carrier data if the provider shows it as ours (an earlier order took
        effect), else ``None``."""
        raise NotImplementedError

    def _release(self, pn: PhoneNumber, ticket: Ticket) -> None:
        """Give ``pn`` back to the provider."""

    def _released(self, pn: PhoneNumber, ticket: Ticket) -> bool:
        """Whether the provider no longer holds ``pn`` for us (an earlier release took effect)."""
        return False

    # ------------------------------------------------------------------------- the contract
    def acquire_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        return each_number(pns, lambda pn: self.acquire(pn, request_id))

    def disconnect_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        return each_number(pns, lambda pn: self.disconnect(pn, request_id))

    def acquire_number(self, pn: PhoneNumber) -> None:
        self.acquire(pn, None)

    def disconnect_number(self, pn: PhoneNumber) -> None:
        self.disconnect(pn, None)

    def acquire(self, pn: PhoneNumber, request_id: str | None) -> None:
        """Buy ``pn`` once, whatever fails or is retried on the way."""
        if not self.provisioning_enabled(pn):
            return
        data = self._provision(pn, Action.ACQUIRE, request_id, self._order, self._owned)
        pn.set_carrier_data(data)

    def disconnect(self, pn: PhoneNumber, request_id: str | None) -> None:
        """Release ``pn`` upstream (where the provider has a release call)."""
        if self.gated_disconnect and not self.provisioning_enabled(pn):
            return
        if not self.releases_upstream:
            return

        def send(pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
            self._release(pn, ticket)
            return {}

        def confirm(pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
            return {} if self._released(pn, ticket) else None

        self._provision(pn, Action.DISCONNECT, request_id, send, confirm)

    def provisioning_enabled(self, pn: PhoneNumber) -> bool:
        """KAZOO's gates: call the API, pretend (sandbox), or refuse."""
        if self.config.enable_provisioning:
            return True
        if self.config.sandbox_provisioning:
            return False
        raise errors.unspecified("provisioning_disabled", pn.number)

    # ------------------------------------------------------------------------- the safe flow
    def _provision(
        self,
        pn: PhoneNumber,
        action: Action,
        request_id: str | None,
        send: Send,
        confirm: Confirm,
    ) -> dict[str, Any]:
        with self.breaker.admitted():
            return self._provision_flow(pn, action, request_id, send, confirm)

    @property
    def breaker(self) -> BreakerGate:
        """The gate of this carrier's circuit breaker (its feature providers pass it too)."""
        return BreakerGate(self.coordinator, self.name, self.ctx.settings.carrier_http)

    def _provision_flow(
        self,
        pn: PhoneNumber,
        action: Action,
        request_id: str | None,
        send: Send,
        confirm: Confirm,
    ) -> dict[str, Any]:
        begun = self.ledger.begin(self.name, pn.number, action, request_id)
        if isinstance(begun, Settled):
            return begun.carrier_data
        ticket = begun
        loop = self.http.send_then_confirm(
            f"{self.name} {action} {pn.number}", ask_first=ticket.reconcile
        )
        try:
            data = loop.run(lambda: send(pn, ticket), lambda: confirm(pn, ticket))
            return self._finish(ticket, data, "reconciled" if loop.reconciled else "done")
        except PermanentCallError as exc:
            self.ledger.fail(ticket, exc.reason)
            self.breaker.failed(f"{action} {pn.number}", exc.reason, transient=False)
            raise errors.by_carrier(pn.number, exc.reason, self.name) from None
        except CarrierCallError as exc:
            untouched = (
                isinstance(exc, TransientCallError)
                and exc.kind in (FailureKind.NOT_SENT, FailureKind.REFUSED)
                and not loop.uncertain
                and not ticket.refs
            )
            if untouched:  # never reached the provider, or it refused to act: nothing happened
                self.ledger.fail(ticket, exc.reason)
            else:
                self.ledger.abandon(ticket, exc.reason)
            self.breaker.failed(f"{action} {pn.number}", exc.reason, transient=True)
            raise errors.by_carrier(pn.number, exc.reason, self.name, retryable=True) from None
        except KnmError as exc:
            self.ledger.fail(ticket, str(exc))
            self.breaker.failed(f"{action} {pn.number}", str(exc), transient=False)
            raise
        except BaseException:
            self.ledger.abandon(ticket, "interrupted")
            raise

    def _finish(self, ticket: Ticket, data: dict[str, Any], how: str) -> dict[str, Any]:
        try:
            self.ledger.finish(ticket, data, how)
        except LeaseLostError:
            log.warning(
                "%s %s %s: lease expired before the outcome was recorded; another attempt "
                "reconciles it",
                self.name,
                ticket.action,
                ticket.number,
            )
        self.breaker.answered()
        return data
