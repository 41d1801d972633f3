"""knm_bandwidth2 against the fixture vectors, plus request building, the
bounded order polling and reconciliation (over a mock transport: no server, no database)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from carriers import bandwidth2
from carriers.base import CarrierContext, SearchRequest
from carriers.http import CarrierHttp, TransientCallError
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Action, Ticket
from carriers.numbering import GREGORIAN_OFFSET_S
from config.carrier_settings import Bandwidth2Settings, CarriersSettings
from config.settings import Settings
from knm.domain.number import PhoneNumber
from tests.carriers_rig import fixture_text
from tests.fixtures_kazoo import MODULES

BASE = "https://api.inetwork.com/v1.0/accounts/9900012"
ORDER_ID = "dc0008ec-07fc-41bf-a3bd-6c6ebf913f1c"
Handler = Callable[[httpx.Request], httpx.Response]


def _xml(status: int, text: str) -> httpx.Response:
    return httpx.Response(
        status, content=text.encode(), headers={"Content-Type": "application/xml"}
    )


def _doc(body: str) -> str:
    return '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>' + body


class _Ledger:
    """What ``_order``/``_owned`` use of the provisioning ledger: ``note``."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []

    def note(self, ticket: Ticket, **refs: Any) -> None:
        self.notes.append(refs)
        ticket.refs.update(refs)


class _Rig:
    """A Bandwidth2Carrier whose HTTP goes to ``handler``; sleeps are recorded, not slept."""

    def __init__(self, handler: Handler, **config: Any) -> None:
        values = {
            "account_id": "9900012",
            "api_username": "user",
            "api_password": "pass-secret",
            "site_id": "1337",
            "sip_peer": "13337",
            **config,
        }
        settings = Settings(carriers=CarriersSettings(bandwidth2=Bandwidth2Settings(**values)))
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

        def record(request: httpx.Request) -> httpx.Response:
            request.read()
            self.requests.append(request)
            return handler(request)

        self.carrier = bandwidth2.Bandwidth2Carrier(
            CarrierContext(db={"provisioning": None}, settings=settings)  # type: ignore[arg-type]
        )
        self.carrier.http = CarrierHttp(
            bandwidth2.NAME,
            settings.carrier_http,
            secrets=["pass-secret"],
            client=httpx.Client(transport=httpx.MockTransport(record)),
            sleep=self.sleeps.append,
        )
        self.ledger = _Ledger()
        self.carrier.ledger = self.ledger  # type: ignore[assignment]

    def urls(self) -> list[str]:
        return [f"{r.method} {r.url}" for r in self.requests]


def _ticket(refs: dict[str, Any] | None = None, request_id: str | None = "req-1") -> Ticket:
    return Ticket(
        bandwidth2.NAME, "+19734096113", Action.ACQUIRE, "tok", request_id, True, refs or {}
    )


def _pn(assigned_to: str | None = "a" * 32) -> PhoneNumber:
    pn = PhoneNumber.new("+19734096113", bandwidth2.NAME, modules=MODULES)
    pn.assigned_to = assigned_to
    return pn


def _order_answer(status: str, extra: str = "") -> str:
    """The fixture order with another status."""
    text = fixture_text("bandwidth2_check_order.xml")
    return text.replace(
        "<OrderStatus>COMPLETE</OrderStatus>", f"<OrderStatus>{status}</OrderStatus>{extra}"
    )


# ======================================================================== fixture vectors
def test_find_by_npa_vector() -> None:
    kind, params = bandwidth2.search_params("+1973", 500, 500)
    assert (kind, params) == (
        "npa",
        {"areaCode": "973", "enableTNDetail": "false", "quantity": "500"},
    )
    root = bandwidth2.decode(_xml(200, fixture_text("bandwidth2_find_by_npa_no_detail.xml")))
    results = bandwidth2.parse_search(root, kind, "+1973")
    assert [r.number for r in results] == ["+19733705112", "+19733705183"]
    assert [r.carrier_data for r in results] == [{}, {}]
    assert {r.state.value for r in results} == {"discovery"}
    assert {r.carrier_module for r in results} == {"knm_bandwidth2"}


