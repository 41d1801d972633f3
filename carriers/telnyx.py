"""knm_telnyx: Telnyx's "origination" v1 API.

The calls, answers and credentials shared with the feature providers are in
``carriers.telnyx_api``; the E911 and CNAM providers the carrier offers in
``carriers.telnyx_features``.

Search ``POST number_searches``; order ``POST number_orders``; disconnect calls nothing upstream
(KAZOO's behaviour: only the provisioning gates apply). Ownership, asked after an ambiguous
order: ``GET numbers/<%2B-encoded number>`` answers 200 with the number when it is on the
account, 404 when not.
"""

from __future__ import annotations

from typing import Any, ClassVar

from carriers.base import SearchRequest, SearchResult
from carriers.features import FeatureProvider
from carriers.integration import ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import US_TOLLFREE_NPAS
from carriers.telnyx_api import NAME, TelnyxApi, decode, number_path
from carriers.telnyx_features import TelnyxCnamProvider, TelnyxE911Provider
from config.carrier_settings import TelnyxSettings
from knm.domain.number import NumberState, PhoneNumber


# ================================================================================ pure parts
def search_kind(prefix: str) -> tuple[str, int, dict[str, str]]:
    """``(kind, search_type, search_descriptor)`` for a normalized prefix."""
    if prefix.startswith("+1") and len(prefix) >= 5 and prefix[2:5].isdigit():
        npa = prefix[2:5]
        if npa in US_TOLLFREE_NPAS:
            return "tollfree", 3, {"prefix": npa}
        descriptor = {"npa": npa}
        digits = prefix[2:]
        if len(digits) >= 6:
            descriptor["nxx"] = digits[3:6]
        return "npa", 1, descriptor
    return "region", 2, {}


def search_body(request: SearchRequest) -> tuple[str, dict[str, Any]]:
    """The search kind and the JSON body of ``POST number_searches``."""
    kind, search_type, descriptor = search_kind(request.prefix)
    if kind == "region":
        descriptor = {"country_iso": request.country or "US"}
    return kind, {
        "search_type": search_type,
        "search_descriptor": descriptor,
        "limit": request.quantity,
        "with_result": True,
    }


def post_process(doc: dict[str, Any], config: TelnyxSettings) -> dict[str, Any]:
    """Best-effort removal, rate filter, then the response's own ``limit``."""
    result = list(doc.get("result") or [])
    inexplicit = list(doc.get("inexplicit_result") or [])
    if not config.should_keep_best_effort and doc.get("any_best_effort") is True:
        result = [item for item in result if item.get("best_effort") is not True]
    if config.should_filter_rates:
        result = [item for item in result if _rates_match(item, config)]
    limit = doc.get("limit", 100)
    if not isinstance(limit, int) or limit < 0:
        limit = 100
    return {**doc, "result": result[:limit], "inexplicit_result": inexplicit[:limit]}


def _rates_match(item: dict[str, Any], config: TelnyxSettings) -> bool:
    try:
        upfront = float(item.get("upfront_cost"))  # type: ignore[arg-type]
        monthly = float(item.get("monthly_recurring_cost"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return upfront == config.upfront_cost and monthly == config.monthly_recurring_cost


def parse_search(doc: dict[str, Any], kind: str, dialcode: str) -> list[SearchResult]:
    """Results of a post-processed search answer."""
    if kind == "region":
        out = []
        for item in doc.get("inexplicit_result") or []:
            number = f"{dialcode}{item.get('area_code', '')}"
            out.append(SearchResult(number.ljust(9, "0"), NAME, NumberState.DISCOVERY, dict(item)))
        return out
    return [
        SearchResult(item["number_e164"], NAME, NumberState.DISCOVERY, dict(item))
        for item in doc.get("result") or []
        if isinstance(item, dict) and item.get("number_e164")
    ]


def merge_carrier_data(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """KAZOO's ``update``: new keys are added, existing keys win."""
    return {**new, **existing}


# ================================================================================ the module
class TelnyxCarrier(TelnyxApi):
    """Telnyx numbers: discovery by NPA/NXX, toll-free prefix or country; orders by number;
    E911 and CNAM at Telnyx."""

    max_prefix_length: ClassVar[int] = 3
    feature_providers: ClassVar[tuple[type[FeatureProvider], ...]] = (
        TelnyxE911Provider,
        TelnyxCnamProvider,
    )

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        kind, body = search_body(request)
        response = self.http.call(
            "POST",
            self._url("number_searches"),
            idempotent=True,
            json=body,
            headers=self._headers(),
        )
        doc = post_process(decode(response), self.config)
        return parse_search(doc, kind, request.dialcode)

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        response = self.http.call(
            "POST",
            self._url("number_orders"),
            idempotent=False,
            json={"requested_numbers": [pn.number]},
            headers=self._headers(),
        )
        doc = decode(response)
        order_id = doc.get("id")
        if not isinstance(order_id, str) or not order_id:
            message = doc.get("message")
            raise ProviderRefusalError(NAME, str(message) if message else "order refused")
        return merge_carrier_data(pn.carrier_data, {"order_id": order_id})

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        response = self.http.call(
            "GET", self._url(number_path(pn.number)), idempotent=True, headers=self._headers()
        )
        if response.status_code == 404:
            return None
        doc = decode(response)
        if doc.get("number_val_e164") not in (None, pn.number):
            return None
        return dict(pn.carrier_data)
