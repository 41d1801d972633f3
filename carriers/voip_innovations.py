"""knm_voip_innovations: VoIP Innovations' SOAP "APIService".

Every call is one SOAP 1.1 POST to one URL: ``sandbox_url`` whenever ``sandbox_provisioning``
is set (KAZOO switches every call, searches included), else ``base_url``. Search ``getDIDs``
by NPA or NPA-NXX; order ``assignDID``; release ``releaseDID`` (the provider gives the number
back, so a release is provisioned as carefully as an order).

Ownership, asked after an ambiguous order or release: ``queryDID`` with the 10-digit number.
KAZOO defines that action but never calls it; its answer is the ``DID`` element that
``assignDID`` and ``releaseDID`` return (``//queryDIDResult/DIDs/DID``, as parsed by KAZOO's
older ``wnm_voip_innovations`` and captured in public client fixtures). VoIP Innovations'
``statusCode`` 100 means "available, assigned, or reserved to you", so the number is ours when
the code is 100 and its ``availability`` is not ``Available``; 102230/102235 (another
company's) and 102420 (no records) mean it is not; any other code cannot tell and is a refusal.
What an assigned number's ``availability`` reads is not in any public sample (the fake
provider answers ``Assigned``): only ``Available`` is taken to mean "not ours".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, ClassVar, Final

import httpx

from carriers import xmltext
from carriers.base import SearchRequest, SearchResult
from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Ticket
from carriers.numbering import normalize, strip_plus_one
from config.carrier_settings import VoipInnovationsSettings
from knm.domain.number import NumberState, PhoneNumber

NAME = "knm_voip_innovations"

TNS: Final = "http://tempuri.org/"
SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
#: VoIP Innovations' "success" (the envelope's ``responseCode`` and a DID's ``statusCode``).
API_SUCCESS: Final = "100"
#: ``getDIDs`` children, all sent, in this order (absent ones as ``xsi:nil``).
GETDIDS_KEYS: Final = ("cnam", "lata", "npa", "nxx", "rateCenter", "state", "t38", "tier")

_STATUS_REASONS = {401: "unauthenticated", 403: "unauthorized", 404: "not_found"}


# ================================================================================ pure parts
def service_url(config: VoipInnovationsSettings) -> str:
    """The sandbox endpoint for every call when ``sandbox_provisioning`` is set."""
    return config.sandbox_url if config.sandbox_provisioning else config.base_url


def soap_headers(action: str) -> dict[str, str]:
    return {
        "SOAPAction": TNS + action,
        "Accept": "*/*",
        "Content-Type": "text/xml;charset=UTF-8",
    }


def sanitize_number(number: str) -> str:
    """``+14352154006`` -> ``4352154006``: every leading ``+`` and ``1`` goes."""
    return strip_plus_one(number)


def search_clause(prefix: str) -> dict[str, str] | None:
    """The ``getDIDs`` criterion for a normalized prefix.

    QUIRK (kept): after stripping every leading ``+``/``1``, only 3 characters (``npa``) or 6
    and more (``nxx`` = the first six, NPA and NXX together) have a clause; KAZOO crashes on
    the rest, so the search yields nothing (here: ``None``, and no request is sent).
    """
    digits = strip_plus_one(prefix)
    if len(digits) == 3:
        return {"npa": digits}
    if len(digits) >= 6:
        return {"nxx": digits[:6]}
    return None


def _el(name: str, value: str) -> str:
    return f"<tns:{name}>{xmltext.escape(value)}</tns:{name}>"


def envelope(action: str, body: str, login: str, secret: str) -> str:
    """KAZOO's SOAP 1.1 envelope; values are XML-escaped (KAZOO inserted them raw)."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        "<env:Envelope xmlns:xsd='http://www.w3.org/2001/XMLSchema'"
        " xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'"
        f" xmlns:tns='{TNS}'"
        f" xmlns:env='{SOAP_ENV}'>"
        "<env:Body>"
        f"<tns:{action}>{body}{_el('login', login)}{_el('secret', secret)}</tns:{action}>"
        "</env:Body>"
        "</env:Envelope>"
    )