def test_buy_then_check_order_vector() -> None:
    answers = {
        f"POST {BASE}/orders": _xml(201, fixture_text("bandwidth2_buy_a_number.xml")),
        f"GET {BASE}/orders/{ORDER_ID}": _xml(200, fixture_text("bandwidth2_check_order.xml")),
    }
    rig = _Rig(lambda r: answers[f"{r.method} {r.url}"])
    ticket = _ticket()
    data = rig.carrier._order(_pn(), ticket)
    assert data == {
        "order_id": "deadbeef1234567901234567890dead",
        "order_name": "Kazoo-63628571101",
        "number": "+19734096113",
    }
    assert rig.urls() == [f"POST {BASE}/orders", f"GET {BASE}/orders/{ORDER_ID}"]
    assert rig.sleeps == [2.0]  # KAZOO's 2 s between polls
    assert rig.ledger.notes == [{"order_id": ORDER_ID}]  # noted before polling
    assert ticket.refs == {"order_id": ORDER_ID}


def test_order_request_is_built_as_the_spec_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 63628571101 - GREGORIAN_OFFSET_S)
    rig = _Rig(lambda r: _xml(201, _order_answer("COMPLETE")))
    rig.carrier._order(_pn("b" * 32), _ticket())
    post = rig.requests[0]
    assert post.content.decode() == (
        '<?xml version="1.0"?><Order><Name>Kazoo-63628571101</Name>'
        f"<CustomerOrderId>{'b' * 32}</CustomerOrderId><SiteId>1337</SiteId>"
        "<PeerId>13337</PeerId><ExistingTelephoneNumberOrderType><TelephoneNumberList>"
        "<TelephoneNumber>9734096113</TelephoneNumber></TelephoneNumberList>"
        "</ExistingTelephoneNumberOrderType></Order>"
    )
    assert post.headers["Content-Type"] == "application/xml"
    assert post.headers["Accept"] == "*/*"
    assert post.headers["X-BWC-IN-Control-Processing-Type"] == "process"
    expected = "Basic " + base64.b64encode(b"user:pass-secret").decode()
    assert post.headers["Authorization"] == expected
    assert rig.sleeps == []  # COMPLETE at once: no poll


def test_customer_order_id_falls_back_to_the_request_id_then_is_left_out() -> None:
    assert bandwidth2.acquiring_account(_pn(None), _ticket()) == "req-1"
    assert bandwidth2.acquiring_account(_pn("c" * 32), _ticket()) == "c" * 32
    body = bandwidth2.order_body("Kazoo-1", None, "1", "2", "9734096113")
    assert "CustomerOrderId" not in body


def test_order_name_is_prefix_and_gregorian_seconds() -> None:
    assert bandwidth2.order_name("Kazoo", 1461351901.7) == "Kazoo-63628571101"
    assert bandwidth2.order_name("Acme", 0) == f"Acme-{GREGORIAN_OFFSET_S}"


def test_existing_carrier_data_wins_on_completion() -> None:
    pn = _pn()
    pn.carrier_data = {"order_id": "kept", "rate_center": {"name": "X"}}
    rig = _Rig(lambda r: _xml(201, _order_answer("COMPLETE")))
    data = rig.carrier._order(pn, _ticket())
    assert data == {
        "order_id": "kept",
        "rate_center": {"name": "X"},
        "order_name": "Kazoo-63628571101",
        "number": "+19734096113",
    }


