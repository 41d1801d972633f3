"""Fake phonebook midware peer (knm_other): numbers and blocks search,
status, order.

The peer has no authentication (KAZOO sends none). It answers ``in_service`` for the numbers the
sandbox account owns, ``available`` for the ones it could sell, ``not_found`` otherwise.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from carriers.sandbox.core import (
    FakeProvider,
    Request,
    Response,
    SandboxState,
    available,
    orderable,
)

#: The gateway the sandbox's environment configures (``endpoints``, sent on every order).
SANDBOX_GATEWAY = "sip.sandbox.test"


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json")


def _prefix(raw: str) -> str:
    """The prefix as sent: ``%2B1415`` decodes to ``+1415``; a literal ``+`` (KAZOO's unencoded
    query) decodes to a space, accepted leniently as the ``+`` it was."""
    text = raw.strip(" ")
    if raw.startswith(" ") and not text.startswith("+"):
        return "+" + text
    return text


def _int(value: str | None, default: int) -> int:
    try:
        return max(0, int(value)) if value is not None else default
    except ValueError:
        return default


def _e164(number: str) -> str:
    """A number as the status call sends it (NPAN or E.164) in E.164."""
    if len(number) == 10 and number.isdigit():
        return "+1" + number
    return number


class FakeOther(FakeProvider):
    name: ClassVar[str] = "other"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__OTHER__BASE_URL": base_url,
            "KNM_CARRIERS__OTHER__DEFAULT_COUNTRY": "US",
            "KNM_CARRIERS__OTHER__ENDPOINTS": SANDBOX_GATEWAY,
        }

    def endpoint(self, req: Request) -> str:
        parts = req.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "numbers":
            return {"search": "search", "status": "status", "order": "order"}.get(
                parts[2], "unknown"
            )
        if len(parts) == 3 and parts[0] == "blocks" and parts[2] == "search":
            return "blocks"
        return "unknown"

    def malformed(self) -> Response:
        return Response(200, b'{"status": "success", "data": {"+1', "application/json")

    def handle(self, req: Request, state: SandboxState) -> Response:
        endpoint = self.endpoint(req)
        country = req.path.strip("/").split("/")[1] if endpoint != "unknown" else ""
        if endpoint != "unknown" and country != "US":
            return _json(200, {"status": "error", "message": f"no stock in {country}"})
        if endpoint == "search" and req.method == "GET":
            return self._search(req, state)
        if endpoint == "blocks" and req.method == "GET":
            return self._blocks(req, state)
        if endpoint == "status" and req.method == "POST":
            return self._status(req, state)
        if endpoint == "order" and req.method == "PUT":
            return self._order(req, state)
        return _json(404, {"status": "error", "message": "Not found"})

    def _search(self, req: Request, state: SandboxState) -> Response:
        prefix = _prefix(req.query.get("prefix", ""))
        limit = _int(req.query.get("limit"), 100)
        offset = _int(req.query.get("offset"), 0)
        if not prefix.startswith("+1"):
            return _json(200, {"status": "success", "data": {}})
        numbers = available(state, self.name, prefix[2:], state.stock_size)
        data = {
            "+1" + n: {"rate_center": "SANDBOX", "state": "ZZ", "npa": n[:3]}
            for n in numbers[offset : offset + limit]
        }
        return _json(200, {"status": "success", "data": data})

    def _blocks(self, req: Request, state: SandboxState) -> Response:
        prefix = _prefix(req.query.get("prefix", ""))
        size = min(max(_int(req.query.get("size"), 10), 1), 1000)
        offset = _int(req.query.get("offset"), 0)
        limit = _int(req.query.get("limit"), 0)
        digits = prefix.removeprefix("+1")
        if not prefix.startswith("+1") or len(digits) < 3 or not digits.isdigit():
            return _json(200, {"status": "success", "data": []})
        exchange = (digits + "555")[:6] if len(digits) < 6 else digits[:6]
        blocks: list[dict[str, Any]] = []
        for k in range(offset, offset + limit):
            first, last = k * size, k * size + size - 1
            if last > 9999:
                break
            start, end = f"+1{exchange}{first:04d}", f"+1{exchange}{last:04d}"
            if not start.startswith(prefix) or not orderable(start):
                continue
            blocks.append(
                {"start_number": start, "end_number": end, "size": size, "rate_center": "SANDBOX"}
            )
        return _json(200, {"status": "success", "data": blocks})

    def _status(self, req: Request, state: SandboxState) -> Response:
        try:
            numbers = json.loads(req.body)["data"]
            if not isinstance(numbers, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _json(400, {"status": "error", "message": "Invalid status request"})
        answer = []
        for number in numbers:
            e164 = _e164(str(number))
            if state.is_owned(self.name, e164):
                status = "in_service"
            elif orderable(e164):
                status = "available"
            else:
                status = "not_found"
            answer.append({"number": number, "status": status})
        return _json(200, {"status": "success", "data": answer})

    def _order(self, req: Request, state: SandboxState) -> Response:
        try:
            data = json.loads(req.body)["data"]
            numbers = [str(n) for n in data["numbers"]]
            gateways = list(data.get("gateways") or [])
        except (ValueError, KeyError, TypeError):
            return _json(400, {"status": "error", "message": "Invalid order"})
        out: dict[str, Any] = {}
        with state.lock:
            for number in numbers:
                if not orderable(number) or state.is_owned(self.name, number):
                    out[number] = {"status": "error", "message": f"{number} is not available"}
                    continue
                order_id = f"pb-{state.next_id():06d}"
                state.buy(self.name, number, {"order_id": order_id, "gateways": gateways})
                out[number] = {
                    "status": "success",
                    "opaque": {"order_id": order_id, "gateways": gateways},
                    "locality": {"city": "SANDBOX CITY", "state": "ZZ", "country": "US"},
                }
        return _json(200, {"status": "success", "data": out})
