"""knm_vitelity: Vitelity's ``api.php`` query-string API.

Every call is a POST with an empty body; every parameter, the credentials included (``login``,
``pass``), travels in the query string and the answer is XML under ``<content>``. KAZOO ignores
the HTTP status and reads the body; here 429/5xx are transient (the shared HTTP layer) and
another non-2xx status whose body is not XML is the provider's refusal. Search ``cmd=listnpa``,
``listnpanxx`` or ``listtollfree``; order ``cmd=getlocaldid`` / ``gettollfree``; release
``cmd=removedid``. Vitelity has no provisioning gates.

Ownership, asked after an ambiguous order or release: ``cmd=listdids`` lists every DID on the
account; the number is ours when it is listed. No captured ``xml=yes`` answer of ``listdids`` was
found, so its shape is assumed to be the search's: ``<content><status>ok</status><numbers>
<did><number>NPANXXXXXX</number>...</did>...</numbers></content>`` (a text-only ``<did>`` is read
too). An account without DIDs may answer ``<status>fail</status><error>none</error>`` (the plain
API's ``none`` code), no ``<numbers>`` or a ``<numbers><response>`` text: all read as "none".

The query parameters, credentials and answers shared with the feature providers are in
``carriers.vitelity_api``; the CNAM and E911 providers the carrier offers in
``carriers.vitelity_features``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, ClassVar

import httpx

from carriers import xmltext
from carriers.base import SearchRequest, SearchResult
from carriers.features import FeatureProvider
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import classify, normalize, to_npan
from carriers.vitelity_api import (
    NAME,
    VitelityApi,
    item_object,
    put_param,
    read_answer,
    status_of,
    with_credentials,
)
from carriers.vitelity_features import VitelityCnamProvider, VitelityE911Provider
from config.carrier_settings import VitelitySettings
from knm.domain import errors
from knm.domain.number import NumberState, PhoneNumber

#: Classifications that make a search or an order toll-free.
TOLLFREE_CLASSES = frozenset({"tollfree_us", "tollfree"})

#: ``listdids`` error texts that mean "no DIDs on this account", not a failure.
NO_DIDS = frozenset({"none", "no dids", "no numbers", "no dids found"})


# ================================================================================ pure parts
def strip_country(prefix: str) -> str:
    """Drop every leading ``+1`` (KAZOO's recursive clause: ``+1+1415`` -> ``415``)."""
    while prefix.startswith("+1"):
        prefix = prefix[2:]
    return prefix


def search_params(
    prefix: str, quantity: int, config: VitelitySettings, tollfree: bool = False
) -> tuple[str, dict[str, str]]:
    """``(stripped prefix, query parameters)`` of a search, in KAZOO's order.

    A bare ``800`` classifies as ``unknown`` and goes to ``listnpa`` (KAZOO's behaviour); only a
    prefix long enough to classify as toll-free (or the ``tollfree`` option) lists toll-free.
    """
    rest = strip_country(prefix)
    params: dict[str, str] = {}
    if tollfree or classify(rest) in TOLLFREE_CLASSES:
        params = {"cmd": "listtollfree", "limit": str(quantity), "xml": "yes"}
        return rest, with_credentials(params, config)
    if len(rest) <= 3:
        params["npa"] = rest
        params["cmd"] = "listnpa"
    else:
        params["npanxx"] = rest  # the whole remaining prefix, not truncated to six digits
        params["cmd"] = "listnpanxx"
    put_param(params, "withrates", config.withrates)
    put_param(params, "type", config.type)
    put_param(params, "provider", config.provider)
    params["xml"] = "yes"
    put_param(params, "cnam", config.cnam)
    return rest, with_credentials(params, config)


def order_params(number: str, config: VitelitySettings) -> dict[str, str]:
    """``getlocaldid`` or ``gettollfree`` for an E.164 number; ``routesip`` must be set."""
    cmd = "gettollfree" if classify(number) in TOLLFREE_CLASSES else "getlocaldid"
    params = {"cmd": cmd, "did": to_npan(number), "xml": "yes", "routesip": config.routesip[0]}
    return with_credentials(params, config)


def release_params(number: str, config: VitelitySettings) -> dict[str, str]:
    """``removedid`` for an E.164 number."""
    return with_credentials({"cmd": "removedid", "did": to_npan(number), "xml": "yes"}, config)


def listdids_params(config: VitelitySettings) -> dict[str, str]:
    """``listdids``: every DID on the account (reconciliation)."""
    return with_credentials({"cmd": "listdids", "xml": "yes"}, config)


def decode(response: httpx.Response, decode_error: str) -> ET.Element:
    """``read_answer``; ``<status>fail</status>`` is a refusal with the ``<error>`` text."""
    root = read_answer(response, decode_error)
    if status_of(root) == "fail":
        raise ProviderRefusalError(
            NAME, xmltext.text(root, "error") or "fail", response.status_code
        )
    return root


def read_item(element: ET.Element) -> dict[str, Any] | None:
    """One ``<numbers>`` child as an item, ``None`` when it is not a number entry."""
    name = xmltext.local(element.tag) if isinstance(element.tag, str) else ""
    if name not in ("did", "number"):
        return None
    if xmltext.children(element):
        return item_object(element)
    if name != "did":
        return None  # a text-only <number> is not an entry (KAZOO reads text-only <did>s)
    text = xmltext.clean(element.text)
    return {"number": normalize(text)} if text else {}


def parse_search(root: ET.Element, prefix: str, quantity: int, dialcode: str) -> list[SearchResult]:
    """The numbers of a decoded search answer, in document order, at most ``quantity``.

    Items whose number starts with neither the prefix nor the dial code and the prefix are
    skipped and do not count; a ``<response>`` child is the provider's message (no stock).
    """
    numbers = xmltext.children(root, "numbers")
    if not numbers:
        raise ProviderRefusalError(NAME, "no_numbers")
    out: list[SearchResult] = []
    for element in numbers[0]:
        if len(out) >= quantity:
            break
        if isinstance(element.tag, str) and xmltext.local(element.tag) == "response":
            raise ProviderRefusalError(NAME, xmltext.clean(element.text) or "response")
        item = read_item(element)
        number = item.get("number") if item else None
        if not isinstance(number, str) or not (
            number.startswith(prefix) or number.startswith(dialcode + prefix)
        ):
            continue
        out.append(SearchResult(number, NAME, NumberState.DISCOVERY, dict(item or {})))
    return out


def parse_listdids(root: ET.Element) -> set[str]:
    """The E.164 numbers of a ``listdids`` answer (before ``decode``: "none" is no DIDs)."""
    if status_of(root) == "fail":
        error = xmltext.text(root, "error") or "fail"
        if error.strip().lower() in NO_DIDS:
            return set()
        raise ProviderRefusalError(NAME, error)
    out: set[str] = set()
    for numbers in xmltext.children(root, "numbers"):
        for element in numbers:
            item = read_item(element)
            if item and isinstance(item.get("number"), str):
                out.add(item["number"])
    return out


def confirm_ok(root: ET.Element) -> None:
    """An order's or a release's decoded answer must say ``ok`` (KAZOO crashes otherwise)."""
    status = status_of(root)
    if status != "ok":
        raise MalformedAnswerError(NAME, f"unexpected_status: {status or 'none'}")


# ================================================================================ the module
class VitelityCarrier(VitelityApi):
    """Vitelity numbers: discovery by NPA, NPA-NXX or toll-free; orders and releases by DID;
    CNAM and E911 at Vitelity."""

    releases_upstream: ClassVar[bool] = True
    max_prefix_length: ClassVar[int] = 3
    should_lookup_cnam: ClassVar[bool] = False  # config use_stepswitch_cnam, default false
    feature_providers: ClassVar[tuple[type[FeatureProvider], ...]] = (
        VitelityE911Provider,
        VitelityCnamProvider,
    )

    def provisioning_enabled(self, pn: PhoneNumber) -> bool:
        """Vitelity has no provisioning gates: every order reaches the API."""
        return True

    def _post(self, params: dict[str, str], idempotent: bool) -> httpx.Response:
        return self.http.call("POST", self.config.base_url, idempotent=idempotent, params=params)

    def _decoded(
        self, response: httpx.Response, decode_error: str, require_ok: bool = False
    ) -> ET.Element:
        """``decode`` (then ``confirm_ok`` after an order or a release), with any credential
        echoed in a provider text masked."""
        try:
            root = decode(response, decode_error)
            if require_ok:
                confirm_ok(root)
            return root
        except (ProviderRefusalError, MalformedAnswerError) as exc:
            raise type(exc)(NAME, self.http.safe(exc.reason), exc.status) from None

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        prefix, params = search_params(request.prefix, request.quantity, self.config)
        root = self._decoded(self._post(params, True), "xml_decode_failed")
        return parse_search(root, prefix, request.quantity, request.dialcode)

    def acquire(self, pn: PhoneNumber, request_id: str | None) -> None:
        """Refuse at once, before any call, when no ``routesip`` is configured (KAZOO crashed)."""
        if not self.config.routesip:
            raise errors.by_carrier(pn.number, "routesip_not_configured", NAME)
        super().acquire(pn, request_id)

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        response = self._post(order_params(pn.number, self.config), False)
        self._decoded(response, "failed_decode_resp", require_ok=True)
        return dict(pn.carrier_data)  # KAZOO returns the number unchanged

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        return dict(pn.carrier_data) if pn.number in self._listdids() else None

    def _release(self, pn: PhoneNumber, ticket: Ticket) -> None:
        response = self._post(release_params(pn.number, self.config), False)
        self._decoded(response, "failed_decode_resp", require_ok=True)

    def _released(self, pn: PhoneNumber, ticket: Ticket) -> bool:
        return pn.number not in self._listdids()

    def _listdids(self) -> set[str]:
        response = self._post(listdids_params(self.config), True)
        try:
            return parse_listdids(read_answer(response, "listdids_decode_failed"))
        except (ProviderRefusalError, MalformedAnswerError) as exc:
            raise type(exc)(NAME, self.http.safe(exc.reason), exc.status) from None