# ======================================================================== search requests
@pytest.mark.parametrize(
    ("prefix", "kind", "params"),
    [
        # fixed QUIRK: KAZOO sent 855 as "55*" (leading 8 dropped)
        ("+1855", "tollfree", {"tollFreeWildCardPattern": "85*", "enableTNDetail": "true"}),
        ("+18885551", "tollfree", {"tollFreeWildCardPattern": "88*", "enableTNDetail": "true"}),
        ("+1800", "tollfree", {"tollFreeWildCardPattern": "80*", "enableTNDetail": "true"}),
        ("+180*", "wildcard", {"tollFreeWildCardPattern": "80*", "enableTNDetail": "false"}),
        ("+18**", "npa", {"areaCode": "8**", "enableTNDetail": "false"}),  # not in the list
        ("+1973", "npa", {"areaCode": "973", "enableTNDetail": "false"}),
        ("+14158", "npanxx", {"npaNxx": "4158", "enableTNDetail": "false"}),
        ("+1415886", "npanxx", {"npaNxx": "415886", "enableTNDetail": "false"}),
        ("+141588679", "npanxx", {"npaNxx": "415886", "enableTNDetail": "false"}),
        ("+1+14158867900", "npanxx", {"npaNxx": "415886", "enableTNDetail": "false"}),
        ("+1", "npanxx", {"npaNxx": "", "enableTNDetail": "false"}),
    ],
)
def test_search_dispatch(prefix: str, kind: str, params: dict[str, str]) -> None:
    got_kind, got = bandwidth2.search_params(prefix, 7, 500)
    assert (got_kind, got) == (kind, {**params, "quantity": "7"})


def test_quantity_is_capped_by_max_search_quantity() -> None:
    assert bandwidth2.search_params("+1973", 500, 50)[1]["quantity"] == "50"
    assert bandwidth2.search_params("+1973", 5, 50)[1]["quantity"] == "5"


def test_search_url_params_and_auth() -> None:
    root = fixture_text("bandwidth2_find_by_npa_no_detail.xml")
    rig = _Rig(lambda r: _xml(200, root), max_search_quantity=100)
    results = rig.carrier.find_numbers(SearchRequest(prefix="+1973", quantity=500))
    assert [r.number for r in results] == ["+19733705112", "+19733705183"]
    assert rig.urls() == [
        f"GET {BASE}/availableNumbers?areaCode=973&enableTNDetail=false&quantity=100"
    ]
    assert rig.requests[0].headers["Authorization"].startswith("Basic ")
    assert "X-BWC-IN-Control-Processing-Type" not in rig.requests[0].headers


def test_base_url_trailing_slash_and_account_in_path() -> None:
    rig = _Rig(
        lambda r: _xml(200, fixture_text("bandwidth2_find_by_npa_no_detail.xml")),
        base_url="http://127.0.0.1:9/bw2/v1.0/",
        account_id="12 34",
    )
    rig.carrier.find_numbers(SearchRequest(prefix="+1415886", quantity=3))
    assert str(rig.requests[0].url).startswith(
        "http://127.0.0.1:9/bw2/v1.0/accounts/12%2034/availableNumbers?npaNxx=415886"
    )


# ======================================================================== search parsing
NAMESPACED_DETAIL = _doc(
    """
<SearchResult xmlns="http://www.bandwidth.com/iris/">
  <ResultCount>3</ResultCount>
  <TelephoneNumberDetailList>
    <TelephoneNumberDetail>
      <City>  NEWARK </City>
      <LATA>
        224
      </LATA>
      <RateCenter>NEWARK  </RateCenter>
      <State>NJ</State>
      <FullNumber>
        9733705112
      </FullNumber>
      <Tier>0</Tier>
    </TelephoneNumberDetail>
    <TelephoneNumberDetail>
      <RateCenter></RateCenter>
      <State />
      <FullNumber>9733705183</FullNumber>
    </TelephoneNumberDetail>
    <TelephoneNumberDetail><City>NOWHERE</City></TelephoneNumberDetail>
  </TelephoneNumberDetailList>
</SearchResult>"""
)


def test_detail_answers_are_read_with_cleaned_text_and_namespaces() -> None:
    root = bandwidth2.decode(_xml(200, NAMESPACED_DETAIL))
    results = bandwidth2.parse_search(root, "npanxx", "+1973370")
    assert [r.number for r in results] == ["+19733705112", "+19733705183"]
    assert results[0].carrier_data == {
        "rate_center": {"name": "NEWARK", "lata": "224", "state": "NJ"}
    }
    assert results[1].carrier_data == {}  # empty values dropped


