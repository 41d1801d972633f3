"""Fake Vitelity ``api.php``: listnpa, listnpanxx, listtollfree, getlocaldid, gettollfree,
removedid and listdids, every parameter in the query string of a POST, XML answers; and the
feature commands: lidb (outbound CNAM), cnamenable / cnamdisable (inbound CNAM), e911send,
e911delete and e911getinfo.

Like Vitelity, it answers HTTP 200 whatever happens and says ``<status>fail</status>`` with an
``<error>`` text when it refuses (bad credentials, a DID that is not available, ...). An account
without DIDs answers ``listdids`` with ``<error>none</error>`` (the plain API's code), and so
does ``e911getinfo`` for a DID without an E911 record.

The feature commands only work on the account's DIDs. What they leave is kept per DID (read
back with ``e911getinfo``; the LIDB name and the CNAM flag are in the call log and counters):
``e911send`` requires ``address``, ``city``, a two-letter ``state``, a 5-digit ``zip`` and a
``name``, so a dropped state (KAZOO's abbreviation quirk) is refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

from carriers.numbering import US_TOLLFREE_NPAS
from carriers.sandbox.core import (
    SANDBOX_SECRET,
    SANDBOX_USER,
    FakeProvider,
    Request,
    Response,
    SandboxState,
    available,
    nanp_stock,
    orderable,
)
from carriers.xmltext import escape

#: The routing every order must carry (``KNM_CARRIERS__VITELITY__ROUTESIP``).
SANDBOX_ROUTESIP = "198.51.100.10"

#: Toll-free NPAs the fake has stock in (``listtollfree`` interleaves them).
TOLLFREE_STOCK_NPAS = ("800", "888", "877")

_SEARCHES = {"listnpa", "listnpanxx"}
_FEATURE_COMMANDS = {"lidb", "cnamenable", "cnamdisable", "e911send", "e911delete", "e911getinfo"}
_ENDPOINTS = {
    "listnpa": "search",
    "listnpanxx": "search",
    "listtollfree": "search_tollfree",
    "getlocaldid": "order",
    "gettollfree": "order_tollfree",
    "removedid": "release",
    "listdids": "listdids",
    "lidb": "lidb",
    "cnamenable": "cnam_enable",
    "cnamdisable": "cnam_disable",
    "e911send": "e911_send",
    "e911delete": "e911_delete",
    "e911getinfo": "e911_info",
}

#: The ``e911send`` parameters an E911 record keeps (``e911getinfo`` answers them).
E911_FIELDS = ("name", "address", "unittype", "unitnumber", "city", "state", "zip")


def _xml(inner: str) -> Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<content>{inner}</content>\n'
    return Response(200, body.encode(), "text/xml")


def _ok(inner: str = "") -> Response:
    return _xml(f"<status>ok</status>{inner}")


def _fail(error: str) -> Response:
    return _xml(f"<status>fail</status><error>{escape(error)}</error>")


def tollfree_numbers(size: int) -> list[str]:
    """The fake's toll-free stock (10 digits each), NPAs interleaved, before any purchase."""
    columns = [nanp_stock(npa, size) for npa in TOLLFREE_STOCK_NPAS]
    out = [n for row in zip(*columns, strict=True) for n in row]
    return out[:size]


