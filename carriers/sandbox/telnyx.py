"""Fake Telnyx origination v1 API: number_searches, number_orders, numbers/<number>."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import unquote

from carriers.numbering import US_TOLLFREE_NPAS
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


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json")


class FakeTelnyx(FakeProvider):
    name: ClassVar[str] = "telnyx"

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "KNM_CARRIERS__TELNYX__BASE_URL": f"{base_url}/origination/",
            "KNM_CARRIERS__TELNYX__USER": SANDBOX_USER,
            "KNM_CARRIERS__TELNYX__TOKEN": SANDBOX_SECRET,
        }

    def endpoint(self, req: Request) -> str:
        path = req.path.removeprefix("/origination/")
        if path == "number_searches":
            return "search"
        if path == "number_orders":
            return "order"
        if path.startswith("numbers/"):
            return "number"
        return "unknown"

    def handle(self, req: Request, state: SandboxState) -> Response:
        if req.header("x-api-user") != SANDBOX_USER or req.header("x-api-token") != SANDBOX_SECRET:
            return _json(401, {"message": "Authentication failed"})
        endpoint = self.endpoint(req)
        if endpoint == "search" and req.method == "POST":
            return self._search(req, state)
        if endpoint == "order" and req.method == "POST":
            return self._order(req, state)
        if endpoint == "number" and req.method == "GET":
            number = unquote(req.path.removeprefix("/origination/numbers/"))
            if not state.is_owned(self.name, number):
                return _json(404, {"message": "Number not found"})
            return _json(200, {"number_val_e164": number, "number_val": number[2:], "status": 4})
        return _json(404, {"message": "Not found"})

    def _search(self, req: Request, state: SandboxState) -> Response:
        try:
            body = json.loads(req.body)
            descriptor = body["search_descriptor"]
            limit = int(body.get("limit", 100))
        except (ValueError, KeyError, TypeError):
            return _json(400, {"message": "Invalid search"})
        if "country_iso" in descriptor:
            areas = [
                {
                    "area_code": f"{20 + i}",
                    "carrier_name": "Sandbox",
                    "country_iso": descriptor["country_iso"],
                    "monthly_recurring_cost": "1.00000",
                    "region_name": f"Region {i}",
                    "region_type": "city",
                    "upfront_cost": "1.00000",
                }
                for i in range(3)
            ]
            return _json(200, {"limit": limit, "result": [], "inexplicit_result": areas})
        prefix = descriptor.get("prefix") or descriptor.get("npa", "") + descriptor.get("nxx", "")
        if "prefix" in descriptor and prefix not in US_TOLLFREE_NPAS:
            prefix = ""
        numbers = available(state, self.name, prefix, state.stock_size)[:limit]
        result = [
            {
                "best_effort": False,
                "currency": None,
                "monthly_recurring_cost": "1.00000",
                "number": n,
                "number_e164": "+1" + n,
                "upfront_cost": "1.00000",
            }
            for n in numbers
        ]
        return _json(
            200,
            {"any_best_effort": False, "limit": limit, "result": result, "inexplicit_result": []},
        )

    def _order(self, req: Request, state: SandboxState) -> Response:
        try:
            numbers = list(json.loads(req.body)["requested_numbers"])
        except (ValueError, KeyError, TypeError):
            return _json(400, {"message": "Invalid order"})
        with state.lock:
            for number in numbers:
                if not orderable(number) or state.is_owned(self.name, number):
                    return _json(422, {"message": f"Number {number} is not available"})
            for number in numbers:
                state.buy(self.name, number)
            order_id = str(411389090580137691 + state.next_id())
        return _json(200, {"bulk_order_ids": [], "id": order_id})