def test_plain_items_are_cleaned_and_plus_numbers_kept() -> None:
    text = _doc(
        "<SearchResult><TelephoneNumberList>"
        "<TelephoneNumber>\n   4155550001\n  </TelephoneNumber>"
        "<TelephoneNumber>+14155550002</TelephoneNumber>"
        "<TelephoneNumber>  </TelephoneNumber>"
        "</TelephoneNumberList></SearchResult>"
    )
    results = bandwidth2.parse_search(bandwidth2.decode(_xml(200, text)), "npa", "+1415")
    assert [r.number for r in results] == ["+14155550001", "+14155550002"]


def test_tollfree_results_keep_the_npa_asked_for_and_have_no_carrier_data() -> None:
    text = _doc(
        "<SearchResult><TelephoneNumberDetailList>"
        "<TelephoneNumberDetail><FullNumber>8885550001</FullNumber><State>NC</State>"
        "</TelephoneNumberDetail>"
        "<TelephoneNumberDetail><FullNumber>8805550002</FullNumber></TelephoneNumberDetail>"
        "</TelephoneNumberDetailList><TelephoneNumberList>"
        "<TelephoneNumber>8885550003</TelephoneNumber></TelephoneNumberList></SearchResult>"
    )
    root = bandwidth2.decode(_xml(200, text))
    results = bandwidth2.parse_search(root, "tollfree", "+1888")
    assert [r.number for r in results] == ["+18885550003", "+18885550001"]
    assert [r.carrier_data for r in results] == [{}, {}]
    wildcard = bandwidth2.parse_search(root, "wildcard", "+188*")
    assert len(wildcard) == 3  # a wildcard the user typed keeps everything


# ======================================================================== errors
@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, "", "authentication"),
        (
            403,
            _doc(
                "<R><ErrorList><Error><Description>No access</Description></Error></ErrorList></R>"
            ),
            "authorization: No access",
        ),
        (404, "nope", "not_found"),
        (
            400,
            _doc(
                "<SearchResult><Error><Code>4010</Code><Description> bad query </Description>"
                "</Error></SearchResult>"
            ),
            "bad query",
        ),
        (
            400,
            _doc(
                "<R><ErrorList><Error><Description>From list</Description></Error></ErrorList></R>"
            ),
            "From list",
        ),
        (
            200,
            _doc("<SearchResult><ResultCount>0</ResultCount></SearchResult>"),
            "Number not found",
        ),
        (418, "teapot", "empty_response (HTTP 418)"),
    ],
)
def test_errors_are_refusals_with_the_providers_message(
    status: int, body: str, reason: str
) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        bandwidth2.decode(_xml(status, body))
    assert caught.value.reason == reason
    assert caught.value.status == status


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<html>oops",
        '{"json": true}',
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
    ],
)
def test_a_2xx_that_cannot_be_read_is_malformed(body: str) -> None:
    with pytest.raises(MalformedAnswerError, match="empty_response"):
        bandwidth2.read(_xml(200, body))


def test_success_counts_sites_peers_and_order_status() -> None:
    for body in (
        "<x><SitesResponse><Sites><Site><Id>1</Id></Site></Sites></SitesResponse></x>",
        "<TNSipPeersResponse><SipPeers><SipPeer/></SipPeers></TNSipPeersResponse>",
        "<OrderResponse><OrderStatus>PARTIAL</OrderStatus></OrderResponse>",
    ):
        assert bandwidth2.is_success(bandwidth2.read(_xml(200, _doc(body))))
    empty_status = "<OrderResponse><OrderStatus>  </OrderStatus></OrderResponse>"
    assert not bandwidth2.is_success(bandwidth2.read(_xml(200, _doc(empty_status))))


# ======================================================================== order outcomes
def _script(*answers: httpx.Response) -> Handler:
    queue = list(answers)
    return lambda request: queue.pop(0)


def test_polls_until_complete_within_the_cap() -> None:
    rig = _Rig(
        _script(
            _xml(201, _order_answer("RECEIVED")),
            _xml(200, _order_answer("RECEIVED")),
            _xml(200, _order_answer("RECEIVED")),
            _xml(200, _order_answer("COMPLETE")),
        ),
        order_poll_interval_s=0.25,
        order_poll_max=3,
    )
    data = rig.carrier._order(_pn(), _ticket())
    assert data["number"] == "+19734096113"
    assert rig.sleeps == [0.25, 0.25, 0.25]