def getdids_body(clause: dict[str, str]) -> str:
    return "".join(
        _el(key, clause[key]) if key in clause else f"<tns:{key} xsi:nil='true'/>"
        for key in GETDIDS_KEYS
    )


def assign_body(tns: list[str], endpoint_group: str) -> str:
    params = "".join(
        f"<tns:DIDParam>{_el('tn', tn)}{_el('epg', endpoint_group)}</tns:DIDParam>" for tn in tns
    )
    return f"<tns:didParams>{params}</tns:didParams>"


def release_body(tns: list[str]) -> str:
    params = "".join(f"<tns:DIDParam>{_el('tn', tn)}</tns:DIDParam>" for tn in tns)
    return f"<tns:didParams>{params}</tns:didParams>"


def query_body(did: str) -> str:
    return _el("did", did)


def decode(response: httpx.Response) -> ET.Element:
    """The answer's XML after the envelope check, else the reason KAZOO gives.

    A body that is not XML is judged by its status; an XML body is parsed whatever the status
    (KAZOO does the same); ``responseCode`` must be 100, else the refusal is ``responseMessage``.
    """
    status = response.status_code
    body = response.content.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not body.startswith(b"<?xml"):
        if status == 200:
            raise MalformedAnswerError(NAME, "empty_response: the answer is not XML", status)
        reason = _STATUS_REASONS.get(status, "server_error" if status >= 500 else "empty_response")
        raise ProviderRefusalError(NAME, reason, status)
    try:
        root = xmltext.parse(body)
    except xmltext.XmlError as exc:
        raise MalformedAnswerError(NAME, f"empty_response: {exc}", status) from None
    code = xmltext.text_anywhere(root, "responseCode")
    if code != API_SUCCESS:
        message = xmltext.text_anywhere(root, "responseMessage")
        raise ProviderRefusalError(NAME, message or f"responseCode {code}", status)
    return root


def _is_true(value: str | None) -> bool:
    """KAZOO's ``kz_term:is_true`` on a text: only ``true``."""
    return value == "true"


def locator_data(item: ET.Element) -> dict[str, Any] | None:
    """One ``DIDLocator`` as KAZOO's carrier data (absent texts left out), ``None`` without tn."""
    tn = xmltext.text_anywhere(item, "tn")
    if tn is None:
        return None
    data: dict[str, Any] = {"e164": normalize(tn)}
    for key, name in (("rate_center", "rateCenter"), ("state", "state")):
        value = xmltext.text_anywhere(item, name)
        if value is not None:
            data[key] = value
    data["cnam"] = _is_true(xmltext.text_anywhere(item, "outboundCNAM"))
    data["t38"] = _is_true(xmltext.text_anywhere(item, "t38"))
    return data


def parse_search(root: ET.Element, quantity: int) -> list[SearchResult]:
    """``//getDIDsResult/DIDLocators/DIDLocator``, the first ``quantity`` of them."""
    items = xmltext.find_path(root, "getDIDsResult", "DIDLocators", "DIDLocator")
    out: list[SearchResult] = []
    for item in items[: max(quantity, 0)]:
        data = locator_data(item)
        if data is not None:
            out.append(SearchResult(data["e164"], NAME, NumberState.DISCOVERY, data))
    return out


def single_did(root: ET.Element, action: str) -> dict[str, str | None]:
    """The one ``//<action>Result/DIDs/DID`` of an answer (KAZOO crashes on any other count)."""
    dids = xmltext.find_path(root, f"{action}Result", "DIDs", "DID")
    if len(dids) != 1:
        raise MalformedAnswerError(NAME, f"{action}: expected one DID in the answer, {len(dids)}")
    did = dids[0]
    return {
        name: xmltext.text_anywhere(did, name)
        for name in ("tn", "status", "statusCode", "availability")
    }


