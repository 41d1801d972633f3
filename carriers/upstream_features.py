"""What the upstream feature providers share (``knm_telnyx_e911``, ``knm_telnyx_cnam``,
``knm_vitelity_e911``, ``knm_vitelity_cnam``): their carrier's HTTP client, circuit breaker and
provisioning ledger, and the carrier's way to make a change safe to retry.

A provider calls the API of the carrier it belongs to through that carrier's ``CarrierHttp``
(the pooled client, the carrier's shared rate limit, knm's retry policy), once the carrier's
circuit breaker lets calls through. Every change is sent with ``idempotent=False``: after an
ambiguous failure (a timeout once the request was sent, a 500/502/504) the provider is asked,
after a backoff, whether the change took effect (``confirm``) before it is sent again: the same
send-then-confirm loop as the carrier's orders (``carriers.retry.SendThenConfirm``). A change
with no such question sets an absolute state (a CNAM name, caller-ID lookup on or off), so
sending it again is harmless. The E911 providers also record their intent in the provisioning
ledger (module ``knm_<carrier>_e911``, actions ``activate``/``deactivate``), so a save that is
retried, or re-run after a crash, reconciles what an earlier attempt did instead of repeating it.

Failures reach the operation as KAZOO raises them: the provider's refusal (or an answer that
cannot be read) as ``unspecified(<reason>, number)``; transient failures that outlived every
retry, or an outcome the provider could not tell, as a retryable ``by_carrier`` fault naming the
provider module, so the task layer re-queues the request. While the carrier's breaker is open
nothing is sent and ``CircuitOpenError`` leaves the operation (re-queued as well).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from carriers.base import CarrierContext
from carriers.features import FeatureContext, FeatureProvider
from carriers.http import CarrierHttp
from carriers.integration import Integration
from carriers.ledger import Action, LeaseLostError, ProvisioningLedger, Settled, Ticket
from carriers.retry import CarrierCallError, PermanentCallError, ProviderRefusalError, ask
from knm.domain import errors
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber

log = logging.getLogger(__name__)

#: States in which a provider brings its features in line with the public fields.
ACTIVE_STATES = frozenset({NumberState.RESERVED, NumberState.IN_SERVICE, NumberState.PORT_IN})

#: The CNAM features (KAZOO removes the legacy ``cnam`` key on every save).
CNAM_FEATURES = ("inbound_cnam", "outbound_cnam", "cnam")


# ================================================================================ pure parts
def text_value(obj: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string value (KAZOO's ``get_ne_binary_value``), else ``None``."""
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