def test_still_received_after_the_cap_leaves_the_outcome_unknown() -> None:
    rig = _Rig(lambda r: _xml(200, _order_answer("RECEIVED")), order_poll_max=2)
    ticket = _ticket()
    with pytest.raises(TransientCallError, match="still RECEIVED after 2 polls"):
        rig.carrier._order(_pn(), ticket)
    assert len(rig.requests) == 3  # the POST and two polls
    assert ticket.refs == {"order_id": ORDER_ID}  # the next attempt polls this order


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("FAILED", "Unable to acquire number: FAILED (TN unavailable)"),
        ("BACKORDERED", "Unable to acquire number: BACKORDERED (TN unavailable)"),
    ],
)
def test_failed_or_other_status_is_a_refusal(status: str, reason: str) -> None:
    failure = (
        "<ErrorList><Error><Code>5005</Code><Description>TN unavailable</Description>"
        "</Error></ErrorList>"
    )
    rig = _Rig(
        _script(_xml(201, _order_answer("RECEIVED")), _xml(200, _order_answer(status, failure)))
    )
    with pytest.raises(ProviderRefusalError) as caught:
        rig.carrier._order(_pn(), _ticket())
    assert caught.value.reason == reason


def test_post_refusal_is_prefixed_and_keeps_the_providers_message() -> None:
    answer = _doc(
        "<OrderResponse><ErrorList><Error><Code>5003</Code><Description>Site not found"
        "</Description></Error></ErrorList></OrderResponse>"
    )
    rig = _Rig(lambda r: _xml(400, answer))
    with pytest.raises(ProviderRefusalError) as caught:
        rig.carrier._order(_pn(), _ticket())
    assert caught.value.reason == "Unable to acquire number: Site not found"
    assert rig.ledger.notes == []


def test_post_401_is_a_refusal_without_retry() -> None:
    rig = _Rig(lambda r: _xml(401, ""))
    with pytest.raises(ProviderRefusalError, match="Unable to acquire number: authentication"):
        rig.carrier._order(_pn(), _ticket())
    assert len(rig.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        '<?xml version="1.0"?><OrderResponse><Order><id>',
        _doc("<OrderResponse><Order><Name>x</Name></Order></OrderResponse>"),
        _doc("<OrderResponse><OrderStatus>RECEIVED</OrderStatus></OrderResponse>"),
    ],
)
def test_an_order_answer_that_cannot_be_followed_is_malformed(answer: str) -> None:
    rig = _Rig(lambda r: _xml(201, answer))
    with pytest.raises(MalformedAnswerError, match="Unable to acquire number"):
        rig.carrier._order(_pn(), _ticket())


def test_a_poll_refusal_leaves_the_outcome_unknown() -> None:
    rig = _Rig(_script(_xml(201, _order_answer("RECEIVED")), _xml(403, "")))
    with pytest.raises(TransientCallError, match=f"order {ORDER_ID}: authorization"):
        rig.carrier._order(_pn(), _ticket())


def test_secrets_never_reach_an_error() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} as pass-secret")

    rig = _Rig(boom)
    with pytest.raises(TransientCallError) as caught:
        rig.carrier.find_numbers(SearchRequest(prefix="+1973", quantity=1))
    assert "pass-secret" not in str(caught.value)


# ======================================================================== reconciliation
LIST = _doc(
    """
<ResponseSelectWrapper>
  <ListOrderIdUserIdDate>
    <TotalCount>3</TotalCount>
    <OrderIdUserIdDate>
      <OrderDate>2024-01-01T00:00:01.000Z</OrderDate>
      <orderId>old-failed</orderId>
      <OrderStatus>FAILED</OrderStatus>
    </OrderIdUserIdDate>
    <OrderIdUserIdDate>
      <OrderDate>2024-01-01T00:00:03.000Z</OrderDate>
      <OrderId> newer-received </OrderId>
      <OrderStatus>RECEIVED</OrderStatus>
    </OrderIdUserIdDate>
    <OrderIdUserIdDate>
      <OrderDate>2024-01-01T00:00:02.000Z</OrderDate>
      <orderId>complete</orderId>
      <OrderStatus>complete</OrderStatus>
    </OrderIdUserIdDate>
  </ListOrderIdUserIdDate>
</ResponseSelectWrapper>"""
)


