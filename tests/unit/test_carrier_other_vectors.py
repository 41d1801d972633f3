"""knm_other request building and parsing against the peer answers
(knm_other has no fixture files; no server)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from carriers import other
from carriers.base import SearchRequest
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.sandbox.other import _prefix

URL = "http://phonebook.example/api"


# ----------------------------------------------------------------------------- request building
def test_number_search_url_encodes_the_prefix() -> None:
    request = SearchRequest(prefix="+1415886", quantity=500, offset=0)
    url = other.search_url(URL, "US", request)
    # knm fixes this: KAZOO sent a literal ``+`` (a server decodes it as a space)
    assert url == f"{URL}/numbers/US/search?prefix=%2B1415886&limit=500&offset=0"
    assert dict(parse_qsl(urlsplit(url).query)) == {
        "prefix": "+1415886",
        "limit": "500",
        "offset": "0",
    }


def test_a_trailing_slash_on_the_base_url_is_not_doubled() -> None:
    request = SearchRequest(prefix="+44207", quantity=7, offset=20)
    url = other.search_url(URL + "/", "GB", request)
    assert url == f"{URL}/numbers/GB/search?prefix=%2B44207&limit=7&offset=20"


def test_block_search_url() -> None:
    request = SearchRequest(prefix="+1415", quantity=100, offset=3, blocks=2)
    assert other.blocks_url(URL, "US", request) == (
        f"{URL}/blocks/US/search?prefix=%2B1415&size=100&offset=3&limit=2"
    )


def test_status_and_order_urls() -> None:
    assert other.numbers_url(URL, "US", "status") == f"{URL}/numbers/US/status"
    assert other.numbers_url(URL, "US", "order") == f"{URL}/numbers/US/order"


def test_status_body_sends_npan_for_nanp_numbers_and_others_unchanged() -> None:
    body = other.status_body(["+14158867900", "+442071234567", "4158867901"])
    assert body == b'{"data":["4158867900","+442071234567","4158867901"]}'


def test_order_body_sends_the_number_and_the_endpoints_as_gateways() -> None:
    assert json.loads(other.order_body("+14158867900", ["10.0.0.1", "10.0.0.2"])) == {
        "data": {"numbers": ["+14158867900"], "gateways": ["10.0.0.1", "10.0.0.2"]}
    }
    assert other.order_body("+14158867900", []) == (
        b'{"data":{"numbers":["+14158867900"],"gateways":[]}}'
    )


def test_maximal_prefix_length_is_ten() -> None:
    assert other.OtherCarrier.max_prefix_length == 10
    assert other.OtherCarrier.releases_upstream is False


# ----------------------------------------------------------------------------- peer answers
def test_numbers_answer_gives_one_discovery_result_per_key_in_order() -> None:
    answer = {
        "status": "success",
        "data": {
            f"+1415886790{d}": {"extension": d} for d in range(10)
        },  # KAZOO's own test answer (knm_other ?NUMBERS_RESPONSE)
    }
    doc = other.decode(httpx.Response(200, content=json.dumps(answer).encode()), "not_available")
    results = other.parse_numbers(doc)
    assert [r.number for r in results] == [f"+1415886790{d}" for d in range(10)]
    assert [r.carrier_data for r in results] == [{"extension": d} for d in range(10)]
    assert {r.state.value for r in results} == {"discovery"}
    assert {r.carrier_module for r in results} == {"knm_other"}


def test_numbers_answer_with_empty_data_is_no_results() -> None:
    assert other.parse_numbers({"status": "success", "data": {}}) == []


def test_blocks_answer_gives_start_and_end_of_each_block_with_the_block_as_data() -> None:
    block1 = {"start_number": "+14158867900", "end_number": "+14158867999", "size": 100}
    block2 = {"start_number": "+14158868000", "end_number": "+14158868099"}
    results = other.parse_blocks({"status": "success", "data": [block1, block2]})
    assert [r.number for r in results] == [
        "+14158867900",
        "+14158867999",
        "+14158868000",
        "+14158868099",
    ]
    assert [r.carrier_data for r in results] == [block1, block1, block2, block2]
    assert {r.state.value for r in results} == {"discovery"}


def test_status_answer_maps_each_number_to_its_status() -> None:
    answer = {
        "status": "success",
        "data": [
            {"number": "4158867900", "status": "in_service"},
            {"number": "+442071234567", "status": "available"},
        ],
    }
    assert other.parse_status(answer) == {
        "4158867900": "in_service",
        "+442071234567": "available",
    }


def test_order_answer_opaque_replaces_carrier_data_and_locality_is_kept() -> None:
    answer = {
        "data": {
            "+14158867900": {
                "status": "success",
                "opaque": {"route": "pb-7"},
                "locality": {"city": "SAN FRANCISCO", "state": "CA"},
            }
        }
    }
    data = other.apply_order("+14158867900", answer, {"extension": 0, "rate_center": "X"})
    assert data == {"route": "pb-7", "locality": {"city": "SAN FRANCISCO", "state": "CA"}}


@pytest.mark.parametrize("opaque", [None, {}, [], "", "not-an-object"])
def test_order_answer_without_an_opaque_object_keeps_the_carrier_data(opaque: object) -> None:
    entry: dict[str, object] = {"status": "success"}
    if opaque is not None:
        entry["opaque"] = opaque
    data = other.apply_order("+14158867900", {"data": {"+14158867900": entry}}, {"extension": 0})
    assert data == {"extension": 0}


@pytest.mark.parametrize("locality", [None, {}, [], ""])
def test_an_empty_locality_is_not_stored(locality: object) -> None:
    entry = {"status": "success", "opaque": {"a": 1}, "locality": locality}
    data = other.apply_order("+14158867900", {"data": {"+14158867900": entry}}, {})
    assert data == {"a": 1}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"status": "error", "message": "taken"}, "lookup_resp_error: status 'error': taken"),
        ({"status": "failed"}, "lookup_resp_error: status 'failed'"),
        ({}, "lookup_resp_error: status None"),
    ],
)
def test_order_answer_without_success_for_the_number_is_lookup_resp_error(
    entry: dict[str, object], reason: str
) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        other.apply_order("+14158867900", {"data": {"+14158867900": entry}}, {})
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "answer",
    [
        {"data": {"+14158867999": {"status": "success"}}},  # another number's answer
        {"data": {}},
        {"status": "success"},
        {"data": "nope"},
        {"data": {"+14158867900": "success"}},
    ],
)
def test_order_answer_that_does_not_mention_the_number_is_malformed(
    answer: dict[str, object],
) -> None:
    # KAZOO names it lookup_resp_error as well; the order's effect is unknown (reconciled later)
    with pytest.raises(MalformedAnswerError, match="lookup_resp_error: no answer for"):
        other.apply_order("+14158867900", answer, {})


# ----------------------------------------------------------------------------- error mapping
@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, b'{"message": "who are you"}', "lookup_failed: HTTP 401: who are you"),
        (404, b"", "lookup_failed: HTTP 404"),
        (400, b'{"status": "error", "error": "bad body"}', "lookup_failed: HTTP 400: bad body"),
        (409, b"<html>conflict</html>", "lookup_failed: HTTP 409"),
    ],
)
def test_non_200_is_a_refusal_named_as_kazoo_does(status: int, body: bytes, reason: str) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        other.decode(httpx.Response(status, content=body), "lookup_failed", "lookup_resp_error")
    assert caught.value.reason == reason
    assert caught.value.status == status


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"status": "success", "data": {', b""])
def test_an_unreadable_200_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedAnswerError, match="lookup_resp_error: malformed JSON"):
        other.decode(httpx.Response(200, content=body), "lookup_failed", "lookup_resp_error")


def test_a_200_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedAnswerError, match="not a JSON object"):
        other.decode(httpx.Response(200, content=b"[1, 2]"), "not_available")


def test_whitespace_around_a_json_answer_is_fine() -> None:
    body = b'\n  {"status": "success", "data": {"+14158867900": {}}}\n  '
    doc = other.decode(httpx.Response(200, content=body), "not_available")
    assert [r.number for r in other.parse_numbers(doc)] == ["+14158867900"]


@pytest.mark.parametrize("parse", [other.parse_numbers, other.parse_blocks])
def test_a_search_answer_without_success_is_not_available(parse: object) -> None:
    with pytest.raises(ProviderRefusalError, match="not_available: status 'error': no stock"):
        parse({"status": "error", "message": "no stock"})  # type: ignore[operator]


def test_search_answers_whose_data_has_the_wrong_shape_are_malformed() -> None:
    with pytest.raises(MalformedAnswerError):
        other.parse_numbers({"status": "success", "data": ["+14158867900"]})
    with pytest.raises(MalformedAnswerError):
        other.parse_blocks({"status": "success", "data": {"start_number": "+14158867900"}})


def test_a_status_answer_without_success_is_resp_error() -> None:
    with pytest.raises(ProviderRefusalError, match="resp_error"):
        other.parse_status({"status": "failure", "data": []})


# ----------------------------------------------------------------------------- the sandbox peer
@pytest.mark.parametrize(
    ("raw", "prefix"),
    [("+1415", "+1415"), (" 1415", "+1415"), ("1415", "1415"), ("", "")],
)
def test_the_sandbox_peer_reads_a_literal_plus_leniently(raw: str, prefix: str) -> None:
    assert _prefix(raw) == prefix
