"""knm_bandwidth: Bandwidth's legacy "numbers.api" v2 XML API. Deprecated.

Every verb is one ``POST`` to ``base_url`` (KAZOO's ``numbers_api_url``) with an XML body whose
root element is the verb and whose first child is the developer key. Search
``areaCodeNumberSearch`` / ``npaNxxNumberSearch``; order ``basicNumberOrder`` with the
``numberID`` the search returned (its answer replaces the carrier data); disconnect calls
nothing upstream (KAZOO).

Ownership, asked after an ambiguous order: ``getTelephoneNumber`` with the number's 10 digits
(``tn``); a ``success`` answer listing the number with a status other than ``Available`` means
it is on the account. The verb is in the API's list of supported operations, but its request
and answer shapes are this module's assumption: they are unverified against the retired API
(knm's sandbox speaks them).

Migrating to knm_bandwidth2 (Bandwidth's iris API, which replaced numbers.api): configure it
with ``KNM_CARRIERS__BANDWIDTH2__ACCOUNT_ID``, ``__API_USERNAME``, ``__API_PASSWORD``,
``__SITE_ID`` and ``__SIP_PEER`` (``__BASE_URL`` defaults to ``https://api.inetwork.com/v1.0``),
put ``knm_bandwidth2`` in place of ``knm_bandwidth`` in ``KNM_CARRIER_MODULES``, then move the
stored numbers with ``knm carriers convert knm_bandwidth knm_bandwidth2``. Until then this
module keeps searching and ordering as KAZOO did, and says once per process that it is
deprecated.
"""

from __future__ import annotations

import logging
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any, ClassVar, Final

import httpx

from carriers import xmltext
from carriers.bandwidth2 import XmlContent, order_name, xml_document
from carriers.base import SearchRequest, SearchResult
from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import strip_plus_one, to_npan
from config.carrier_settings import BandwidthSettings
from knm.domain.number import NumberState, PhoneNumber

log = logging.getLogger(__name__)

NAME = "knm_bandwidth"

#: The attributes of every request's root element.
ROOT_ATTRIBUTES: Final = (
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns="http://www.bandwidth.com/api/"'
)
HEADERS: Final[dict[str, str]] = {
    "Accept": "*/*",
    "X-BWC-IN-Control-Processing-Type": "process",
    "Content-Type": "text/xml",
}
DEPRECATION: Final = (
    "knm_bandwidth (Bandwidth's legacy numbers.api) is deprecated: configure knm_bandwidth2 "
    "(KNM_CARRIERS__BANDWIDTH2__*) and move stored numbers with "
    "`knm carriers convert knm_bandwidth knm_bandwidth2`"
)

_STATUS_REASONS: Final[dict[int, str]] = {
    401: "authentication",
    403: "authorization",
    404: "not_found",
    500: "server_error",
    503: "server_error",
}

_deprecation_logged = False
_deprecation_lock = threading.Lock()


def warn_deprecated() -> None:
    """Log the deprecation once per process."""
    global _deprecation_logged
    with _deprecation_lock:
        if _deprecation_logged:
            return
        _deprecation_logged = True
    log.warning(DEPRECATION)


# ================================================================================ pure parts
def request_body(verb: str, developer_key: str, children: list[tuple[str, XmlContent]]) -> str:
    """The body of one verb: the developer key first, then the verb's children."""
    return xml_document(verb, [("developerKey", developer_key), *children], ROOT_ATTRIBUTES)


def search_request(prefix: str, quantity: int) -> tuple[str, list[tuple[str, XmlContent]]]:
    """The verb and children of a search: 3 digits by area code, else by NPA-NXX."""
    digits = strip_plus_one(prefix)
    if len(digits) == 3:
        return "areaCodeNumberSearch", [("areaCode", digits), ("maxQuantity", str(quantity))]
    return "npaNxxNumberSearch", [("npaNxx", digits[:6]), ("maxQuantity", str(quantity))]


def order_children(
    number_id: str, name: str, ext_ref_id: str, subscriber: str, endpoints: list[str]
) -> list[tuple[str, XmlContent]]:
    """``basicNumberOrder``'s children; ``endPoints`` only when configured."""
    children: list[tuple[str, XmlContent]] = [
        ("orderName", name),
        ("extRefID", ext_ref_id),
        ("numberIDs", [("id", number_id)]),
        ("subscriber", subscriber),
    ]
    if endpoints:
        children.append(("endPoints", [("host", host) for host in endpoints]))
    return children


def read(response: httpx.Response) -> ET.Element:
    """The answer's XML document; the status mapping first.

    A 2xx that is not XML is malformed (after an order its effect is unknown).
    """
    status = response.status_code
    if status in _STATUS_REASONS:
        reason = _STATUS_REASONS[status]
        message = _message(response.content)
        raise ProviderRefusalError(NAME, f"{reason}: {message}" if message else reason, status)
    body = response.content.lstrip()
    problem = "the answer is not XML"
    if body.startswith(b"<?xml"):
        try:
            return xmltext.parse(body)
        except xmltext.XmlError as exc:
            problem = str(exc)
    if 200 <= status < 300:
        raise MalformedAnswerError(NAME, f"empty_response: {problem}", status)
    raise ProviderRefusalError(NAME, f"empty_response (HTTP {status})", status)


