"""knm_other: a generic "phonebook" midware peer at ``base_url``.

Search ``GET numbers/<cc>/search`` (``GET blocks/<cc>/search`` when the request asks for
blocks); status ``POST numbers/<cc>/status``; order ``PUT numbers/<cc>/order``; disconnect
calls nothing upstream (KAZOO). ``<cc>`` is always the configured ``default_country``, as in
KAZOO. The peer has no authentication; bodies are raw JSON without a Content-Type (KAZOO's
wire). Unlike KAZOO, the search prefix is URL-encoded (``%2B``). KAZOO applies no
provisioning gates to this module, so neither does knm (``enable_provisioning`` is ignored).

The peer contract, plus one rule knm relies on: the status call answers
``"in_service"`` for a number the peer holds for us (an order of ours took effect); any other
status text (``available``, ``not_found``, ...) means it is not ours.

Ownership, asked after an ambiguous order: ``POST numbers/<cc>/status`` with the number (as
NPAN, like every status call) answers ``in_service`` when the order took effect. The lost
order answer's ``opaque`` and ``locality`` cannot be recovered that way: a reconciled number
keeps the carrier data it had from the search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx

from carriers.base import SearchRequest, SearchResult
from carriers.http import CarrierCallError, PermanentCallError
from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import to_npan
from carriers.retry import FailureKind
from config.carrier_settings import OtherSettings
from knm.domain import errors
from knm.domain.number import NumberState, PhoneNumber

NAME = "knm_other"

#: The status-call answer that means "this number is ours" (knm's addition to the peer contract).
OWNED_STATUS = "in_service"


# ================================================================================ pure parts
def numbers_url(base_url: str, country: str, what: str) -> str:
    """``<url>/numbers/<cc>/<what>`` (``search``, ``status``, ``order``)."""
    return f"{base_url.rstrip('/')}/numbers/{quote(country, safe='')}/{what}"


def search_url(base_url: str, country: str, request: SearchRequest) -> str:
    """The number search; the prefix is URL-encoded (KAZOO sent ``+``)."""
    query = urlencode(
        {"prefix": request.prefix, "limit": request.quantity, "offset": request.offset},
        quote_via=quote,
    )
    return f"{numbers_url(base_url, country, 'search')}?{query}"


def blocks_url(base_url: str, country: str, request: SearchRequest) -> str:
    """The block search: ``size`` is the quantity, ``limit`` the number of blocks."""
    query = urlencode(
        {
            "prefix": request.prefix,
            "size": request.quantity,
            "offset": request.offset,
            "limit": request.blocks or 0,
        },
        quote_via=quote,
    )
    return f"{base_url.rstrip('/')}/blocks/{quote(country, safe='')}/search?{query}"


def encode(body: Any) -> bytes:
    """Compact JSON, as KAZOO's ``kz_json:encode`` writes it."""
    return json.dumps(body, separators=(",", ":")).encode()


def status_body(numbers: Sequence[str]) -> bytes:
    """``{"data": [npan, ...]}``: NANP numbers as 10 digits, others unchanged."""
    return encode({"data": [to_npan(n) for n in numbers]})


def order_body(number: str, gateways: Sequence[str]) -> bytes:
    return encode({"data": {"numbers": [number], "gateways": list(gateways)}})


def decode(response: httpx.Response, refused: str, unreadable: str | None = None) -> dict[str, Any]:
    """A 200 JSON object. Any other status is the peer's refusal, named ``refused`` (KAZOO's
    error name) with what the peer said; an unreadable 200 is malformed (``unreadable``)."""
    status = response.status_code
    if status != 200:
        message = _message(response.content)
        detail = f"{refused}: HTTP {status}" + (f": {message}" if message else "")
        raise ProviderRefusalError(NAME, detail, status)
    reason = unreadable or refused
    try:
        doc = json.loads(response.content)
    except ValueError:
        raise MalformedAnswerError(NAME, f"{reason}: malformed JSON", 200) from None
    if not isinstance(doc, dict):
        raise MalformedAnswerError(NAME, f"{reason}: the answer is not a JSON object", 200)
    return doc


