"""knm_vitelity parsing against the fixture vectors, request building,
prefix dispatch and error mapping (no server: the wire checks use an httpx mock transport)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from carriers import vitelity
from carriers.base import CarrierContext, SearchRequest
from carriers.http import CarrierHttp
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from config.carrier_settings import CarrierHttpSettings, CarriersSettings, VitelitySettings
from config.settings import Settings
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber
from tests.carriers_rig import fixture_text

CONFIG = VitelitySettings(login="user", password="s3cret", routesip=["1.2.3.4", "5.6.7.8"])


def _answer(body: str | bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body.encode() if isinstance(body, str) else body)


def _search(body: str, prefix: str, quantity: int = 500, dialcode: str = "+1") -> list[Any]:
    root = vitelity.decode(_answer(body), "xml_decode_failed")
    return vitelity.parse_search(root, prefix, quantity, dialcode)


# ================================================================================ fixture vectors
def test_listnpa_vector() -> None:
    prefix, params = vitelity.search_params("+1987", 500, CONFIG)
    assert prefix == "987"
    assert list(params.items()) == [
        ("npa", "987"),
        ("cmd", "listnpa"),
        ("xml", "yes"),
        ("login", "user"),
        ("pass", "s3cret"),
    ]
    results = _search(fixture_text("vitelity_listnpa.xml"), prefix)
    assert [r.number for r in results] == ["+19875551234", "+19875559876"]
    assert [r.carrier_data for r in results] == [
        {"number": "+19875551234", "ratecenter": "ANYCITY", "state": "ZZ"},
        {"number": "+19875559876", "ratecenter": "ANYCITY", "state": "ZZ"},
    ]
    assert {r.state.value for r in results} == {"discovery"}
    assert {r.carrier_module for r in results} == {"knm_vitelity"}


def test_listtollfree_vector_filters_by_prefix() -> None:
    prefix, params = vitelity.search_params("+18887771111", 500, CONFIG)
    assert prefix == "8887771111"
    assert list(params.items()) == [
        ("cmd", "listtollfree"),
        ("limit", "500"),
        ("xml", "yes"),
        ("login", "user"),
        ("pass", "s3cret"),
    ]
    body = fixture_text("vitelity_listtollfree.xml")
    results = _search(body, prefix)
    assert [r.number for r in results] == ["+18887771111"]
    assert results[0].carrier_data == {"number": "+18887771111"}
    only_800 = _search(body, "800")
    assert [r.number for r in only_800] == ["+18005551212"]
    assert only_800[0].carrier_data == {"number": "+18005551212"}


# ================================================================================ dispatch
@pytest.mark.parametrize(
    ("prefix", "rest", "cmd", "key", "value"),
    [
        ("+1987", "987", "listnpa", "npa", "987"),
        ("+14", "4", "listnpa", "npa", "4"),
        # a bare 800 classifies as "unknown": listnpa, as in KAZOO
        ("+1800", "800", "listnpa", "npa", "800"),
        ("+1415886", "415886", "listnpanxx", "npanxx", "415886"),
        # the whole remaining prefix, not truncated to NPA-NXX
        ("+14158867", "4158867", "listnpanxx", "npanxx", "4158867"),
        # KAZOO's concatenated prefix: every leading +1 is stripped
        ("+1+14158867900", "4158867900", "listnpanxx", "npanxx", "4158867900"),
        ("+18005551212", "8005551212", "listtollfree", "limit", "500"),
        ("+18885551", "8885551", "listnpanxx", "npanxx", "8885551"),  # too short to classify
        ("+1+18775551212", "8775551212", "listtollfree", "limit", "500"),
    ],
)
def test_search_dispatch(prefix: str, rest: str, cmd: str, key: str, value: str) -> None:
    got_rest, params = vitelity.search_params(prefix, 500, CONFIG)
    assert (got_rest, params["cmd"], params[key]) == (rest, cmd, value)


def test_tollfree_option_forces_the_tollfree_search() -> None:
    _rest, params = vitelity.search_params("+1415", 25, CONFIG, tollfree=True)
    assert params["cmd"] == "listtollfree"
    assert params["limit"] == "25"


def test_search_extras_come_from_the_config_in_kazoos_order() -> None:
    config = CONFIG.model_copy(
        update={"withrates": "yes", "type": "perminute", "provider": "p1", "cnam": "yes"}
    )
    _rest, params = vitelity.search_params("+1415886", 500, config)
    assert list(params.items()) == [
        ("npanxx", "415886"),
        ("cmd", "listnpanxx"),
        ("withrates", "yes"),
        ("type", "perminute"),
        ("provider", "p1"),
        ("xml", "yes"),
        ("cnam", "yes"),
        ("login", "user"),
        ("pass", "s3cret"),
    ]
    # toll-free searches send none of them
    _rest, tollfree = vitelity.search_params("+18005551212", 9, config)
    assert set(tollfree) == {"cmd", "limit", "xml", "login", "pass"}


def test_unset_parameters_are_omitted() -> None:
    _rest, params = vitelity.search_params("+1415", 5, VitelitySettings())
    assert params == {"npa": "415", "cmd": "listnpa", "xml": "yes"}


# ================================================================================ acquire / release
@pytest.mark.parametrize(
    ("number", "cmd", "did"),
    [
        ("+14158867900", "getlocaldid", "4158867900"),
        ("+18005551212", "gettollfree", "8005551212"),
        ("+18885551212", "gettollfree", "8885551212"),
        ("+19005551212", "getlocaldid", "9005551212"),  # toll_us is not toll-free
    ],
)
def test_order_params(number: str, cmd: str, did: str) -> None:
    assert list(vitelity.order_params(number, CONFIG).items()) == [
        ("cmd", cmd),
        ("did", did),
        ("xml", "yes"),
        ("routesip", "1.2.3.4"),  # the first of the list
        ("login", "user"),
        ("pass", "s3cret"),
    ]


def test_release_and_listdids_params() -> None:
    assert list(vitelity.release_params("+14158867900", CONFIG).items()) == [
        ("cmd", "removedid"),
        ("did", "4158867900"),
        ("xml", "yes"),
        ("login", "user"),
        ("pass", "s3cret"),
    ]
    assert vitelity.listdids_params(CONFIG) == {
        "cmd": "listdids",
        "xml": "yes",
        "login": "user",
        "pass": "s3cret",
    }


def test_order_answer_must_say_ok() -> None:
    ok = vitelity.decode(_answer("<content><status>ok</status></content>"), "failed_decode_resp")
    vitelity.confirm_ok(ok)
    for body in (
        "<content><response>x</response></content>",
        "<content><status>maybe</status></content>",
    ):
        root = vitelity.decode(_answer(body), "failed_decode_resp")
        with pytest.raises(MalformedAnswerError, match="unexpected_status"):
            vitelity.confirm_ok(root)


# ================================================================================ parsing rules
def test_quantity_stops_the_walk_and_skipped_items_do_not_count() -> None:
    body = """<content><status>ok</status><numbers>
        <did><number>4155550001</number></did>
        <did><number>6465550002</number></did>
        <did><number>4155550003</number></did>
        <response>never reached</response>
    </numbers></content>"""
    assert [r.number for r in _search(body, "415", quantity=2)] == [
        "+14155550001",
        "+14155550003",
    ]
    with pytest.raises(ProviderRefusalError, match="never reached"):
        _search(body, "415", quantity=3)


def test_a_response_child_is_the_providers_message() -> None:
    body = (
        "<content><status>ok</status>"
        "<numbers><response>no numbers available</response></numbers></content>"
    )
    with pytest.raises(ProviderRefusalError) as caught:
        _search(body, "415")
    assert caught.value.reason == "no numbers available"


def test_whitespace_namespaces_and_nesting() -> None:
    body = """<?xml version="1.0"?>
    <content xmlns="http://api.vitelity.net/">
      <status>
        ok
      </status>
      <numbers>
        <did>
          <did>
            4155550001
          </did>
          <ratecenter>  SAN FRANCISCO
          </ratecenter>
          <state></state>
          <rates><perminute> 0.01 </perminute><empty/></rates>
          <nothing><blank>  </blank></nothing>
        </did>
        <did>
           4155550002
        </did>
        <did>   </did>
        <number><ratecenter>NO NUMBER</ratecenter></number>
        <other><number>4155550003</number></other>
        <number>4155550004</number>
      </numbers>
    </content>"""
    results = _search(body, "415")
    assert [r.number for r in results] == ["+14155550001", "+14155550002"]
    assert results[0].carrier_data == {
        "number": "+14155550001",
        "ratecenter": "SAN FRANCISCO",
        "rates": {"perminute": "0.01"},
    }
    assert results[1].carrier_data == {"number": "+14155550002"}


def test_items_match_the_prefix_with_or_without_the_dial_code() -> None:
    body = """<content><numbers>
        <did><number>+442071234567</number></did>
        <did><number>4155550001</number></did>
    </numbers></content>"""
    # no <status> at all: a search goes on
    assert [r.number for r in _search(body, "2071", dialcode="+44")] == ["+442071234567"]
    assert [r.number for r in _search(body, "+1415")] == ["+14155550001"]
    assert [r.number for r in _search(body, "")] == ["+442071234567", "+14155550001"]


# ================================================================================ errors
def test_status_fail_is_a_refusal_with_the_error_text() -> None:
    body = "<content><status>fail</status><error>\n  Invalid NPA  \n</error></content>"
    with pytest.raises(ProviderRefusalError) as caught:
        vitelity.decode(_answer(body), "xml_decode_failed")
    assert caught.value.reason == "Invalid NPA"
    with pytest.raises(ProviderRefusalError) as bare:
        vitelity.decode(_answer("<content><status>fail</status></content>"), "x")
    assert bare.value.reason == "fail"


def test_no_numbers_element() -> None:
    with pytest.raises(ProviderRefusalError, match="no_numbers"):
        _search("<content><status>ok</status></content>", "415")


@pytest.mark.parametrize("body", [b"x[[invalid[[x", b"<content><status>ok", b"", b"\xff\xfe<"])
def test_unreadable_answers(body: bytes) -> None:
    with pytest.raises(MalformedAnswerError) as search:
        vitelity.decode(_answer(body), "xml_decode_failed")
    assert search.value.reason.startswith("xml_decode_failed")
    with pytest.raises(MalformedAnswerError) as order:
        vitelity.decode(_answer(body), "failed_decode_resp")
    assert order.value.reason.startswith("failed_decode_resp")


def test_a_dtd_is_refused() -> None:
    body = '<!DOCTYPE c [<!ENTITY e "x">]><content><status>ok</status></content>'
    with pytest.raises(MalformedAnswerError, match="DTD"):
        vitelity.decode(_answer(body), "failed_decode_resp")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "bad_request (HTTP 400)"),
        (401, "unauthenticated (HTTP 401)"),
        (403, "unauthorized (HTTP 403)"),
        (404, "not_found (HTTP 404)"),
        (418, "http_error (HTTP 418)"),
    ],
)
def test_a_non_2xx_status_without_xml_is_a_refusal(status: int, reason: str) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        vitelity.decode(_answer(b'{"message": "no"}', status), "failed_decode_resp")
    assert caught.value.reason == reason
    assert caught.value.status == status


def test_the_body_wins_over_the_http_status() -> None:
    body = "<content><status>ok</status><numbers><did>4155550001</did></numbers></content>"
    root = vitelity.decode(_answer(body, 404), "xml_decode_failed")
    assert [r.number for r in vitelity.parse_search(root, "415", 5, "+1")] == ["+14155550001"]


# ================================================================================ listdids
def test_listdids_shapes() -> None:
    def parse(body: str) -> set[str]:
        return vitelity.parse_listdids(vitelity.read_answer(_answer(body), "x"))

    assert parse(
        """<content><status>ok</status><numbers>
             <did><number> 4155550001 </number><ratecenter>X</ratecenter></did>
             <did>8005551212</did>
           </numbers></content>"""
    ) == {"+14155550001", "+18005551212"}
    assert parse("<content><status>fail</status><error>none</error></content>") == set()
    assert parse("<content><status>ok</status></content>") == set()
    assert (
        parse("<content><status>ok</status><numbers><response>none</response></numbers></content>")
        == set()
    )
    with pytest.raises(ProviderRefusalError, match="invalid login"):
        parse("<content><status>fail</status><error>invalid login</error></content>")


# ================================================================================ over the wire
class _Recorder:
    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)


def _carrier(recorder: _Recorder, **config: Any) -> vitelity.VitelityCarrier:
    """A carrier whose HTTP goes to ``recorder`` (no ledger: only calls that skip it)."""
    settings = Settings(
        carriers=CarriersSettings(
            vitelity=VitelitySettings.model_validate({**CONFIG.model_dump(), **config})
        ),
        carrier_http=CarrierHttpSettings(max_attempts=1),
    )
    no_db: Any = {"provisioning": None}
    ctx = CarrierContext(db=no_db, settings=settings)
    carrier = vitelity.VitelityCarrier(ctx)
    carrier.http = CarrierHttp(
        vitelity.NAME,
        settings.carrier_http,
        secrets=["user", "s3cret"],
        client=httpx.Client(transport=httpx.MockTransport(recorder)),
    )
    return carrier


def test_a_search_is_a_post_with_an_empty_body_and_a_form_encoded_query() -> None:
    recorder = _Recorder([_answer(fixture_text("vitelity_listnpa.xml"))])
    carrier = _carrier(recorder, type="per minute", login="a b&c")
    results = carrier.find_numbers(SearchRequest(prefix="+1987", quantity=500))
    assert [r.number for r in results] == ["+19875551234", "+19875559876"]
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.content == b""
    assert "content-type" not in request.headers
    assert str(request.url) == (
        "https://api.vitelity.net/api.php"
        "?npa=987&cmd=listnpa&type=per+minute&xml=yes&login=a+b%26c&pass=s3cret"
    )


def test_provider_texts_are_masked_of_credentials() -> None:
    body = "<content><status>fail</status><error>bad pass s3cret for user</error></content>"
    carrier = _carrier(_Recorder([_answer(body)]))
    with pytest.raises(ProviderRefusalError) as caught:
        carrier.find_numbers(SearchRequest(prefix="+1987", quantity=5))
    assert "s3cret" not in caught.value.reason
    assert "s3cret" not in str(caught.value)


def test_acquire_without_routesip_fails_clearly_before_any_call() -> None:
    recorder = _Recorder([])
    carrier = _carrier(recorder, routesip=[])
    with pytest.raises(KnmError) as caught:
        carrier.acquire_number(PhoneNumber(number="+14155550001"))
    error = caught.value.to_json()
    assert error["message"] == "fault by carrier"
    assert "routesip_not_configured" in error["cause"]
    assert recorder.requests == []


def test_there_are_no_provisioning_gates() -> None:
    carrier = _carrier(_Recorder([]), enable_provisioning=False, sandbox_provisioning=False)
    assert carrier.provisioning_enabled(PhoneNumber(number="+14155550001")) is True
    assert carrier.releases_upstream is True
    assert carrier.max_prefix_length == 3


def test_httpx_request_log_hides_the_credentials(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    url = httpx.URL(
        "https://api.vitelity.net/api.php",
        params={"cmd": "listnpa", "login": "user", "pass": "s3cret"},
    )
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", url, "HTTP/1.1 200 OK")
    assert "https://api.vitelity.net/api.php" in caplog.text
    assert "s3cret" not in caplog.text  # carriers.http drops query strings from httpx's log
    assert "login=" not in caplog.text
