"""knm_bandwidth (deprecated) against the fixture vector, plus request
building, error mapping, reconciliation and the once-per-process deprecation warning."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from carriers import bandwidth
from carriers.base import CarrierContext, SearchRequest
from carriers.http import CarrierHttp
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Action, Ticket
from carriers.numbering import GREGORIAN_OFFSET_S
from config.carrier_settings import BandwidthSettings, CarriersSettings
from config.settings import Settings
from knm.domain.number import PhoneNumber
from tests.carriers_rig import fixture_text
from tests.fixtures_kazoo import MODULES

URL = "https://api.bandwidth.com/public/v2/numbers.api"
NS = (
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns="http://www.bandwidth.com/api/"'
)
NUMBER_ID = "D0204A79-4F3C-41DE-96E4-9A0230CD76A8"
Handler = Callable[[httpx.Request], httpx.Response]


def _xml(status: int, text: str) -> httpx.Response:
    return httpx.Response(status, content=text.encode())


def _carrier(
    handler: Handler, **config: Any
) -> tuple[bandwidth.BandwidthCarrier, list[httpx.Request]]:
    settings = Settings(
        carriers=CarriersSettings(
            bandwidth=BandwidthSettings(developer_key="dev-key-secret", **config)
        )
    )
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        request.read()
        requests.append(request)
        return handler(request)

    carrier = bandwidth.BandwidthCarrier(
        CarrierContext(db={"provisioning": None}, settings=settings)  # type: ignore[arg-type]
    )
    carrier.http = CarrierHttp(
        bandwidth.NAME,
        settings.carrier_http,
        secrets=["dev-key-secret"],
        client=httpx.Client(transport=httpx.MockTransport(record)),
        sleep=lambda s: None,
    )
    return carrier, requests


def _ticket() -> Ticket:
    return Ticket(bandwidth.NAME, "+14158867900", Action.ACQUIRE, "tok", "req-1", True)


def _pn(assigned_to: str | None = "a" * 32, data: dict[str, Any] | None = None) -> PhoneNumber:
    pn = PhoneNumber.new("+14158867900", bandwidth.NAME, modules=MODULES)
    pn.assigned_to = assigned_to
    pn.carrier_data = dict(data or {})
    return pn


FIXTURE_DATA = {
    "number_id": NUMBER_ID,
    "ten_digit": "4158867900",
    "formatted_number": "1-415-886-7900",
    "e164": "+14158867900",
    "npa_nxx": "415886",
    "status": "Available",
    "rate_center": {"name": "CORTE MADERA", "lata": "722", "state": "CA"},
}


# ======================================================================== fixture vector
def test_numbersearch_vector() -> None:
    verb, children = bandwidth.search_request("+1415886", 500)
    assert (verb, children) == (
        "npaNxxNumberSearch",
        [("npaNxx", "415886"), ("maxQuantity", "500")],
    )
    root = bandwidth.decode(_xml(200, fixture_text("bandwidth_numbersearch_response.xml")))
    results = bandwidth.parse_search(root)
    assert [r.number for r in results] == ["+14158867900"]
    assert results[0].carrier_data == FIXTURE_DATA
    assert results[0].state.value == "discovery"
    assert results[0].carrier_module == "knm_bandwidth"


def test_search_request_over_http() -> None:
    carrier, requests = _carrier(
        lambda r: _xml(200, fixture_text("bandwidth_numbersearch_response.xml"))
    )
    results = carrier.find_numbers(SearchRequest(prefix="+1415886", quantity=500))
    assert [r.number for r in results] == ["+14158867900"]
    (request,) = requests
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.content.decode() == (
        f'<?xml version="1.0"?><npaNxxNumberSearch{NS}><developerKey>dev-key-secret'
        "</developerKey><npaNxx>415886</npaNxx><maxQuantity>500</maxQuantity>"
        "</npaNxxNumberSearch>"
    )
    assert request.headers["Content-Type"] == "text/xml"
    assert request.headers["Accept"] == "*/*"
    assert request.headers["X-BWC-IN-Control-Processing-Type"] == "process"


@pytest.mark.parametrize(
    ("prefix", "verb", "children"),
    [
        ("+1415", "areaCodeNumberSearch", [("areaCode", "415"), ("maxQuantity", "9")]),
        ("+1800", "areaCodeNumberSearch", [("areaCode", "800"), ("maxQuantity", "9")]),
        ("+14158", "npaNxxNumberSearch", [("npaNxx", "4158"), ("maxQuantity", "9")]),
        ("+1415886790", "npaNxxNumberSearch", [("npaNxx", "415886"), ("maxQuantity", "9")]),
        ("+1+14158867900", "npaNxxNumberSearch", [("npaNxx", "415886"), ("maxQuantity", "9")]),
    ],
)
def test_search_dispatch(prefix: str, verb: str, children: list[tuple[str, str]]) -> None:
    assert bandwidth.search_request(prefix, 9) == (verb, children)


# ======================================================================== parsing
WHITESPACE = """<?xml version="1.0" encoding="utf-8"?>
<numberSearchResponse xmlns="http://www.bandwidth.com/api/">
  <status>
    success
  </status>
  <telephoneNumbers>
    <telephoneNumber>
      <numberID>  ID-1  </numberID>
      <e164>+14122065197
      </e164>
      <tenDigit />
      <rateCenter><name>  PITTSBURGH</name><lata></lata></rateCenter>
    </telephoneNumber>
    <telephoneNumber>
      <numberID>ID-2</numberID>
    </telephoneNumber>
    <telephoneNumber>
      <e164>+14122065198</e164>
    </telephoneNumber>
  </telephoneNumbers>