def _message(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return _said(doc) if isinstance(doc, dict) else None


def _said(doc: dict[str, Any]) -> str | None:
    """The peer's own words in an answer, when it gave any (the format leaves them open)."""
    for key in ("message", "error", "data"):
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _require_success(doc: dict[str, Any], reason: str) -> None:
    """``status`` must be ``success``; anything else is the peer saying no (``reason``)."""
    if doc.get("status") != "success":
        detail = _said(doc)
        raise ProviderRefusalError(
            NAME, f"{reason}: status {doc.get('status')!r}" + (f": {detail}" if detail else "")
        )


def parse_numbers(doc: dict[str, Any]) -> list[SearchResult]:
    """``{"status": "success", "data": {"+E164": {...}}}``: one result per key, in order."""
    _require_success(doc, "not_available")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise MalformedAnswerError(NAME, "not_available: data is not an object", 200)
    return [
        SearchResult(
            number, NAME, NumberState.DISCOVERY, dict(value) if isinstance(value, dict) else {}
        )
        for number, value in data.items()
        if number
    ]


def parse_blocks(doc: dict[str, Any]) -> list[SearchResult]:
    """``{"status": "success", "data": [block, ...]}``: each block's start and end number,
    both with the whole block as carrier data (KAZOO's ``bulk`` answer)."""
    _require_success(doc, "not_available")
    data = doc.get("data", [])
    if not isinstance(data, list):
        raise MalformedAnswerError(NAME, "not_available: data is not a list", 200)
    out: list[SearchResult] = []
    for block in data:
        if not isinstance(block, dict):
            continue
        for key in ("start_number", "end_number"):
            number = block.get(key)
            if isinstance(number, str) and number:
                out.append(SearchResult(number, NAME, NumberState.DISCOVERY, dict(block)))
    return out


def parse_status(doc: dict[str, Any]) -> dict[str, str]:
    """``{"status": "success", "data": [{"number": N, "status": S}]}`` -> ``{N: S}``."""
    _require_success(doc, "resp_error")
    data = doc.get("data", [])
    if not isinstance(data, list):
        raise MalformedAnswerError(NAME, "resp_error: data is not a list", 200)
    out: dict[str, str] = {}
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("number"), str):
            status = item.get("status")
            out[item["number"]] = status if isinstance(status, str) else json.dumps(status)
    return out


def apply_order(number: str, doc: dict[str, Any], carrier_data: dict[str, Any]) -> dict[str, Any]:
    """The carrier data after an order answer: ``data.<number>.status`` must be
    ``success`` (an answer without that entry leaves the order's effect unknown); a non-empty
    ``opaque`` object replaces the carrier data; a non-empty ``locality`` is kept in it under
    ``locality`` until number features exist (KAZOO sets the ``locality`` feature)."""
    data = doc.get("data")
    entry = data.get(number) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        # KAZOO's lookup_resp_error too, but the order may have taken effect: unknown, not refused
        raise MalformedAnswerError(NAME, f"lookup_resp_error: no answer for {number}", 200)
    _require_success(entry, "lookup_resp_error")
    out = dict(carrier_data)
    opaque = entry.get("opaque")
    if isinstance(opaque, dict) and opaque:
        out = dict(opaque)
    locality = entry.get("locality")
    if locality not in (None, "", {}, []):
        out["locality"] = locality
    return out


# ================================================================================ the module
class OtherCarrier(Integration):
    """A phonebook peer: numbers and blocks by prefix, orders by number, status checks."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "other"
    config_model: ClassVar[type[OtherSettings]] = OtherSettings
    max_prefix_length: ClassVar[int] = 10
    config: OtherSettings

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        base = self.config.base_url
        if not base:
            return []  # KAZOO's not_available
        country = self.config.default_country
        if request.blocks is not None:
            response = self.http.call("GET", blocks_url(base, country, request), idempotent=True)
            return parse_blocks(decode(response, "not_available"))
        response = self.http.call("GET", search_url(base, country, request), idempotent=True)
        return parse_numbers(decode(response, "not_available"))

    def check_numbers(self, numbers: Sequence[str]) -> dict[str, str]:
        """The peer's status of each number, keyed by the numbers as asked (the peer answers
        with the NPAN it was sent; numbers it does not mention are left out)."""
        answered = self._status(numbers)
        out: dict[str, str] = {}
        for number in numbers:
            status = answered.get(to_npan(number), answered.get(number))
            if status is not None:
                out[number] = status
        return out

    def _status(self, numbers: Sequence[str]) -> dict[str, str]:
        base = self.config.base_url
        if not base:
            raise PermanentCallError(NAME, "not_available", FailureKind.PERMANENT)
        response = self.http.call(
            "POST",
            numbers_url(base, self.config.default_country, "status"),
            idempotent=True,
            content=status_body(numbers),
        )
        return parse_status(decode(response, "resp_error"))

    def provisioning_enabled(self, pn: PhoneNumber) -> bool:
        """KAZOO's knm_other has no provisioning gates: every order goes to the peer."""
        return True

    def acquire(self, pn: PhoneNumber, request_id: str | None) -> None:
        if not self.config.base_url:
            raise errors.unspecified("missing_provider_url", pn.number)
        super().acquire(pn, request_id)

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        base = self.config.base_url
        if not base:
            raise errors.unspecified("missing_provider_url", pn.number)
        response = self.http.call(
            "PUT",
            numbers_url(base, self.config.default_country, "order"),
            idempotent=False,
            content=order_body(pn.number, self.config.endpoints),
        )
        return apply_order(
            pn.number, decode(response, "lookup_failed", "lookup_resp_error"), pn.carrier_data
        )

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        try:
            status = self.check_numbers([pn.number]).get(pn.number)
        except CarrierCallError as exc:
            # no answer to "is it ours?" leaves the order's outcome unknown (never "failed")
            raise CarrierCallError(
                NAME, f"ownership unknown: {exc.reason}", FailureKind.AMBIGUOUS, exc.status
            ) from None
        return dict(pn.carrier_data) if status == OWNED_STATUS else None
