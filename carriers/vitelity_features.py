"""Vitelity's number features: CNAM (``knm_vitelity_cnam``) and E911 (``knm_vitelity_e911``),
over the ``api.php`` query-string API of ``carriers.vitelity_api``.

CNAM: ``cmd=lidb`` sets the outbound name (the answer must say ``<response>ok</response>``);
``cmd=cnamenable`` / ``cnamdisable`` switch inbound lookup. KAZOO sent ``cnamenable`` on every
save while inbound lookup was on; here, as for every feature, an unchanged value calls nothing.
``cnamdisable``'s answer is ignored, as in KAZOO, except a transient failure that outlived the
retries, which fails the save (retryable) rather than leaving lookup on upstream unnoticed.

E911: ``cmd=e911send`` sets the DID's one E911 record (name, address, unit, city, state, zip),
``cmd=e911delete`` removes it (its answer ignored, as in KAZOO, but for transient failures).
The feature keeps the address the user gave (QUIRK fixed: KAZOO kept Vitelity's answer, which
never equals the address, so every later save re-sent it). A region given as a two-letter code
passes through (QUIRK fixed: KAZOO looked up full state names only and dropped ``CA``); a
missing ``extended_address`` sends no unit (KAZOO crashed).

Reconciliation, asked after an ambiguous ``e911send`` or ``e911delete``: ``cmd=e911getinfo``
reads the DID's record back (it is ours when it carries what was sent; none after a delete). No
captured answer was found; its shape is assumed to be ``<content><status>ok</status><info>
<name>..</name><address>..</address>...</info></content>``, and ``<status>fail</status>
<error>none</error>`` for a DID without a record (the plain API's ``none`` code, as
``listdids``). ``lidb``, ``cnamenable`` and ``cnamdisable`` set an absolute state: after an
ambiguous failure they are simply sent again.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from carriers import xmltext
from carriers.features import FeatureContext
from carriers.http import PermanentCallError
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Action, Ticket
from carriers.numbering import to_npan
from carriers.upstream_features import (
    UpstreamCnamProvider,
    UpstreamE911Provider,
    UpstreamFeatureProvider,
    e911_caller_name,
    text_value,
)
from carriers.vitelity_api import (
    CREDENTIAL_PARAMS,
    NAME,
    VitelityApi,
    command_params,
    item_object,
    read_answer,
    status_of,
)
from config.carrier_settings import VitelitySettings
from knm.domain.number import PhoneNumber

log = logging.getLogger(__name__)

E911_NAME = "knm_vitelity_e911"
CNAM_NAME = "knm_vitelity_cnam"
CARRIER = NAME

#: ``e911getinfo`` error texts that mean "no E911 record for this DID", not a failure.
NO_LOCATION = frozenset({"none", "no e911 record", "no e911 information", "not found"})

#: The ``e911send`` parameters an E911 record is compared on.
LOCATION_FIELDS = ("name", "address", "unittype", "unitnumber", "city", "state", "zip")

#: KAZOO's ``get_short_state``: full (lower-case) state and territory names to their codes.
STATE_CODES: dict[str, str] = {
    "alabama": "AL",
    "alaska": "AK",
    "american samoa": "AS",
    "arizona": "AZ",
    "arkansas": "AR",
    "california": "CA",
    "colorado": "CO",
    "connecticut": "CT",
    "delaware": "DE",
    "district of columbia": "DC",
    "federated states of micronesia": "FM",
    "florida": "FL",
    "georgia": "GA",
    "guam": "GU",
    "hawaii": "HI",
    "idaho": "ID",
    "illinois": "IL",
    "indiana": "IN",
    "iowa": "IA",
    "kansas": "KS",
    "kentucky": "KY",
    "louisiana": "LA",
    "maine": "ME",
    "marshall islands": "MH",
    "maryland": "MD",
    "massachusetts": "MA",
    "michigan": "MI",
    "minnesota": "MN",
    "mississippi": "MS",
    "missouri": "MO",
    "montana": "MT",
    "nebraska": "NE",
    "nevada": "NV",
    "new hampshire": "NH",
    "new jersey": "NJ",
    "new mexico": "NM",
    "new york": "NY",
    "north carolina": "NC",
    "north dakota": "ND",
    "northern mariana islands": "MP",
    "ohio": "OH",
    "oklahoma": "OK",
    "oregon": "OR",
    "palau": "PW",
    "pennsylvania": "PA",
    "puerto rico": "PR",
    "rhode island": "RI",
    "south carolina": "SC",
    "south dakota": "SD",
    "tennessee": "TN",
    "texas": "TX",
    "utah": "UT",
    "vermont": "VT",
    "virgin islands": "VI",
    "virginia": "VA",
    "washington": "WA",
    "west virginia": "WV",
    "wisconsin": "WI",
    "wyoming": "WY",
}
_CODES = frozenset(STATE_CODES.values())


# ================================================================================ pure parts
def short_state(region: str | None) -> str | None:
    """The two-letter code of ``region``: a full name, case-insensitive (KAZOO), or already a
    code (QUIRK fixed: KAZOO dropped it); anything else is ``None`` (the parameter is omitted)."""
    if region is None:
        return None
    name = region.lower()
    if name in STATE_CODES:
        return STATE_CODES[name]
    code = region.strip().upper()
    return code if code in _CODES else None


def unit(extended_address: str | None) -> tuple[str | None, str | None]:
    """``extended_address`` split at its first space: ``Apt 5`` -> ``(Apt, 5)``; one word is a
    unit type only; none sends no unit (KAZOO crashed)."""
    if extended_address is None:
        return None, None
    parts = extended_address.split(" ", 1)
    return parts[0], parts[1] if len(parts) > 1 else None


def scalar(value: Any) -> str | None:
    """A JSON value as a query parameter: strings as they are, numbers as text (a ``zip`` of
    ``94123``), anything else omitted."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def e911_name(address: Mapping[str, Any], account_name: str | None) -> str:
    """``customer_name``, else KAZOO's E911 caller name."""
    return text_value(address, "customer_name") or e911_caller_name(address, account_name)


