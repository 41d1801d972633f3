"""Fake Bandwidth iris API (knm_bandwidth2): availableNumbers, orders.

Paths are ``/v1.0/accounts/<SANDBOX_ACCOUNT>/...`` with HTTP Basic auth. ``POST orders`` takes
the number at once (a purchase) and answers ``RECEIVED``; ``GET orders/<id>`` answers
``RECEIVED`` until the order has been read ``COMPLETE_AFTER_POLLS`` times, then ``COMPLETE``
(or ``FAILED`` when the number could not be had): deterministic, so tests can count polls.
``GET orders?tn=<10 digits>`` lists the orders of a number without advancing them.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from carriers import xmltext
from carriers.numbering import US_TOLLFREE_NPAS
from carriers.sandbox.core import (
    SANDBOX_SECRET,
    SANDBOX_USER,
    FakeProvider,
    Request,
    Response,
    SandboxState,
    available,
    orderable,
)

SANDBOX_ACCOUNT: Final = "9900012"
SANDBOX_SITE: Final = "1337"
SANDBOX_PEER: Final = "13337"
#: Reads of an order before it leaves ``RECEIVED``.
COMPLETE_AFTER_POLLS: Final = 2

_ACCOUNT_PATH: Final = f"/v1.0/accounts/{SANDBOX_ACCOUNT}/"
_EPOCH: Final = datetime(2024, 3, 12, tzinfo=UTC)


def _xml(status: int, root: str, body: str, headers: dict[str, str] | None = None) -> Response:
    text = f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<{root}>{body}\n</{root}>'
    return Response(status, text.encode(), "application/xml", headers or {})


def _error(status: int, root: str, code: int, description: str) -> Response:
    body = (
        f"\n  <ErrorList>\n    <Error>\n      <Code>{code}</Code>\n"
        f"      <Description>{xmltext.escape(description)}</Description>\n"
        "    </Error>\n  </ErrorList>"
    )
    return _xml(status, root, body)


def _authorized(req: Request) -> bool:
    header = req.header("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(token).decode().partition(":")
    except ValueError:
        return False
    return user == SANDBOX_USER and password == SANDBOX_SECRET


def _tollfree_npas(pattern: str) -> list[str]:
    """The toll-free NPAs a wildcard pattern (``85*``, ``8**``, ``855``) covers."""
    head = pattern.rstrip("*")
    if not head.isdigit() or len(pattern) != 3:
        return []
    return sorted(npa for npa in US_TOLLFREE_NPAS if npa.startswith(head))


class FakeBandwidth2(FakeProvider):
    name: ClassVar[str] = "bandwidth2"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__BANDWIDTH2__BASE_URL": f"{base_url}/v1.0",
            "KNM_CARRIERS__BANDWIDTH2__ACCOUNT_ID": SANDBOX_ACCOUNT,
            "KNM_CARRIERS__BANDWIDTH2__API_USERNAME": SANDBOX_USER,
            "KNM_CARRIERS__BANDWIDTH2__API_PASSWORD": SANDBOX_SECRET,
            "KNM_CARRIERS__BANDWIDTH2__SITE_ID": SANDBOX_SITE,
            "KNM_CARRIERS__BANDWIDTH2__SIP_PEER": SANDBOX_PEER,
            "KNM_CARRIERS__BANDWIDTH2__ORDER_POLL_INTERVAL_S": "0.05",
        }

    def endpoint(self, req: Request) -> str:
        path = req.path.partition(_ACCOUNT_PATH)[2] if _ACCOUNT_PATH in req.path else req.path
        if path == "availableNumbers":
            return "search"
        if path == "orders":
            return "order" if req.method == "POST" else "order_lookup"
        if path.startswith("orders/"):
            return "order_status"
        return "unknown"

    def malformed(self) -> Response:
        return Response(200, b'<?xml version="1.0"?><OrderResponse><Order><id>', "application/xml")

    def handle(self, req: Request, state: SandboxState) -> Response:
        if not _authorized(req):
            return _error(401, "ResponseSelectWrapper", 401, "Authentication failed.")
        if not req.path.startswith(_ACCOUNT_PATH):
            return _error(403, "ResponseSelectWrapper", 403, "Access to this account is denied.")
        endpoint = self.endpoint(req)
        if endpoint == "search" and req.method == "GET":
            return self._search(req, state)
        if endpoint == "order":
            return self._order(req, state)
        if endpoint == "order_lookup":
            return self._lookup(req, state)
        if endpoint == "order_status" and req.method == "GET":
            return self._status(req.path.rpartition("/")[2], state)
        return _error(404, "ResponseSelectWrapper", 404, "Resource not found.")

    # ------------------------------------------------------------------------------ search
    def _search(self, req: Request, state: SandboxState) -> Response:
        try:
            quantity = max(1, min(int(req.query.get("quantity", "5000")), 5000))
        except ValueError:
            return _error(400, "SearchResult", 4010, "quantity must be a number")
        detail = req.query.get("enableTNDetail", "false").lower() == "true"
        if "tollFreeWildCardPattern" in req.query:
            numbers: list[str] = []
            for npa in _tollfree_npas(req.query["tollFreeWildCardPattern"]):
                numbers += available(state, self.name, npa, state.stock_size)
        elif "areaCode" in req.query or "npaNxx" in req.query:
            digits = req.query.get("areaCode") or req.query.get("npaNxx", "")
            numbers = available(state, self.name, digits, state.stock_size)
        else:
            return _error(
                400,
                "SearchResult",
                4010,
                "One of more required search parameters are null or empty, "
                "please refer to the api documentation",
            )
        numbers = numbers[:quantity]
        if detail:
            items = "".join(
                f"\n    <TelephoneNumberDetail>\n      <City>SANDBOX CITY</City>"
                f"\n      <LATA>722</LATA>\n      <RateCenter>SANDBOX</RateCenter>"
                f"\n      <State>CA</State>\n      <FullNumber>{n}</FullNumber>"
                f"\n      <Tier>0</Tier>\n      <VendorId>49</VendorId>"
                f"\n      <VendorName>Bandwidth CLEC</VendorName>\n    </TelephoneNumberDetail>"
                for n in numbers
            )
            listing = f"\n  <TelephoneNumberDetailList>{items}\n  </TelephoneNumberDetailList>"
        else:
            items = "".join(f"\n    <TelephoneNumber>{n}</TelephoneNumber>" for n in numbers)
            listing = f"\n  <TelephoneNumberList>{items}\n  </TelephoneNumberList>"
        if not numbers:
            listing = ""
        return _xml(200, "SearchResult", f"\n  <ResultCount>{len(numbers)}</ResultCount>{listing}")

    # ------------------------------------------------------------------------------ orders
    def _order(self, req: Request, state: SandboxState) -> Response:
        if req.method != "POST":
            return _error(405, "OrderResponse", 405, "Method not allowed.")
        try:
            root = xmltext.parse(req.body)
        except xmltext.XmlError:
            return _error(400, "OrderResponse", 5001, "The order could not be read.")
        tn = xmltext.text(
            root, "ExistingTelephoneNumberOrderType", "TelephoneNumberList", "TelephoneNumber"
        )
        if xmltext.local(root.tag) != "Order" or not tn:
            return _error(400, "OrderResponse", 5002, "An existing telephone number is required.")
        if xmltext.text(root, "SiteId") != SANDBOX_SITE:
            return _error(400, "OrderResponse", 5003, "Site not found.")
        if xmltext.text(root, "PeerId") != SANDBOX_PEER:
            return _error(400, "OrderResponse", 5004, "SIP peer not found.")
        with state.lock:
            seq = state.next_id()
            order_id = f"dc{seq:06x}-07fc-41bf-a3bd-6c6ebf913f1c"
            bought = orderable(tn) and state.buy(self.name, "+1" + tn, {"order_id": order_id})
            state.orders.setdefault(self.name, {})[order_id] = {
                "tn": tn,
                "name": xmltext.text(root, "Name") or "",
                "customer_order_id": xmltext.text(root, "CustomerOrderId"),
                "final": "COMPLETE" if bought else "FAILED",
                "polls": 0,
                "created": (_EPOCH + timedelta(seconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            }
            order = dict(state.orders[self.name][order_id])
        location = f"{_ACCOUNT_PATH}orders/{order_id}"
        return _xml(
            201, "OrderResponse", _order_xml(order_id, order, "RECEIVED"), {"Location": location}
        )

    def _status(self, order_id: str, state: SandboxState) -> Response:
        with state.lock:
            order = state.orders.get(self.name, {}).get(order_id)
            if order is None:
                return _error(404, "OrderResponse", 5005, f"Order {order_id} not found.")
            order["polls"] += 1
            status = order["final"] if order["polls"] >= COMPLETE_AFTER_POLLS else "RECEIVED"
            order = dict(order)
        return _xml(200, "OrderResponse", _order_xml(order_id, order, status))

    def _lookup(self, req: Request, state: SandboxState) -> Response:
        tn = req.query.get("tn")
        with state.lock:
            orders = [
                (order_id, dict(order))
                for order_id, order in state.orders.get(self.name, {}).items()
                if tn is None or order["tn"] == tn
            ]
        items = "".join(
            "\n    <OrderIdUserIdDate>\n      <CountOfTNs>1</CountOfTNs>"
            f"\n      <userId>{SANDBOX_USER}</userId>"
            f"\n      <lastModifiedDate>{order['created']}</lastModifiedDate>"
            f"\n      <OrderDate>{order['created']}</OrderDate>"
            f"\n      <orderId>{order_id}</orderId>"
            f"\n      <OrderStatus>{_current(order)}</OrderStatus>\n    </OrderIdUserIdDate>"
            for order_id, order in orders
        )
        body = (
            f"\n  <ListOrderIdUserIdDate>\n    <TotalCount>{len(orders)}</TotalCount>{items}"
            "\n  </ListOrderIdUserIdDate>"
        )
        return _xml(200, "ResponseSelectWrapper", body)


def _current(order: dict[str, Any]) -> str:
    return str(order["final"]) if order["polls"] >= COMPLETE_AFTER_POLLS else "RECEIVED"


def _order_xml(order_id: str, order: dict[str, Any], status: str) -> str:
    customer = order.get("customer_order_id")
    parts = ["\n  <Order>"]
    if customer:
        parts.append(f"\n    <CustomerOrderId>{xmltext.escape(customer)}</CustomerOrderId>")
    parts += [
        f"\n    <Name>{xmltext.escape(order['name'])}</Name>",
        f"\n    <OrderCreateDate>{order['created']}</OrderCreateDate>",
        f"\n    <PeerId>{SANDBOX_PEER}</PeerId>",
        "\n    <BackOrderRequested>false</BackOrderRequested>",
        f"\n    <id>{order_id}</id>",
        "\n    <ExistingTelephoneNumberOrderType>\n      <TelephoneNumberList>",
        f"\n        <TelephoneNumber>{order['tn']}</TelephoneNumber>",
        "\n      </TelephoneNumberList>\n    </ExistingTelephoneNumberOrderType>",
        "\n    <PartialAllowed>true</PartialAllowed>",
        f"\n    <SiteId>{SANDBOX_SITE}</SiteId>\n  </Order>",
        f"\n  <OrderStatus>{status}</OrderStatus>",
    ]
    if status == "FAILED":
        parts.append(
            "\n  <ErrorList>\n    <Error>\n      <Code>5005</Code>"
            "\n      <Description>The telephone number is unavailable for ordering</Description>"
            "\n    </Error>\n  </ErrorList>"
        )
    return "".join(parts)