def test_order_list_parsing_and_choice() -> None:
    orders = bandwidth2.orders_for_number(bandwidth2.read(_xml(200, LIST)))
    assert orders == [
        ("old-failed", "FAILED", "2024-01-01T00:00:01.000Z"),
        ("newer-received", "RECEIVED", "2024-01-01T00:00:03.000Z"),
        ("complete", "COMPLETE", "2024-01-01T00:00:02.000Z"),
    ]
    assert bandwidth2.pick_order(orders) == "complete"
    assert bandwidth2.pick_order(orders[:2]) == "newer-received"
    assert bandwidth2.pick_order(orders[:1]) is None
    assert bandwidth2.pick_order([]) is None


def test_owned_with_a_noted_order_id_polls_that_order() -> None:
    rig = _Rig(_script(_xml(200, _order_answer("RECEIVED")), _xml(200, _order_answer("COMPLETE"))))
    data = rig.carrier._owned(_pn(), _ticket({"order_id": ORDER_ID}))
    assert data is not None
    assert data["order_name"] == "Kazoo-63628571101"
    assert rig.urls() == [f"GET {BASE}/orders/{ORDER_ID}"] * 2
    assert len(rig.sleeps) == 1


def test_owned_without_an_order_id_looks_the_number_up() -> None:
    answers = {
        f"GET {BASE}/orders?tn=9734096113": _xml(200, LIST),
        f"GET {BASE}/orders/complete": _xml(200, _order_answer("COMPLETE")),
    }
    rig = _Rig(lambda r: answers[f"{r.method} {r.url}"])
    ticket = _ticket()
    data = rig.carrier._owned(_pn(), ticket)
    assert data == {
        "order_id": "deadbeef1234567901234567890dead",
        "order_name": "Kazoo-63628571101",
        "number": "+19734096113",
    }
    assert ticket.refs == {"order_id": "complete"}


@pytest.mark.parametrize(
    "answer",
    [
        _xml(
            200,
            _doc(
                "<ResponseSelectWrapper><ListOrderIdUserIdDate><TotalCount>0"
                "</TotalCount></ListOrderIdUserIdDate></ResponseSelectWrapper>"
            ),
        ),
        _xml(404, ""),
    ],
)
def test_no_order_for_the_number_means_not_owned(answer: httpx.Response) -> None:
    rig = _Rig(lambda r: answer)
    assert rig.carrier._owned(_pn(), _ticket()) is None
    assert len(rig.requests) == 1


def test_a_failed_earlier_order_means_not_owned() -> None:
    rig = _Rig(lambda r: _xml(200, _order_answer("FAILED")))
    assert rig.carrier._owned(_pn(), _ticket({"order_id": ORDER_ID})) is None


def test_owned_still_received_at_the_cap_is_unknown_not_absent() -> None:
    rig = _Rig(lambda r: _xml(200, _order_answer("RECEIVED")), order_poll_max=1)
    with pytest.raises(TransientCallError):
        rig.carrier._owned(_pn(), _ticket({"order_id": ORDER_ID}))


def test_an_order_found_by_lookup_must_be_about_the_number() -> None:
    other = _order_answer("COMPLETE").replace("9734096113", "9734096114")
    answers = {
        f"GET {BASE}/orders?tn=9734096113": _xml(200, LIST),
        f"GET {BASE}/orders/complete": _xml(200, other),
    }
    rig = _Rig(lambda r: answers[f"{r.method} {r.url}"])
    ticket = _ticket()
    assert rig.carrier._owned(_pn(), ticket) is None
    assert ticket.refs == {}  # nothing noted for another number's order