def e911_params(
    number: str, address: Mapping[str, Any], account_name: str | None, config: VitelitySettings
) -> dict[str, str]:
    """``cmd=e911send`` for a number's ``e911`` object, in KAZOO's order."""
    unittype, unitnumber = unit(scalar(address.get("extended_address")))
    return command_params(
        [
            ("did", to_npan(number)),
            ("name", e911_name(address, account_name)),
            ("address", scalar(address.get("street_address"))),
            ("unittype", unittype),
            ("unitnumber", unitnumber),
            ("city", scalar(address.get("locality"))),
            ("state", short_state(scalar(address.get("region")))),
            ("zip", scalar(address.get("postal_code"))),
            ("xml", "yes"),
            ("cmd", "e911send"),
        ],
        config,
    )


def did_params(cmd: str, number: str, config: VitelitySettings) -> dict[str, str]:
    """``e911delete`` / ``e911getinfo``: ``did``, ``xml``, ``cmd`` and the credentials."""
    return command_params([("did", to_npan(number)), ("xml", "yes"), ("cmd", cmd)], config)


def lidb_params(number: str, name: str, config: VitelitySettings) -> dict[str, str]:
    """``cmd=lidb``: the outbound CNAM name."""
    return command_params(
        [("cmd", "lidb"), ("did", to_npan(number)), ("name", name), ("xml", "yes")], config
    )


def cnam_params(number: str, enable: bool, config: VitelitySettings) -> dict[str, str]:
    """``cmd=cnamenable`` / ``cnamdisable``: inbound CNAM lookup."""
    cmd = "cnamenable" if enable else "cnamdisable"
    return command_params([("did", to_npan(number)), ("cmd", cmd), ("xml", "yes")], config)