def _refusal(did: dict[str, str | None]) -> ProviderRefusalError:
    return ProviderRefusalError(NAME, did["status"] or f"statusCode {did['statusCode']}")


def check_assign(root: ET.Element) -> None:
    """``assignDID``'s DID must have ``statusCode`` 100.

    QUIRK (fixed): KAZOO drops the DID's ``status`` text and fails with a null reason; the
    refusal here carries it (e.g. "Number is already assigned to another company").
    """
    did = single_did(root, "assignDID")
    if did["statusCode"] != API_SUCCESS:
        raise _refusal(did)


def check_release(root: ET.Element) -> dict[str, Any]:
    """``releaseDID``'s DID as KAZOO reads it; code 100 or the ``status`` text as refusal."""
    did = single_did(root, "releaseDID")
    parsed = {
        "code": did["statusCode"],
        "msg": did["status"],
        "e164": normalize(did["tn"]) if did["tn"] else None,
    }
    if did["statusCode"] != API_SUCCESS:
        raise _refusal(did)
    return parsed


#: ``queryDID`` status codes: reserved or assigned to another company, no records.
NOT_OURS_CODES: Final = frozenset({"102230", "102235", "102420"})


def is_ours(root: ET.Element, tn: str) -> bool:
    """Whether a ``queryDID`` answer shows ``tn`` assigned (or reserved) to this account.

    Code 100 with ``availability`` other than ``Available``: ours; code 100 and ``Available``,
    or another company's number, or no record: not ours. Any other answer cannot tell, so it is
    a refusal (knm does not guess that an order or a release took effect).
    """
    did = single_did(root, "queryDID")
    if did["tn"] is not None and did["tn"] != tn:
        raise MalformedAnswerError(NAME, f"queryDID answered about another number ({did['tn']})")
    code = did["statusCode"]
    if code in NOT_OURS_CODES:
        return False
    if code != API_SUCCESS:
        raise _refusal(did)
    return (did["availability"] or "").lower() != "available"


# ================================================================================ the module
class VoipInnovationsCarrier(Integration):
    """VoIP Innovations DIDs: discovery by NPA or NPA-NXX; assign and release by number."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "voip_innovations"
    config_model: ClassVar[type[VoipInnovationsSettings]] = VoipInnovationsSettings
    gated_disconnect: ClassVar[bool] = True
    releases_upstream: ClassVar[bool] = True
    max_prefix_length: ClassVar[int] = 3
    config: VoipInnovationsSettings

    def _call(self, action: str, body: str, *, idempotent: bool) -> ET.Element:
        content = envelope(
            action,
            body,
            self.config.login.get_secret_value(),
            self.config.password.get_secret_value(),
        )
        response = self.http.call(
            "POST",
            service_url(self.config),
            idempotent=idempotent,
            content=content.encode("utf-8"),
            headers=soap_headers(action),
        )
        return decode(response)

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        clause = search_clause(request.prefix)
        if clause is None:
            return []
        root = self._call("getDIDs", getdids_body(clause), idempotent=True)
        return parse_search(root, request.quantity)

    def _order(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any]:
        tn = sanitize_number(pn.number)
        body = assign_body([tn], self.config.endpoint_group)
        check_assign(self._call("assignDID", body, idempotent=False))
        return dict(pn.carrier_data)  # KAZOO stores nothing new

    def _release(self, pn: PhoneNumber, ticket: Ticket) -> None:
        tn = sanitize_number(pn.number)
        check_release(self._call("releaseDID", release_body([tn]), idempotent=False))

    def _query(self, pn: PhoneNumber) -> bool:
        tn = sanitize_number(pn.number)
        return is_ours(self._call("queryDID", query_body(tn), idempotent=True), tn)

    def _owned(self, pn: PhoneNumber, ticket: Ticket) -> dict[str, Any] | None:
        return dict(pn.carrier_data) if self._query(pn) else None

    def _released(self, pn: PhoneNumber, ticket: Ticket) -> bool:
        return not self._query(pn)