class FakeVitelity(FakeProvider):
    name: ClassVar[str] = "vitelity"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__VITELITY__BASE_URL": f"{base_url}/api.php",
            "KNM_CARRIERS__VITELITY__LOGIN": SANDBOX_USER,
            "KNM_CARRIERS__VITELITY__PASSWORD": SANDBOX_SECRET,
            "KNM_CARRIERS__VITELITY__ROUTESIP": SANDBOX_ROUTESIP,
        }

    def endpoint(self, req: Request) -> str:
        if req.path != "/api.php":
            return "unknown"
        return _ENDPOINTS.get(req.query.get("cmd", ""), "unknown")

    def malformed(self) -> Response:
        return Response(200, b"<content><status>ok</status><numbers><did>98755", "text/xml")

    def handle(self, req: Request, state: SandboxState) -> Response:
        if req.path != "/api.php":
            return Response(404, b"Not Found", "text/html")
        query = req.query
        if req.method != "POST" or req.body:
            return _fail("POST with every parameter in the query string")
        if query.get("login") != SANDBOX_USER or query.get("pass") != SANDBOX_SECRET:
            return _fail("invalid login")
        if query.get("xml") != "yes":
            return Response(200, b"x[[invalid[[x", "text/html")  # the plain API's answer
        cmd = query.get("cmd", "")
        if cmd in _SEARCHES:
            return self._search(
                query.get("npa" if cmd == "listnpa" else "npanxx", ""), query, state
            )
        if cmd == "listtollfree":
            return self._tollfree(query, state)
        if cmd in ("getlocaldid", "gettollfree"):
            return self._order(cmd, query, state)
        if cmd == "removedid":
            did = query.get("did", "")
            if not state.release(self.name, "+1" + did):
                return _fail(f"DID {did} is not on this account")
            return _ok("<response>success</response>")
        if cmd == "listdids":
            return self._listdids(state)
        if cmd in _FEATURE_COMMANDS:
            return self._feature(cmd, query, state)
        return _fail("invalid command")

    def _feature(self, cmd: str, query: dict[str, str], state: SandboxState) -> Response:
        """A feature command on one of the account's DIDs."""
        did = query.get("did", "")
        with state.lock:
            info = state.owned_by(self.name).get("+1" + did)
            if info is None:
                return _fail(f"DID {did} is not on this account")
            if cmd == "lidb":
                if not query.get("name"):
                    return _fail("missing name")
                info["lidb"] = query["name"]
                return _ok("<response>ok</response>")
            if cmd in ("cnamenable", "cnamdisable"):
                info["cnam"] = cmd == "cnamenable"
                return _ok("<response>ok</response>")
            if cmd == "e911send":
                return self._e911send(query, info)
            record = info.get("e911")
            if record is None:
                return _fail("none")
            if cmd == "e911delete":
                del info["e911"]
                return _ok("<response>ok</response>")
            fields = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in record.items())
            return _ok(f"<info>{fields}</info>")  # e911getinfo

    @staticmethod
    def _e911send(query: dict[str, str], info: dict[str, Any]) -> Response:
        record = {key: query[key] for key in E911_FIELDS if query.get(key)}
        for key in ("name", "address", "city"):
            if key not in record:
                return _fail(f"missing {key}")
        state_code = record.get("state", "")
        if len(state_code) != 2 or not state_code.isalpha() or not state_code.isupper():
            return _fail("invalid state")
        if not (len(record.get("zip", "")) == 5 and record["zip"].isdigit()):
            return _fail("invalid zip")
        info["e911"] = record
        return _ok("<response>ok</response>")

    def _search(self, prefix: str, query: dict[str, str], state: SandboxState) -> Response:
        if not prefix.isdigit() or prefix[:3] in US_TOLLFREE_NPAS:
            numbers: list[str] = []
        else:
            numbers = available(state, self.name, prefix, state.stock_size)
        if not numbers:
            return _ok("<numbers><response>no numbers available</response></numbers>")
        rates = ""
        if query.get("withrates") == "yes":
            rates = "<ratepermin>0.0100</ratepermin><ratepermonth>1.00</ratepermonth>"
        items = "".join(
            f"<did><number>{n}</number><ratecenter>SANDBOXVILLE</ratecenter>"
            f"<state>ZZ</state>{rates}</did>"
            for n in numbers
        )
        return _ok(f"<numbers>{items}</numbers>")

    def _tollfree(self, query: dict[str, str], state: SandboxState) -> Response:
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            return _fail("invalid limit")
        owned = state.owned_by(self.name)
        stock = [n for n in tollfree_numbers(state.stock_size) if "+1" + n not in owned]
        items = "".join(f"<did>{n}</did>" for n in stock[:limit])
        return _ok(f"<numbers>{items}</numbers>")

    def _order(self, cmd: str, query: dict[str, str], state: SandboxState) -> Response:
        did = query.get("did", "")
        routesip = query.get("routesip")
        if not routesip:
            return _fail("missing routesip")
        tollfree = did[:3] in US_TOLLFREE_NPAS
        if not orderable(did) or tollfree != (cmd == "gettollfree"):
            return _fail(f"DID {did} is not available")
        if not state.buy(self.name, "+1" + did, {"routesip": routesip}):
            return _fail(f"DID {did} is not available")
        return _ok("<response>success</response>")

    def _listdids(self, state: SandboxState) -> Response:
        with state.lock:
            owned = sorted(state.owned_by(self.name).items())
        if not owned:
            return _fail("none")
        items = "".join(
            f"<did><number>{number.removeprefix('+1')}</number>"
            f"<ratecenter>SANDBOXVILLE</ratecenter><state>ZZ</state>"
            f"<routesip>{escape(str(info.get('routesip', '')))}</routesip></did>"
            for number, info in owned
        )
        return _ok(f"<numbers>{items}</numbers>")