def public_params(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` without the credentials (what the ledger may keep)."""
    return {k: v for k, v in params.items() if k not in CREDENTIAL_PARAMS}


def _refused_or_unread(root: ET.Element) -> None:
    """``<status>fail</status>`` is the provider's refusal with its ``<error>``; a status other
    than ``ok`` cannot be read (KAZOO crashed)."""
    status = status_of(root)
    if status == "fail":
        raise ProviderRefusalError(CARRIER, xmltext.text(root, "error") or "fail")
    if status != "ok":
        raise MalformedAnswerError(CARRIER, f"unexpected_status: {status or 'none'}")


def check_ok(root: ET.Element) -> None:
    """A ``cnamenable`` answer must say ``ok``."""
    _refused_or_unread(root)


def check_lidb(root: ET.Element) -> None:
    """A ``lidb`` answer must say ``ok`` and ``<response>ok</response>``."""
    _refused_or_unread(root)
    response = xmltext.text(root, "response")
    if response is None:
        raise ProviderRefusalError(CARRIER, "resp_tag_not_found")
    if response != "ok":
        raise ProviderRefusalError(CARRIER, response)


def e911_value(root: ET.Element) -> dict[str, Any] | str:
    """An ``ok`` E911 answer's value: the first ``<info>`` as an object, or ``<response>``'s
    text, whichever comes first."""
    _refused_or_unread(root)
    for child in xmltext.children(root):
        name = xmltext.local(child.tag)
        if name == "info":
            return item_object(child)
        if name == "response":
            return xmltext.clean(child.text) or ""
    return ""


def location(root: ET.Element) -> dict[str, Any] | None:
    """An ``e911getinfo`` answer: the DID's E911 record, ``None`` when it has none."""
    if status_of(root) == "fail":
        error = xmltext.text(root, "error") or "fail"
        if error.strip().lower() in NO_LOCATION:
            return None
    value = e911_value(root)
    return value if isinstance(value, dict) else {}


def same_location(record: Mapping[str, Any], sent: Mapping[str, str]) -> bool:
    """Whether an E911 record carries what ``e911send`` sent (case and padding aside)."""

    def norm(value: Any) -> str:
        return str(value or "").strip().casefold()

    return all(norm(record.get(key)) == norm(sent.get(key)) for key in LOCATION_FIELDS)


# ================================================================================ the calls
class _VitelityFeature(UpstreamFeatureProvider):
    """The Vitelity calls both providers make."""

    carrier_class: ClassVar[type[VitelityApi]] = VitelityApi

    def _post[T](
        self,
        params: dict[str, str],
        decode_error: str,
        parse: Callable[[ET.Element], T],
        *,
        idempotent: bool = False,
    ) -> T:
        """One ``api.php`` call; the provider's texts are masked of any echoed credential."""
        response: httpx.Response = self.http.call(
            "POST", self.carrier.config.base_url, idempotent=idempotent, params=params
        )
        try:
            return parse(read_answer(response, decode_error))
        except (ProviderRefusalError, MalformedAnswerError) as exc:
            raise type(exc)(CARRIER, self.http.safe(exc.reason), exc.status) from None

    def _location(self, pn: PhoneNumber) -> dict[str, Any] | None:
        """``e911getinfo``: the DID's E911 record (the reconciliation question)."""
        params = did_params("e911getinfo", pn.number, self.carrier.config)
        return self._post(params, "invalid_resp_from_server", location, idempotent=True)


# ================================================================================ E911
class VitelityE911Provider(UpstreamE911Provider, _VitelityFeature):
    """E911 records at Vitelity (feature ``e911``)."""

    name: ClassVar[str] = E911_NAME

    def held_upstream(self, pn: PhoneNumber) -> bool:
        """Vitelity holds a record for the number while the feature is active."""
        return "e911" in pn.features

    def provision(self, pn: PhoneNumber, wanted: dict[str, Any], fctx: FeatureContext) -> None:
        params = e911_params(pn.number, wanted, fctx.account_name, self.carrier.config)
        sent = public_params(params)

        def located() -> dict[str, Any] | None:
            record = self._location(pn)
            return record if record is not None and same_location(record, sent) else None

        def run(ticket: Ticket) -> dict[str, Any]:
            if ticket.reconcile and ticket.refs.get("sent") == sent and self.ask(located):
                return {"address": wanted, "sent": sent}  # an unfinished attempt's send worked
            self.ledger.note(ticket, sent=sent)
            answer = self.change(
                lambda: self._post(params, "invalid_resp_from_server", e911_value), located
            )
            return {"address": wanted, "sent": sent, "answer": answer}

        def settled(done: dict[str, Any]) -> bool:
            return done.get("address") == wanted

        self.guarded(
            pn, Action.ACTIVATE, lambda: self.ledgered(pn, Action.ACTIVATE, fctx, run, settled)
        )

    def unprovision(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        params = did_params("e911delete", pn.number, self.carrier.config)

        def gone() -> bool | None:
            return True if self._location(pn) is None else None

        def send() -> bool:
            self._post(params, "invalid_resp_from_server", e911_value)
            return True

        def run(ticket: Ticket) -> dict[str, Any]:
            if ticket.reconcile and self.ask(gone):
                return {}
            try:
                self.change(send, gone)
            except PermanentCallError as exc:  # KAZOO ignores the answer
                log.warning("%s %s: e911delete answered %s", self.name, pn.number, exc.reason)
            return {}

        self.guarded(
            pn,
            Action.DEACTIVATE,
            lambda: self.ledgered(pn, Action.DEACTIVATE, fctx, run, lambda done: True),
        )


# ================================================================================ CNAM
class VitelityCnamProvider(UpstreamCnamProvider, _VitelityFeature):
    """Outbound CNAM (LIDB) and inbound CNAM lookup at Vitelity."""

    name: ClassVar[str] = CNAM_NAME

    def send_display_name(self, pn: PhoneNumber, name: str) -> None:
        params = lidb_params(pn.number, name, self.carrier.config)
        self.guarded(
            pn,
            Action.ACTIVATE,
            lambda: self.change(lambda: self._post(params, "invalid_resp_format", check_lidb)),
        )

    def send_lookup(self, pn: PhoneNumber, enable: bool) -> None:
        if not enable:
            self._disable(pn)
            return
        params = cnam_params(pn.number, True, self.carrier.config)
        self.guarded(
            pn,
            Action.ACTIVATE,
            lambda: self.change(lambda: self._post(params, "invalid_resp_server", check_ok)),
        )

    def _disable(self, pn: PhoneNumber) -> None:
        """``cnamdisable``; its answer is ignored (KAZOO), transient failures are not."""
        params = cnam_params(pn.number, False, self.carrier.config)

        def send() -> None:
            try:
                self.change(lambda: self._post(params, "invalid_resp_server", check_ok))
            except PermanentCallError as exc:
                log.warning("%s %s: cnamdisable answered %s", self.name, pn.number, exc.reason)

        self.guarded(pn, Action.DEACTIVATE, send)
