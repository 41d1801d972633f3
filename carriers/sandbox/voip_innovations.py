"""Fake VoIP Innovations SOAP APIService: getDIDs, assignDID, releaseDID, queryDID.

Both of the provider's endpoints are served (``/Services/APIService.asmx``, production, and
``/VOIP/Services/APIService.asmx``, its sandbox), so a test can see which one knm called.
Answers are shaped like the real ones (``<action>Response/<action>Result`` with
``responseCode``/``responseMessage`` and ``DIDs``/``DIDLocators``, default namespace
``http://tempuri.org/``); per-DID outcomes use VoIP Innovations' published status codes. A bad
login is answered with a non-100 ``responseCode`` inside a 200, as the envelope check expects.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import ClassVar

from carriers import xmltext
from carriers.sandbox.core import (
    SANDBOX_SECRET,
    SANDBOX_USER,
    FakeProvider,
    Request,
    Response,
    SandboxState,
    available,
    orderable,
)

#: The endpoint group the sandbox account may assign numbers to.
ENDPOINT_GROUP = "8674"
PATHS = ("/Services/APIService.asmx", "/VOIP/Services/APIService.asmx")
ENDPOINTS = {
    "getDIDs": "search",
    "assignDID": "order",
    "releaseDID": "release",
    "queryDID": "query",
}
CONTENT_TYPE = "text/xml; charset=utf-8"


def _xml(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), CONTENT_TYPE)


def _answer(action: str, code: str, message: str, dids: str = "", locators: str = "") -> Response:
    dids_el = f"<DIDs>{dids}</DIDs>" if dids else "<DIDs/>"
    locators_el = f"<DIDLocators>{locators}</DIDLocators>" if locators else "<DIDLocators/>"
    return _xml(
        200,
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f'<soap:Body><{action}Response xmlns="http://tempuri.org/"><{action}Result>'
        f"<responseCode>{code}</responseCode><responseMessage>{message}</responseMessage>"
        f"{dids_el}{locators_el}<DIDCounts/>"
        f"</{action}Result></{action}Response></soap:Body></soap:Envelope>",
    )


def _did(
    tn: str, code: str, status: str, availability: str = "", endpoint: str = "0", tier: str = ""
) -> str:
    def el(name: str, value: str) -> str:
        return f"<{name}>{xmltext.escape(value)}</{name}>" if value else f"<{name}/>"

    return (
        f"<DID>{el('tn', tn)}{el('availability', availability)}<rewrite/>"
        f"{el('status', status)}{el('statusCode', code)}{el('tier', tier)}<refId/>"
        f"{el('endpointId', endpoint)}<expireDate>1900-01-01T00:00:00</expireDate>"
        "<has411>false</has411><has911>false</has911><cnam>false</cnam>"
        "<cnamStorageActive>false</cnamStorageActive>"
        "<cnamStorageAvailability>false</cnamStorageAvailability><t38>false</t38></DID>"
    )


def _locator(tn: str, k: int) -> str:
    return (
        f"<DIDLocator><tn>{tn}</tn><rateCenter>SANDBOX</rateCenter><state>ZZ</state>"
        f"<tier>{2 + 2 * (k % 2)}</tier><lataId>660</lataId>"
        f"<outboundCNAM>true</outboundCNAM><t38>{'true' if k % 3 else 'false'}</t38></DIDLocator>"
    )


class FakeVoipInnovations(FakeProvider):
    name: ClassVar[str] = "voip_innovations"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__VOIP_INNOVATIONS__BASE_URL": f"{base_url}{PATHS[0]}",
            "KNM_CARRIERS__VOIP_INNOVATIONS__SANDBOX_URL": f"{base_url}{PATHS[1]}",
            "KNM_CARRIERS__VOIP_INNOVATIONS__LOGIN": SANDBOX_USER,
            "KNM_CARRIERS__VOIP_INNOVATIONS__PASSWORD": SANDBOX_SECRET,
            "KNM_CARRIERS__VOIP_INNOVATIONS__ENDPOINT_GROUP": ENDPOINT_GROUP,
        }

    @staticmethod
    def _action(req: Request) -> str:
        return (req.header("soapaction") or "").strip('"').removeprefix("http://tempuri.org/")

    def endpoint(self, req: Request) -> str:
        return ENDPOINTS.get(self._action(req), "unknown")

    def malformed(self) -> Response:
        return _xml(200, "<?xml version='1.0'?><soap:Envelope><soap:Body><assignDIDResp")

    def handle(self, req: Request, state: SandboxState) -> Response:
        if req.path not in PATHS or req.method != "POST":
            return _xml(404, "<html><body>Not Found</body></html>")
        action = self._action(req)
        try:
            root = xmltext.parse(req.body)
        except xmltext.XmlError:
            return _xml(400, "<html><body>Bad Request</body></html>")
        calls = xmltext.find_path(root, "Body", action)
        if action not in ENDPOINTS or len(calls) != 1:
            return _xml(400, "<html><body>Unknown SOAPAction</body></html>")
        call = calls[0]
        if xmltext.text(call, "login") != SANDBOX_USER or (
            xmltext.text(call, "secret") != SANDBOX_SECRET
        ):
            return _answer(action, "101", "Invalid login or secret")
        if action == "getDIDs":
            return self._search(call, state)
        if action == "queryDID":
            return self._query(xmltext.text(call, "did") or "", state)
        params = xmltext.path(call, "didParams", "DIDParam")
        if not params:
            return _answer(action, "300", "No DIDParam given")
        if action == "assignDID":
            return _answer(
                action, "100", "Success", "".join(self._assign(p, state) for p in params)
            )
        return _answer(action, "100", "Success", "".join(self._release(p, state) for p in params))

    def _search(self, call: ET.Element, state: SandboxState) -> Response:
        nxx = xmltext.text(call, "nxx")
        npa = xmltext.text(call, "npa")
        prefix = nxx if nxx else npa
        if not prefix:
            return _answer("getDIDs", "302490", "No search criteria defined")
        numbers = available(state, self.name, prefix, state.stock_size)
        return _answer(
            "getDIDs",
            "100",
            "Success",
            locators="".join(_locator(n, k) for k, n in enumerate(numbers)),
        )

    def _assign(self, param: ET.Element, state: SandboxState) -> str:
        tn = xmltext.text(param, "tn") or ""
        epg = xmltext.text(param, "epg") or ""
        with state.lock:
            if state.is_owned(self.name, "+1" + tn):
                return _did(tn, "104225", "Number is already assigned to you")
            if not orderable(tn):
                return _did(tn, "104420", "Could not find number")
            if epg != ENDPOINT_GROUP:
                return _did(
                    tn,
                    "104258",
                    "Bad Endpoint Group. This remote is not allowed to service this endpoint group",
                )
            state.buy(self.name, "+1" + tn, {"epg": epg})
        return _did(tn, "100", f"Assigned to endpoint '{epg}' rewritten as '{tn}' Tier 2", tier="2")

    def _release(self, param: ET.Element, state: SandboxState) -> str:
        tn = xmltext.text(param, "tn") or ""
        if state.release(self.name, "+1" + tn):
            return _did(tn, "100", "Number released")
        if not orderable(tn):
            return _did(tn, "106420", "Could not find number")
        return _did(tn, "106231", "Number currently available")

    def _query(self, tn: str, state: SandboxState) -> Response:
        owned = state.owned_by(self.name).get("+1" + tn)
        if owned is not None:
            did = _did(
                tn, "100", "Number currently assigned to you", "Assigned", owned.get("epg", "0")
            )
        elif orderable(tn):
            did = _did(tn, "100", "Number currently Available", "Available", tier="-99999")
        else:
            did = _did(tn, "102420", "No records found")
        return _answer("queryDID", "100", "Success", did)