def is_true(value: Any) -> bool:
    """KAZOO's ``is_true``: ``true`` or the string ``"true"``."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def wanted_object(pn: PhoneNumber, key: str) -> dict[str, Any] | None:
    """The public ``key`` object when it is a non-empty object, else ``None`` (removed)."""
    value = pn.public.get(key)
    return dict(value) if isinstance(value, Mapping) and value else None


def display_name(pn: PhoneNumber) -> str | None:
    """The public ``cnam.display_name`` (outbound CNAM) when set."""
    cnam = pn.public.get("cnam")
    return text_value(cnam, "display_name") if isinstance(cnam, Mapping) else None


def active_display_name(pn: PhoneNumber) -> str | None:
    feature = pn.features.get("outbound_cnam")
    return text_value(feature, "display_name") if isinstance(feature, Mapping) else None


def inbound_lookup(pn: PhoneNumber) -> bool:
    """Whether the public ``cnam.inbound_lookup`` asks for inbound CNAM."""
    cnam = pn.public.get("cnam")
    return isinstance(cnam, Mapping) and is_true(cnam.get("inbound_lookup"))


def active_inbound_lookup(pn: PhoneNumber) -> bool:
    feature = pn.features.get("inbound_cnam")
    return isinstance(feature, Mapping) and is_true(feature.get("inbound_lookup"))


def e911_caller_name(address: Mapping[str, Any], account_name: str | None) -> str:
    """KAZOO's ``e911_caller_name``: ``caller_name``, else the assigned account's name padded
    with spaces to at least 3 characters, else ``Valued Customer``."""
    name = text_value(address, "caller_name")
    if name is not None:
        return name
    if account_name:
        return account_name.ljust(3)
    return "Valued Customer"


# ================================================================================ the base
class UpstreamFeatureProvider(FeatureProvider):
    """A feature provider whose features live at the number's carrier."""

    #: The carrier integration whose API, HTTP client, breaker and ledger the provider uses.
    carrier_class: ClassVar[type[Integration]]

    def __init__(self, ctx: CarrierContext) -> None:
        super().__init__(ctx)
        self.carrier = self.carrier_class(ctx)

    @property
    def http(self) -> CarrierHttp:
        return self.carrier.http

    @property
    def ledger(self) -> ProvisioningLedger:
        return self.carrier.ledger

    def calls_upstream(self, fctx: FeatureContext) -> bool:
        """``dry_run`` and the carrier's ``sandbox_provisioning`` change the features only."""
        return not fctx.dry_run and not self.carrier.config.sandbox_provisioning

    # ------------------------------------------------------------------------- one change
    def change[T](self, send: Callable[[], T], confirm: Callable[[], T | None] | None = None) -> T:
        """``send`` one change through the carrier's send-then-confirm loop: after an ambiguous
        failure (an answer that cannot be read included: the change was sent), back off and
        ``confirm`` (the provider's answer when the change took effect, ``None`` to send it
        again) before anything is sent again."""
        return self.http.send_then_confirm(self.name).run(send, confirm)

    def ask[T](self, confirm: Callable[[], T]) -> T:
        """The provider's answer to a reconciliation question; no answer leaves the outcome
        unknown (never a refusal: the next attempt must ask again)."""
        return ask(confirm, self.carrier.name)

    # ------------------------------------------------------------------------- guards
    def guarded[T](self, pn: PhoneNumber, action: Action, work: Callable[[], T]) -> T:
        """Run ``work`` (upstream calls) past the carrier's breaker, failures as knm errors."""
        breaker = self.carrier.breaker
        what = f"{action} {pn.number}"
        with breaker.admitted():
            try:
                result = work()
            except PermanentCallError as exc:  # a refusal, an unreadable answer
                breaker.failed(what, exc.reason, transient=False)
                raise errors.unspecified(exc.reason, pn.number) from None
            except CarrierCallError as exc:  # transient failures outlived the retries, or unknown
                breaker.failed(what, exc.reason, transient=True)
                raise errors.by_carrier(pn.number, exc.reason, self.name, retryable=True) from None
        breaker.answered()
        return result

    def ledgered(
        self,
        pn: PhoneNumber,
        action: Action,
        fctx: FeatureContext,
        run: Callable[[Ticket], dict[str, Any]],
        settled: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any]:
        """``run`` under the ledger: intent first, then ``done`` with its result, ``failed`` on a
        refusal, left for reconciliation when the outcome is unknown. A rerun of a request that
        already did this (``settled`` says the recorded result still fits) sends nothing."""
        begun = self.ledger.begin(self.name, pn.number, action, fctx.request_id)
        if isinstance(begun, Settled):
            if settled(begun.carrier_data):
                return begun.carrier_data
            # the same request asks for something else now (a job with the number twice)
            fresh = self.ledger.begin(self.name, pn.number, action, None)
            assert isinstance(fresh, Ticket)  # without a request id nothing is settled
            begun = fresh
        ticket = begun
        try:
            result = run(ticket)
        except ProviderRefusalError as exc:
            self.ledger.fail(ticket, exc.reason)
            raise
        except CarrierCallError as exc:  # the outcome is unknown: the next attempt reconciles
            self.ledger.abandon(ticket, exc.reason)
            raise
        except KnmError as exc:
            self.ledger.fail(ticket, str(exc))
            raise
        except BaseException:
            self.ledger.abandon(ticket, "interrupted")
            raise
        try:
            self.ledger.finish(ticket, result)
        except LeaseLostError:
            log.warning(
                "%s %s %s: lease expired before the outcome was recorded",
                self.name,
                action,
                pn.number,
            )
        return result