</numberSearchResponse>"""


def test_whitespace_is_cleaned_absent_values_omitted_and_rate_center_kept() -> None:
    results = bandwidth.parse_search(bandwidth.decode(_xml(200, WHITESPACE)))
    assert [r.number for r in results] == ["+14122065197", "+14122065198"]
    assert results[0].carrier_data == {
        "number_id": "ID-1",
        "e164": "+14122065197",
        "rate_center": {"name": "PITTSBURGH"},
    }
    assert results[1].carrier_data == {"e164": "+14122065198", "rate_center": {}}


ORDER_ANSWER = f"""<?xml version="1.0" encoding="utf-8"?>
<numberOrderResponse{NS}>
  <status>success</status>
  <numberOrder>
    <orderID> 6f0e-order </orderID>
    <orderNumber>100042</orderNumber>
    <orderName>Kazoo-63628571101</orderName>
    <extRefID>{"a" * 32}</extRefID>
    <accountID>9900012</accountID>
    <accountName>Sandbox</accountName>
    <quantity>1</quantity>
    <telephoneNumbers>
      <telephoneNumber>
        <numberID>{NUMBER_ID}</numberID>
        <e164>+14158867900</e164>
        <status>InService</status>
      </telephoneNumber>
    </telephoneNumbers>
  </numberOrder>
