"""Fake legacy Bandwidth numbers.api (knm_bandwidth).

One endpoint, ``POST /public/v2/numbers.api``; the body's root element names the verb and its
``developerKey`` authenticates. Verbs: ``areaCodeNumberSearch``, ``npaNxxNumberSearch``,
``basicNumberOrder`` (by the ``numberID`` a search returned) and ``getTelephoneNumber`` (knm's
reconciliation question; the retired API's shape for it is assumed, see carriers/bandwidth.py).
A number's ``numberID`` is a deterministic GUID whose last group holds its ten digits.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from typing import ClassVar, Final

from carriers import xmltext
from carriers.sandbox.core import (
    SANDBOX_SECRET,
    FakeProvider,
    Request,
    Response,
    SandboxState,
    available,
    orderable,
)

API_PATH: Final = "/public/v2/numbers.api"
SANDBOX_ACCOUNT_ID: Final = "9900012"

_NAMESPACES: Final = (
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns="http://www.bandwidth.com/api/"'
)
_VERB = re.compile(rb"<([A-Za-z][\w.-]*)[\s>/]")
_ENDPOINTS: Final = {
    "areaCodeNumberSearch": "search",
    "npaNxxNumberSearch": "search",
    "basicNumberOrder": "order",
    "getTelephoneNumber": "number",
}


def number_id(ten_digit: str) -> str:
    """``XXXXXXXX-XXXX-4XXX-9XXX-00<ten digits>``: stable, and readable back."""
    h = hashlib.sha1(ten_digit.encode(), usedforsecurity=False).hexdigest().upper()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-9{h[17:20]}-00{ten_digit}"


def ten_digit_of(identifier: str) -> str | None:
    last = identifier.rpartition("-")[2]
    return last[2:] if len(last) == 12 and last.isdigit() else None


def _verb(body: bytes) -> str | None:
    for match in _VERB.finditer(body):
        name = match.group(1).decode()
        if name != "xml":
            return name
    return None


def _answer(root: str, body: str, status: int = 200) -> Response:
    text = (
        f'<?xml version="1.0" encoding="utf-8"?>\n<{root} {_NAMESPACES}>\n'
        "  <requestID>5f0c1d2e-sandbox</requestID>\n"
        "  <dateTimeSent>2015-09-28 17:25:46Z</dateTimeSent>\n"
        f"{body}</{root}>"
    )
    return Response(status, text.encode(), "text/xml; charset=utf-8")


def _error(root: str, message: str, status: int = 200) -> Response:
    body = (
        "  <status>error</status>\n  <errors>\n    <error>\n      <code>1</code>\n"
        f"      <message>{xmltext.escape(message)}</message>\n    </error>\n  </errors>\n"
    )
    return _answer(root, body, status)


def _number(ten: str, status: str) -> str:
    return (
        "    <telephoneNumber>\n"
        f"      <numberID>{number_id(ten)}</numberID>\n"
        f"      <tenDigit>{ten}</tenDigit>\n"
        f"      <formattedNumber>1-{ten[:3]}-{ten[3:6]}-{ten[6:]}</formattedNumber>\n"
        f"      <e164>+1{ten}</e164>\n"
        f"      <npaNxx>{ten[:6]}</npaNxx>\n"
        f"      <status>{status}</status>\n"
        "      <rateCenter>\n        <name>SANDBOX</name>\n        <lata>722</lata>\n"
        "        <state>CA</state>\n      </rateCenter>\n"
        "    </telephoneNumber>\n"
    )


class FakeBandwidth(FakeProvider):
    name: ClassVar[str] = "bandwidth"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__BANDWIDTH__BASE_URL": f"{base_url}{API_PATH}",
            "KNM_CARRIERS__BANDWIDTH__DEVELOPER_KEY": SANDBOX_SECRET,
        }

    def endpoint(self, req: Request) -> str:
        if req.path != API_PATH:
            return "unknown"
        return _ENDPOINTS.get(_verb(req.body) or "", "unknown")

    def malformed(self) -> Response:
        return Response(200, b'<?xml version="1.0"?><numberOrderResponse><status>succ', "text/xml")

    def handle(self, req: Request, state: SandboxState) -> Response:
        if req.path != API_PATH or req.method != "POST":
            return _error("errorResponse", "Unknown resource", 404)
        try:
            root = xmltext.parse(req.body)
        except xmltext.XmlError:
            return _error("errorResponse", "The request is not valid XML", 400)
        verb = xmltext.local(root.tag)
        if xmltext.text(root, "developerKey") != SANDBOX_SECRET:
            return _error(f"{verb}Response", "Invalid developer key", 401)
        if verb == "areaCodeNumberSearch":
            return self._search(xmltext.text(root, "areaCode"), root, state)
        if verb == "npaNxxNumberSearch":
            return self._search(xmltext.text(root, "npaNxx"), root, state)
        if verb == "basicNumberOrder":
            return self._order(root, state)
        if verb == "getTelephoneNumber":
            return self._number(xmltext.text(root, "tn") or "", state)
        return _error(f"{verb}Response", f"Unsupported operation {verb}")

    def _search(self, digits: str | None, root: ET.Element, state: SandboxState) -> Response:
        try:
            quantity = int(xmltext.text(root, "maxQuantity") or "10")
        except ValueError:
            return _error("numberSearchResponse", "maxQuantity must be a number")
        if not digits or not digits.isdigit():
            return _error("numberSearchResponse", "A valid search value is required")
        numbers = available(state, self.name, digits, state.stock_size)[: max(quantity, 0)]
        listing = "".join(_number(n, "Available") for n in numbers)
        body = (
            "  <message>Successfully executed specified number search.</message>\n"
            "  <status>success</status>\n  <errors />\n  <warnings />\n"
            f"  <quantity>{len(numbers)}</quantity>\n"
            f"  <telephoneNumbers>\n{listing}  </telephoneNumbers>\n"
        )
        return _answer("numberSearchResponse", body)

    def _order(self, root: ET.Element, state: SandboxState) -> Response:
        identifier = xmltext.text(root, "numberIDs", "id") or ""
        ten = ten_digit_of(identifier)
        if ten is None or not orderable(ten):
            return _error("numberOrderResponse", f"Number ID {identifier} is not valid")
        with state.lock:
            if not state.buy(self.name, "+1" + ten, {"number_id": identifier}):
                return _error("numberOrderResponse", f"Number {ten} is not available")
            seq = state.next_id()
        order = (
            "  <numberOrder>\n"
            f"    <orderID>{number_id(str(seq))[:24]}{seq:012d}</orderID>\n"
            f"    <orderNumber>{100000 + seq}</orderNumber>\n"
            f"    <orderName>{xmltext.escape(xmltext.text(root, 'orderName') or '')}</orderName>\n"
            f"    <extRefID>{xmltext.escape(xmltext.text(root, 'extRefID') or '')}</extRefID>\n"
            f"    <accountID>{SANDBOX_ACCOUNT_ID}</accountID>\n"
            "    <accountName>Sandbox</accountName>\n"
            "    <quantity>1</quantity>\n"
            f"    <telephoneNumbers>\n{_number(ten, 'InService')}    </telephoneNumbers>\n"
            "  </numberOrder>\n"
        )
        body = (
            "  <message>Successfully executed basic number order.</message>\n"
            "  <status>success</status>\n  <errors />\n  <warnings />\n" + order
        )
        return _answer("numberOrderResponse", body)

    def _number(self, ten: str, state: SandboxState) -> Response:
        if not state.is_owned(self.name, "+1" + ten):
            return _error("getTelephoneNumberResponse", f"Telephone number {ten} not found")
        body = (
            "  <status>success</status>\n  <errors />\n"
            f"  <telephoneNumbers>\n{_number(ten, 'InService')}  </telephoneNumbers>\n"
        )
        return _answer("getTelephoneNumberResponse", body)
