"""knm_telnyx parsing against the fixture vectors (no server)."""

from __future__ import annotations

import json

import httpx
import pytest

from carriers import telnyx
from carriers.base import SearchRequest
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from config.carrier_settings import TelnyxSettings
from tests.carriers_rig import fixture_text


def _search(doc: dict[str, object], prefix: str, config: TelnyxSettings | None = None) -> list[str]:
    kind, _body = telnyx.search_body(SearchRequest(prefix=prefix, quantity=500))
    processed = telnyx.post_process(doc, config or TelnyxSettings())
    return [r.number for r in telnyx.parse_search(processed, kind, "+1")]


def test_npa_search_vector_keeps_the_response_limit_in_document_order() -> None:
    doc = json.loads(fixture_text("telnyx_npa_search.json"))
    assert len(doc["result"]) == 36
    assert doc["limit"] == 5
    kind, body = telnyx.search_body(SearchRequest(prefix="+1301359", quantity=500))
    assert kind == "npa"
    assert body == {
        "search_type": 1,
        "search_descriptor": {"npa": "301", "nxx": "359"},
        "limit": 500,
        "with_result": True,
    }
    results = telnyx.parse_search(telnyx.post_process(doc, TelnyxSettings()), kind, "+1")
    assert [r.number for r in results] == [
        "+13013596695",
        "+13013591789",
        "+13013590340",
        "+13013596520",
        "+13013596526",
    ]
    assert results[0].carrier_data == {
        "best_effort": False,
        "currency": None,
        "monthly_recurring_cost": "1.00000",
        "number": "3013596695",
        "number_e164": "+13013596695",
        "upfront_cost": "1.00000",
    }
    assert {r.state.value for r in results} == {"discovery"}
    assert {r.carrier_module for r in results} == {"knm_telnyx"}


@pytest.mark.parametrize(
    ("prefix", "kind", "descriptor"),
    [
        ("+1800", "tollfree", {"prefix": "800"}),
        ("+18885551", "tollfree", {"prefix": "888"}),
        ("+1415", "npa", {"npa": "415"}),
        ("+14158", "npa", {"npa": "415"}),
        ("+1415886", "npa", {"npa": "415", "nxx": "886"}),
        ("+141588679", "npa", {"npa": "415", "nxx": "886"}),
        ("+14", "region", {"country_iso": "US"}),  # QUIRK: +1 and < 3 digits
        ("+44", "region", {"country_iso": "US"}),
    ],
)
def test_search_dispatch(prefix: str, kind: str, descriptor: dict[str, str]) -> None:
    got_kind, body = telnyx.search_body(SearchRequest(prefix=prefix, quantity=7))
    assert (got_kind, body["search_descriptor"], body["limit"]) == (kind, descriptor, 7)


def test_region_search_fabricates_nine_character_numbers() -> None:
    doc = {"inexplicit_result": [{"area_code": "1631"}, {"area_code": "2071234567"}]}
    results = telnyx.parse_search(doc, "region", "+44")
    assert [r.number for r in results] == ["+44163100", "+442071234567"]
    assert results[0].carrier_data == {"area_code": "1631"}


def test_best_effort_items_are_dropped_unless_kept() -> None:
    doc = {
        "any_best_effort": True,
        "result": [
            {"number_e164": "+13015550001", "best_effort": True},
            {"number_e164": "+13015550002", "best_effort": False},
        ],
    }
    assert _search(doc, "+1301") == ["+13015550002"]
    keep = TelnyxSettings(should_keep_best_effort=True)
    assert _search(doc, "+1301", keep) == ["+13015550001", "+13015550002"]


def test_rate_filter_compares_costs_as_numbers() -> None:
    doc = {
        "result": [
            {
                "number_e164": "+13015550001",
                "upfront_cost": "1.00000",
                "monthly_recurring_cost": "1",
            },
            {"number_e164": "+13015550002", "upfront_cost": "2.5", "monthly_recurring_cost": "1"},
        ]
    }
    config = TelnyxSettings(should_filter_rates=True)
    assert _search(doc, "+1301", config) == ["+13015550001"]
    assert _search(doc, "+1301") == ["+13015550001", "+13015550002"]


def test_absent_limit_means_one_hundred() -> None:
    doc = {"result": [{"number_e164": f"+1301555{i:04d}"} for i in range(150)]}
    assert len(_search(doc, "+1301")) == 100


def test_order_vector_adds_the_order_id_and_existing_keys_win() -> None:
    doc = json.loads(fixture_text("telnyx_order.json"))
    assert doc["id"] == "411389090580137691"
    data = telnyx.merge_carrier_data({"number": "4352154006"}, {"order_id": doc["id"]})
    assert data == {"number": "4352154006", "order_id": "411389090580137691"}
    assert telnyx.merge_carrier_data({"order_id": "old"}, {"order_id": "new"}) == {
        "order_id": "old"
    }


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, b'{"message": "bad prefix"}', "bad_request: bad prefix"),
        (401, b"{}", "unauthenticated"),
        (403, b"", "unauthorized"),
        (404, b"nope", "not_found"),
        (418, b"", "empty_response"),
    ],
)
def test_http_errors_are_refusals_with_the_providers_message(
    status: int, body: bytes, reason: str
) -> None:
    with pytest.raises(ProviderRefusalError) as caught:
        telnyx.decode(httpx.Response(status, content=body))
    assert caught.value.reason == reason


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"result": [', b""])
def test_a_200_that_is_not_a_json_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedAnswerError, match="empty_response"):
        telnyx.decode(httpx.Response(200, content=body))


def test_number_path_encodes_the_plus() -> None:
    assert telnyx.number_path("+13129677542") == "numbers/%2B13129677542"