</numberOrderResponse>"""


def test_order_request_and_answer_replace_the_carrier_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: 63628571101 - GREGORIAN_OFFSET_S)
    carrier, requests = _carrier(
        lambda r: _xml(200, ORDER_ANSWER), endpoints=["sip1.example.com", "sip2.example.com"]
    )
    data = carrier._order(_pn(data=FIXTURE_DATA), _ticket())
    assert data == {
        "order_id": "6f0e-order",
        "order_number": "100042",
        "order_name": "Kazoo-63628571101",
        "ext_ref_id": "a" * 32,
        "accountID": "9900012",
        "accountName": "Sandbox",
        "quantity": "1",
        "number": {
            "number_id": NUMBER_ID,
            "e164": "+14158867900",
            "status": "InService",
            "rate_center": {},
        },
    }  # replaced, not merged: the search data is gone
    assert requests[0].content.decode() == (
        f'<?xml version="1.0"?><basicNumberOrder{NS}><developerKey>dev-key-secret'
        "</developerKey><orderName>Kazoo-63628571101</orderName>"
        f"<extRefID>{'a' * 32}</extRefID><numberIDs><id>{NUMBER_ID}</id></numberIDs>"
        f"<subscriber>{'a' * 32}</subscriber><endPoints><host>sip1.example.com</host>"
        "<host>sip2.example.com</host></endPoints></basicNumberOrder>"
    )


def test_order_without_assignment_or_endpoints() -> None:
    carrier, requests = _carrier(lambda r: _xml(200, ORDER_ANSWER), order_name_prefix="Acme")
    carrier._order(_pn(None, {"number_id": "X&Y"}), _ticket())
    body = requests[0].content.decode()
    assert "<orderName>Acme-" in body
    assert "<extRefID>req-1</extRefID>" in body  # the request id stands in for auth_by
    assert "<subscriber>no_assigned_account</subscriber>" in body
    assert "<id>X&amp;Y</id>" in body  # escaped (KAZOO inserted values raw)
    assert "endPoints" not in body


def test_order_answer_without_number_order() -> None:
    root = bandwidth.decode(_xml(200, '<?xml version="1.0"?><r><status>success</status></r>'))
    assert bandwidth.parse_order(root) == {"number": {}}


def test_order_needs_the_number_id_from_the_search() -> None:
    carrier, requests = _carrier(lambda r: _xml(200, ORDER_ANSWER))
    with pytest.raises(ProviderRefusalError, match="number_id"):
        carrier._order(_pn(), _ticket())
    assert requests == []


# ======================================================================== errors
@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, "", "authentication"),
        (
            401,
            '<?xml version="1.0"?><r><status>error</status><errors><error><message>'
            "Invalid developer key</message></error></errors></r>",
            "authentication: Invalid developer key",
        ),
        (403, "", "authorization"),
        (404, "<html/>", "not_found"),
        (
            200,
            '<?xml version="1.0"?><r><status>error</status><errors><error><code>7</code>'
            "<message>\n  Number unavailable  \n</message></error></errors></r>",
            "Number unavailable",
        ),
        (200, '<?xml version="1.0"?><r><status>pending</status></r>', "status pending"),
        (400, "Bad Request", "empty_response (HTTP 400)"),
    ],
)
def test_errors_are_refusals_with_the_providers_message(
    status: int, body: str, reason: str
) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        bandwidth.decode(_xml(status, body))
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<numberOrderResponse/>",  # KAZOO reads only bodies starting with <?xml
        '<?xml version="1.0"?><numberOrderResponse><status>succ',
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>',
    ],
)
def test_a_2xx_that_cannot_be_read_is_malformed(body: str) -> None:
    with pytest.raises(MalformedAnswerError, match="empty_response"):
        bandwidth.decode(_xml(200, body))


# ======================================================================== reconciliation
def _number_answer(status: str, e164: str = "+14158867900") -> str:
    return (
        '<?xml version="1.0"?><getTelephoneNumberResponse xmlns="http://www.bandwidth.com/api/">'
        "<status>success</status><telephoneNumbers><telephoneNumber>"
        f"<numberID>{NUMBER_ID}</numberID><tenDigit>{e164[2:]}</tenDigit><e164>{e164}</e164>"
        f"<status>{status}</status></telephoneNumber></telephoneNumbers>"
        "</getTelephoneNumberResponse>"
    )


def test_owned_asks_get_telephone_number_with_the_ten_digits() -> None:
    carrier, requests = _carrier(lambda r: _xml(200, _number_answer("InService")))
    data = carrier._owned(_pn(), _ticket())
    assert data == {
        "number": {
            "number_id": NUMBER_ID,
            "ten_digit": "4158867900",
            "e164": "+14158867900",
            "status": "InService",
            "rate_center": {},
        }
    }
    assert requests[0].content.decode() == (
        f'<?xml version="1.0"?><getTelephoneNumber{NS}><developerKey>dev-key-secret'
        "</developerKey><tn>4158867900</tn></getTelephoneNumber>"
    )


@pytest.mark.parametrize(
    "answer",
    [
        _xml(200, _number_answer("Available")),
        _xml(200, _number_answer("InService", "+14158867901")),
        _xml(
            200,
            '<?xml version="1.0"?><r><status>error</status><errors><error><message>'
            "not found</message></error></errors></r>",
        ),
        _xml(404, ""),
    ],
)
def test_not_owned(answer: httpx.Response) -> None:
    carrier, _requests = _carrier(lambda r: answer)
    assert carrier._owned(_pn(), _ticket()) is None


# ======================================================================== deprecation
def test_deprecation_is_logged_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bandwidth, "_deprecation_logged", False)
    caplog.set_level(logging.WARNING, logger="carriers.bandwidth")
    carriers = [_carrier(lambda r: _xml(200, ""))[0] for _ in range(3)]
    assert [r for r in caplog.records if r.name == "carriers.bandwidth"] == []  # not yet used
    for carrier in carriers:  # used: searched (the empty answer is an error, fine here)
        with contextlib.suppress(Exception):
            carrier.find_numbers(SearchRequest(prefix="+1415", quantity=1))
    warnings = [r for r in caplog.records if r.name == "carriers.bandwidth"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "deprecated" in warnings[0].getMessage()
    assert "knm_bandwidth2" in warnings[0].getMessage()
    assert "knm carriers convert" in warnings[0].getMessage()


def test_module_docstring_documents_the_migration() -> None:
    doc = bandwidth.__doc__ or ""
    assert "KNM_CARRIERS__BANDWIDTH2__" in doc
    assert "knm carriers convert knm_bandwidth knm_bandwidth2" in doc
