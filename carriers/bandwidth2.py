"""knm_bandwidth2: Bandwidth's "Dashboard" (iris) REST API.

Every URL is ``<base_url>/accounts/<account_id>/...`` with HTTP Basic auth. Search
``GET availableNumbers``; order ``POST orders`` (one existing number), then poll
``GET orders/<id>`` while the order is ``RECEIVED``: every ``order_poll_interval_s``, at most
``order_poll_max`` times (KAZOO polled forever). Bandwidth's order id is written to
the provisioning ledger as soon as the POST answers, so an order left ``RECEIVED`` (poll cap, a
crash, a lost poll) is followed up by polling that same order, never by ordering again.
Disconnect calls nothing upstream (KAZOO).

Ownership, asked after an ambiguous order: with Bandwidth's order id in the ledger,
``GET orders/<id>`` (polled while ``RECEIVED``): ``COMPLETE`` means ours, ``FAILED`` means the
earlier order did not take effect. Without one (the POST itself timed out or its answer was
unreadable), ``GET orders?tn=<10 digits>`` lists the account's orders for the number
(``ResponseSelectWrapper/ListOrderIdUserIdDate/OrderIdUserIdDate`` with ``orderId`` and
``OrderStatus``); the newest ``COMPLETE`` one, else the newest ``RECEIVED`` one, is then
followed as above; no such order means nothing was bought. An order read this way must be
about the number (its ``TelephoneNumber``), should the ``tn`` filter ever be ignored.

Differences from KAZOO, on purpose: the toll-free search QUIRK is fixed (KAZOO sent
``855`` as ``tollFreeWildCardPattern=55*``, dropping the leading ``8``; knm sends the pattern
``85*`` and keeps the numbers of the NPA asked for); detail-format answers
(``TelephoneNumberDetailList``) are read too (KAZOO found nothing in them); an answer that
carries the provider's ``Error/Description`` outside an ``ErrorList`` keeps that message; an
XML answer is read whether or not it starts with ``<?xml`` (KAZOO required the declaration).
Reproduced: an empty search answer is an error (``Number not found``); the carrier data's
``order_id`` is the *customer* order id, not Bandwidth's (QUIRK, kept so the stored
data reads as KAZOO's; Bandwidth's own id stays in the ledger).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any, ClassVar, Final
from urllib.parse import quote

import httpx

from carriers import xmltext
from carriers.base import SearchRequest, SearchResult
from carriers.http import TransientCallError
from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import (
    GREGORIAN_OFFSET_S,
    TOLLFREE_WILDCARDS,
    US_TOLLFREE_NPAS,
    strip_plus_one,
    to_npan,
)
from carriers.retry import FailureKind
from config.carrier_settings import Bandwidth2Settings
from knm.domain.number import NumberState, PhoneNumber

NAME = "knm_bandwidth2"

RECEIVED: Final = "RECEIVED"
COMPLETE: Final = "COMPLETE"
FAILED: Final = "FAILED"

#: Headers of a POST; GETs send none besides the client's own.
POST_HEADERS: Final[dict[str, str]] = {
    "Accept": "*/*",
    "X-BWC-IN-Control-Processing-Type": "process",
    "Content-Type": "application/xml",
}

_STATUS_REASONS: Final[dict[int, str]] = {
    401: "authentication",
    403: "authorization",
    404: "not_found",
    500: "server_error",
    503: "server_error",
}

#: XML content: text, or child elements in order.
type XmlContent = str | list[tuple[str, XmlContent]]


# ================================================================================ pure parts
def xml_element(name: str, content: XmlContent, attributes: str = "") -> str:
    """``<name attributes>content</name>`` with text escaped (KAZOO inserted values raw)."""
    if isinstance(content, str):
        inner = xmltext.escape(content)
    else:
        inner = "".join(xml_element(child, value) for child, value in content)
    return f"<{name}{attributes}>{inner}</{name}>"


def xml_document(name: str, content: XmlContent, attributes: str = "") -> str:
    """A request body: the XML declaration, then one root element (KAZOO's xmerl output)."""
    return '<?xml version="1.0"?>' + xml_element(name, content, attributes)


def order_name(prefix: str, unix_s: float) -> str:
    """``<prefix>-<Gregorian seconds>`` (KAZOO's ``now_s``), e.g. ``Kazoo-63628571101``."""
    return f"{prefix}-{int(unix_s) + GREGORIAN_OFFSET_S}"


def search_params(prefix: str, quantity: int, max_quantity: int) -> tuple[str, dict[str, str]]:
    """The search kind (``tollfree``, ``wildcard``, ``npa``, ``npanxx``) and query.

    The toll-free row is the fixed QUIRK: ``855...`` asks for ``85*`` (KAZOO: ``55*``).
    """
    digits = strip_plus_one(prefix)
    count = str(min(quantity, max_quantity))
    head = digits[:3]
    if head in US_TOLLFREE_NPAS:
        pattern = head[:2] + "*"
        return "tollfree", {
            "tollFreeWildCardPattern": pattern,
            "enableTNDetail": "true",
            "quantity": count,
        }
    if head in TOLLFREE_WILDCARDS:
        return "wildcard", {
            "tollFreeWildCardPattern": head,
            "enableTNDetail": "false",
            "quantity": count,
        }
    if len(digits) == 3:
        return "npa", {"areaCode": digits, "enableTNDetail": "false", "quantity": count}
    return "npanxx", {"npaNxx": digits[:6], "enableTNDetail": "false", "quantity": count}


def read(response: httpx.Response) -> ET.Element:
    """The answer's XML document; the status mapping first.

    A refusal keeps the provider's ``Error/Description`` when the body has one. A 2xx that
    is not XML is malformed (after an order its effect is unknown); any other status that
    is not XML is a refusal.
    """
    status = response.status_code
    body = response.content.lstrip()
    root: ET.Element | None = None
    problem = "the answer is not XML"
    if body.startswith(b"<"):
        try:
            root = xmltext.parse(body)
        except xmltext.XmlError as exc:
            problem = str(exc)
    if status in _STATUS_REASONS:
        message = error_description(root) if root is not None else None
        reason = _STATUS_REASONS[status]
        raise ProviderRefusalError(NAME, f"{reason}: {message}" if message else reason, status)
    if root is None:
        if 200 <= status < 300:
            raise MalformedAnswerError(NAME, f"empty_response: {problem}", status)
        raise ProviderRefusalError(NAME, f"empty_response (HTTP {status})", status)
    return root


def is_success(root: ET.Element) -> bool:
    """KAZOO's success test: any number, site or peer listed, or an order status."""
    return bool(
        xmltext.find_path(root, "TelephoneNumberDetailList", "TelephoneNumberDetail")
        or xmltext.find_path(root, "TelephoneNumberList", "TelephoneNumber")
        or xmltext.find_path(root, "SitesResponse", "Sites", "Site")
        or xmltext.find_path(root, "TNSipPeersResponse", "SipPeers", "SipPeer")
        or xmltext.text_anywhere(root, "OrderStatus")
    )


def error_description(root: ET.Element) -> str | None:
    """``//ErrorList/Error/Description``, else any ``//Error/Description``."""
    return xmltext.text_anywhere(root, "ErrorList", "Error", "Description") or (
        xmltext.text_anywhere(root, "Error", "Description")
    )


def check(root: ET.Element, status: int | None = None) -> ET.Element:
    """``root`` when it counts as a success, else the provider's refusal."""
    if is_success(root):
        return root
    raise ProviderRefusalError(NAME, error_description(root) or "Number not found", status)


def decode(response: httpx.Response) -> ET.Element:
    """A successful answer's document (``read`` then ``check``)."""
    return check(read(response), response.status_code)


def _e164(text: str | None) -> str | None:
    if not text:
        return None
    return text if text.startswith("+") else "+1" + text


def _rate_center(item: ET.Element) -> dict[str, str]:
    found = {
        "name": xmltext.text(item, "RateCenter"),
        "lata": xmltext.text(item, "LATA"),
        "state": xmltext.text(item, "State"),
    }
    return {key: value for key, value in found.items() if value}


def parse_search(root: ET.Element, kind: str, prefix: str) -> list[SearchResult]:
    """The numbers of a search answer, in document order.

    Plain items (``TelephoneNumberList/TelephoneNumber``) and detail items
    (``TelephoneNumberDetailList/TelephoneNumberDetail``, number in ``FullNumber``). Local
    carrier data is ``{"rate_center": {...}}`` without empty values (``{}`` for plain items);
    toll-free carrier data is ``{}``. A toll-free NPA search keeps that NPA's numbers only.
    """
    items = [
        (xmltext.clean(item.text), item)
        for item in xmltext.path(root, "TelephoneNumberList", "TelephoneNumber")
    ] + [
        (xmltext.text(item, "FullNumber"), item)
        for item in xmltext.path(root, "TelephoneNumberDetailList", "TelephoneNumberDetail")
    ]
    keep = "+1" + strip_plus_one(prefix)[:3] if kind == "tollfree" else "+"
    out: list[SearchResult] = []
    for text, item in items:
        number = _e164(text)
        if number is None or not number.startswith(keep):
            continue
        data: dict[str, Any] = {}
        if kind in ("npa", "npanxx") and (rate_center := _rate_center(item)):
            data["rate_center"] = rate_center
        out.append(SearchResult(number, NAME, NumberState.DISCOVERY, data))
    return out


def order_body(
    name: str, customer_order_id: str | None, site_id: str, peer_id: str, tn: str
) -> str:
    """``POST orders`` for one existing number; ``CustomerOrderId`` only when known."""
    children: list[tuple[str, XmlContent]] = [("Name", name)]
    if customer_order_id:
        children.append(("CustomerOrderId", customer_order_id))
    children += [
        ("SiteId", site_id),
        ("PeerId", peer_id),
        (
            "ExistingTelephoneNumberOrderType",
            [("TelephoneNumberList", [("TelephoneNumber", tn)])],
        ),
    ]
    return xml_document("Order", children)


def order_ref(root: ET.Element) -> tuple[str | None, str | None]:
    """Bandwidth's order id (``Order/id``) and the order status (``//OrderStatus``)."""
    return xmltext.text(root, "Order", "id"), xmltext.text_anywhere(root, "OrderStatus")


def order_tn(root: ET.Element) -> str | None:
    """The number an order document is about (10 digits)."""
    return xmltext.text(
        root, "Order", "ExistingTelephoneNumberOrderType", "TelephoneNumberList", "TelephoneNumber"
    )


def completion_data(root: ET.Element) -> dict[str, str]:
    """The carrier data a ``COMPLETE`` order adds, empty values dropped.

    QUIRK reproduced: ``order_id`` is the *customer* order id.
    """
    tn = order_tn(root)
    found = {
        "order_id": xmltext.text(root, "Order", "CustomerOrderId"),
        "order_name": xmltext.text(root, "Order", "Name"),
        "number": "+1" + tn if tn else None,
    }
    return {key: value for key, value in found.items() if value}


def merge_carrier_data(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """KAZOO's ``update``: new keys are added, existing keys win."""
    return {**new, **existing}


def _child_text(element: ET.Element, name: str) -> str | None:
    """A child's text, the child's name matched without case (``orderId`` / ``OrderId``)."""
    wanted = name.lower()
    return xmltext.text_of([c for c in element if xmltext.local(c.tag).lower() == wanted])


def orders_for_number(root: ET.Element) -> list[tuple[str, str, str]]:
    """``(order id, status, date)`` of each order in a ``GET orders?tn=`` answer."""
    out = []
    for item in xmltext.descendants(root, "OrderIdUserIdDate"):
        order_id = _child_text(item, "orderId")
        if order_id:
            status = (_child_text(item, "OrderStatus") or "").upper()
            date = _child_text(item, "OrderDate") or _child_text(item, "lastModifiedDate") or ""
            out.append((order_id, status, date))
    return out


def pick_order(orders: list[tuple[str, str, str]]) -> str | None:
    """The order that may have bought the number: newest ``COMPLETE``, else newest ``RECEIVED``."""
    for wanted in (COMPLETE, RECEIVED):
        matching = sorted((o for o in orders if o[1] == wanted), key=lambda o: o[2])
        if matching:
            return matching[-1][0]
    return None


def acquiring_account(pn: PhoneNumber, ticket: Ticket) -> str | None:
    """Who the order is for: KAZOO sent the ``auth_by`` account, which the carrier contract
    does not carry; the account the number is being assigned to is the closest (the order
    is placed on its behalf), else knm's request id, which ties the order to the request."""
    return pn.assigned_to or ticket.request_id


def unable(exc: ProviderRefusalError | MalformedAnswerError) -> Exception:
    """The same failure, its reason prefixed as KAZOO's (``Unable to acquire number: ...``)."""
    return type(exc)(NAME, f"Unable to acquire number: {exc.reason}", exc.status)


# ================================================================================ the module
class Bandwidth2Carrier(Integration):
    """Bandwidth numbers: discovery by NPA, NPA-NXX or toll-free pattern; orders by number."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "bandwidth2"
    config_model: ClassVar[type[Bandwidth2Settings]] = Bandwidth2Settings
    #: KAZOO documents of the retired Bandwidth API move here when loaded.
    replaces: ClassVar[tuple[str, ...]] = ("knm_bandwidth",)
    max_prefix_length: ClassVar[int] = 3
    config: Bandwidth2Settings

    def _url(self, path: str) -> str:
        account = quote(self.config.account_id, safe="")
        return f"{self.config.base_url.rstrip('/')}/accounts/{account}/{path}"

    def _auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(
            self.config.api_username.get_secret_value(),
            self.config.api_password.get_secret_value(),
        )

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.http.call(
            "GET", self._url(path), idempotent=True, params=params, auth=self._auth()
        )

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        kind, params = search_params(
            request.prefix, request.quantity, self.config.max_search_quantity
        )
        root = decode(self._get("availableNumbers", params))
        return parse_search(root, kind, request.prefix)

    # --------------------------------------------------------------------------- ordering
    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        tn = to_npan(pn.number)
        body = order_body(
            order_name(self.config.order_name_prefix, time.time()),
            acquiring_account(pn, ticket),
            self.config.site_id,
            self.config.sip_peer,
            tn,
        )
        try:
            response = self.http.call(
                "POST",
                self._url("orders"),
                idempotent=False,
                content=body.encode(),
                headers=POST_HEADERS,
                auth=self._auth(),
            )
            root = read(response)
            if not is_success(root) and error_description(root) is None:
                reason = "empty_response: neither an order status nor an error"
                raise MalformedAnswerError(NAME, reason, response.status_code)
            check(root, response.status_code)
        except (ProviderRefusalError, MalformedAnswerError) as exc:
            raise unable(exc) from None
        order_id, status = order_ref(root)
        if order_id:
            self.ledger.note(ticket, order_id=order_id)
        if status in (None, RECEIVED):
            if not order_id:
                reason = f"Unable to acquire number: order {status or 'without status'} has no id"
                raise MalformedAnswerError(NAME, reason, response.status_code)
            root = self._follow(order_id, root)
        return self._outcome(pn, root)

    def _outcome(self, pn: PhoneNumber, root: ET.Element) -> dict[str, Any]:
        """The carrier data of a ``COMPLETE`` order, else the refusal."""
        _order_id, status = order_ref(root)
        if status == COMPLETE:
            return merge_carrier_data(pn.carrier_data, completion_data(root))
        detail = error_description(root)
        reason = f"Unable to acquire number: {status}" + (f" ({detail})" if detail else "")
        raise ProviderRefusalError(NAME, reason)

    def _follow(self, order_id: str, root: ET.Element | None = None) -> ET.Element:
        """The order's document once it is no longer ``RECEIVED`` (bounded polling).

        ``root`` is an answer already in hand (the POST's); without one the order is read at
        once. Still ``RECEIVED`` after ``order_poll_max`` polls, or a poll that fails, leaves
        the outcome unknown: the ledger keeps the order id and the next attempt polls again.
        """
        polls = 0
        while True:
            if root is not None:
                status = order_ref(root)[1]
                if status not in (None, RECEIVED):
                    return root
                if polls >= self.config.order_poll_max:
                    raise TransientCallError(
                        NAME,
                        f"Unable to acquire number: order {order_id} still {status or RECEIVED} "
                        f"after {polls} polls",
                        FailureKind.AMBIGUOUS,
                    )
                polls += 1
                self.http.sleep(self.config.order_poll_interval_s)
            root = self._read_order(order_id)

    def _read_order(self, order_id: str) -> ET.Element:
        """``GET orders/<id>``; a refusal there leaves the outcome unknown, not refused."""
        try:
            return decode(self._get("orders/" + quote(order_id, safe="")))
        except ProviderRefusalError as exc:
            raise TransientCallError(
                NAME,
                f"Unable to acquire number: order {order_id}: {exc.reason}",
                FailureKind.AMBIGUOUS,
                exc.status,
            ) from None
        except MalformedAnswerError as exc:
            raise unable(exc) from None

    # --------------------------------------------------------------------------- reconciling
    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        tn = to_npan(pn.number)
        order_id = ticket.refs.get("order_id")
        root: ET.Element | None = None
        if not isinstance(order_id, str) or not order_id:
            order_id = self._order_for(tn)
            if order_id is None:
                return None
            root = self._read_order(order_id)
            if order_tn(root) not in (None, tn):
                return None  # the lookup was not filtered by number: not this number's order
            self.ledger.note(ticket, order_id=order_id)
        root = self._follow(order_id, root)
        if order_ref(root)[1] != COMPLETE or order_tn(root) not in (None, tn):
            return None  # FAILED (or another final status): the earlier order bought nothing
        return merge_carrier_data(pn.carrier_data, completion_data(root))

    def _order_for(self, tn: str) -> str | None:
        """Bandwidth's id of the order that may have bought ``tn`` (``GET orders?tn=``)."""
        response = self._get("orders", {"tn": tn})
        if response.status_code == 404:
            return None
        return pick_order(orders_for_number(read(response)))