def _message(body: bytes) -> str | None:
    try:
        return xmltext.text(xmltext.parse(body), "errors", "error", "message")
    except xmltext.XmlError:
        return None


def check(root: ET.Element, status: int | None = None) -> ET.Element:
    """``root`` when ``/*/status`` is ``success``, else the provider's error message."""
    outcome = xmltext.text(root, "status")
    if outcome == "success":
        return root
    message = xmltext.text(root, "errors", "error", "message")
    raise ProviderRefusalError(NAME, message or f"status {outcome or 'missing'}", status)


def decode(response: httpx.Response) -> ET.Element:
    return check(read(response), response.status_code)


def parse_number(item: ET.Element) -> dict[str, Any]:
    """One ``telephoneNumber`` element, absent values omitted."""
    found = {
        "number_id": xmltext.text(item, "numberID"),
        "ten_digit": xmltext.text(item, "tenDigit"),
        "formatted_number": xmltext.text(item, "formattedNumber"),
        "e164": xmltext.text(item, "e164"),
        "npa_nxx": xmltext.text(item, "npaNxx"),
        "status": xmltext.text(item, "status"),
    }
    out: dict[str, Any] = {key: value for key, value in found.items() if value is not None}
    rate_center = {
        "name": xmltext.text(item, "rateCenter", "name"),
        "lata": xmltext.text(item, "rateCenter", "lata"),
        "state": xmltext.text(item, "rateCenter", "state"),
    }
    out["rate_center"] = {key: value for key, value in rate_center.items() if value is not None}
    return out


def parse_search(root: ET.Element) -> list[SearchResult]:
    """Every ``telephoneNumbers/telephoneNumber`` with an ``e164``, in document order."""
    out = []
    for item in xmltext.path(root, "telephoneNumbers", "telephoneNumber"):
        data = parse_number(item)
        if data.get("e164"):
            out.append(SearchResult(data["e164"], NAME, NumberState.DISCOVERY, data))
    return out


def parse_order(root: ET.Element) -> dict[str, Any]:
    """``/numberOrderResponse/numberOrder`` as the number's new carrier data."""
    orders = xmltext.path(root, "numberOrder")
    if not orders:
        return {"number": {}}
    order = orders[0]
    found = {
        "order_id": xmltext.text(order, "orderID"),
        "order_number": xmltext.text(order, "orderNumber"),
        "order_name": xmltext.text(order, "orderName"),
        "ext_ref_id": xmltext.text(order, "extRefID"),
        "accountID": xmltext.text(order, "accountID"),
        "accountName": xmltext.text(order, "accountName"),
        "quantity": xmltext.text(order, "quantity"),
    }
    out: dict[str, Any] = {key: value for key, value in found.items() if value is not None}
    numbers = xmltext.path(order, "telephoneNumbers", "telephoneNumber")
    out["number"] = parse_number(numbers[0]) if numbers else {}
    return out


def owned_number(root: ET.Element, number: str) -> dict[str, Any] | None:
    """The ``getTelephoneNumber`` answer's entry for ``number`` when it is on the account."""
    if xmltext.text(root, "status") != "success":
        return None
    for item in xmltext.descendants(root, "telephoneNumber"):
        data = parse_number(item)
        same = data.get("e164") == number or data.get("ten_digit") == to_npan(number)
        if same and data.get("status") != "Available":
            return data
    return None


def acquiring_account(pn: PhoneNumber, ticket: Ticket) -> str:
    """``extRefID``: KAZOO sent the ``auth_by`` account, which the carrier contract does not
    carry; the account the number is assigned to is the closest, else knm's request id."""
    return pn.assigned_to or ticket.request_id or ""


# ================================================================================ the module
class BandwidthCarrier(Integration):
    """Bandwidth numbers through the retired numbers.api (use knm_bandwidth2)."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "bandwidth"
    config_model: ClassVar[type[BandwidthSettings]] = BandwidthSettings
    max_prefix_length: ClassVar[int] = 3
    config: BandwidthSettings

    def _call(
        self, verb: str, children: list[tuple[str, XmlContent]], *, idempotent: bool
    ) -> httpx.Response:
        body = request_body(verb, self.config.developer_key.get_secret_value(), children)
        return self.http.call(
            "POST",
            self.config.base_url,
            idempotent=idempotent,
            content=body.encode(),
            headers=HEADERS,
        )

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        warn_deprecated()
        verb, children = search_request(request.prefix, request.quantity)
        return parse_search(decode(self._call(verb, children, idempotent=True)))

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        warn_deprecated()
        number_id = pn.carrier_data.get("number_id")
        if not isinstance(number_id, str) or not number_id:
            raise ProviderRefusalError(
                NAME, "no number_id in the carrier data: find the number with a search first"
            )
        children = order_children(
            number_id,
            order_name(self.config.order_name_prefix, time.time()),
            acquiring_account(pn, ticket),
            pn.assigned_to or "no_assigned_account",
            list(self.config.endpoints),
        )
        response = self._call("basicNumberOrder", children, idempotent=False)
        return parse_order(decode(response))

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        response = self._call("getTelephoneNumber", [("tn", to_npan(pn.number))], idempotent=True)
        if response.status_code == 404:
            return None
        found = owned_number(read(response), pn.number)
        return None if found is None else {"number": found}