# ================================================================================ E911
class UpstreamE911Provider(UpstreamFeatureProvider):
    """The E911 flow both carriers share.

    In reserved/in_service/port_in: an address the number had and no longer asks for is removed
    upstream, an unchanged one calls nothing, a new one is provisioned and activated as the user
    gave it; any other state (and ``delete``) removes an active address. A subclass says how to
    ``provision`` and ``unprovision`` at its carrier and whether the carrier still holds
    something for the number (``held_upstream``).
    """

    features: ClassVar[tuple[str, ...]] = ("e911",)

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if pn.state not in ACTIVE_STATES:
            self.delete(pn, fctx)
            return
        wanted = wanted_object(pn, "e911")
        if wanted is None:
            self.removed(pn, fctx)
            return
        if pn.features.get("e911") == wanted:
            return
        if self.calls_upstream(fctx):
            self.provision(pn, wanted, fctx)
        pn.set_feature("e911", wanted)  # the address as the user gave it, not the cleansed one

    def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if "e911" in pn.features:
            self.removed(pn, fctx)

    def removed(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        """The address is to go: remove it upstream where the carrier holds one, deactivate."""
        if self.calls_upstream(fctx) and self.held_upstream(pn):
            self.unprovision(pn, fctx)
        pn.remove_feature("e911")

    def held_upstream(self, pn: PhoneNumber) -> bool:
        return True

    def provision(self, pn: PhoneNumber, wanted: dict[str, Any], fctx: FeatureContext) -> None:
        raise NotImplementedError

    def unprovision(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        raise NotImplementedError


# ================================================================================ CNAM
class UpstreamCnamProvider(UpstreamFeatureProvider):
    """The CNAM flow both carriers share.

    In reserved/in_service/port_in: outbound first (a removed display name is deactivated with
    no upstream call, an unchanged one calls nothing, a new one is sent then activated), then
    inbound lookup (sent and activated or deactivated when it changes), and the legacy ``cnam``
    key always goes; other states: nothing. ``delete`` turns the lookup off upstream where the
    carrier has it on, then removes every CNAM feature. A subclass says how to send a display
    name and a lookup switch.
    """

    features: ClassVar[tuple[str, ...]] = CNAM_FEATURES

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if pn.state not in ACTIVE_STATES:
            return
        self._outbound(pn, fctx)
        self._inbound(pn, fctx)
        pn.remove_feature("cnam")  # the legacy aggregate key

    def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if self.lookup_on_upstream(pn) and self.calls_upstream(fctx):
            self.send_lookup(pn, False)
        for key in self.features:
            pn.remove_feature(key)

    def _outbound(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        name = display_name(pn)
        if name is None:
            pn.remove_feature("outbound_cnam")  # no call upstream (KAZOO)
            return
        if name == active_display_name(pn):
            return
        if self.calls_upstream(fctx):
            self.send_display_name(pn, name)
        pn.set_feature("outbound_cnam", {"display_name": name})
        log.info("cnam_request: %s outbound CNAM %r (by %s)", pn.number, name, fctx.auth_by)

    def _inbound(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        wanted = inbound_lookup(pn)
        if wanted == active_inbound_lookup(pn):
            return
        if self.calls_upstream(fctx):
            self.send_lookup(pn, wanted)
        if wanted:
            pn.set_feature("inbound_cnam", {"inbound_lookup": True})
        else:
            pn.remove_feature("inbound_cnam")

    def lookup_on_upstream(self, pn: PhoneNumber) -> bool:
        """Whether the carrier has caller-ID name lookup on for the number (delete turns it off)."""
        return "inbound_cnam" in pn.features

    def send_display_name(self, pn: PhoneNumber, name: str) -> None:
        raise NotImplementedError

    def send_lookup(self, pn: PhoneNumber, enable: bool) -> None:
        raise NotImplementedError
