"""Fake Telnyx origination v1 API: number_searches, number_orders, numbers/<number>, and the
feature endpoints: e911_addresses (create, list, delete), numbers/<number>/e911_settings and
``PUT numbers/<number>`` (CNAM).

What the features leave upstream is what a test reads back: the account's E911 addresses
(``GET e911_addresses``) and each owned number's settings (``GET numbers/<number>``:
``e911_enabled``, ``e911_address_id``, ``cnam_listing_details``, ``enable_caller_id_name``),
besides the request counters and the call log. An address still assigned to a number cannot be
deleted; an address without street, city, state or a 5-digit postal code is refused with
``status: failed`` (Telnyx's other way of saying no).
"""

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

#: ``SandboxState.orders`` key of the account's E911 addresses (id -> address).
ADDRESSES = "telnyx:e911_addresses"

#: ``SandboxState.orders`` key of every address ever created, deleted ones too (ids are never
#: reused).
ADDRESSES_CREATED = "telnyx:e911_addresses_created"

#: The first address id the fake hands out (the id of ``telnyx_create_e911.json``).
FIRST_ADDRESS_ID = 421564943280637078

#: The number settings the fake keeps (``GET numbers/<number>``), with their defaults.
NUMBER_SETTINGS: dict[str, Any] = {
    "e911_enabled": False,
    "e911_address_id": None,
    "cnam_listing_enabled": False,
    "cnam_listing_details": None,
    "enable_caller_id_name": False,
}

_ADDRESS_FIELDS = (
    "first_name",
    "last_name",
    "business_name",
    "line_1",
    "line_2",
    "city",
    "state",
    "postal_code",
)


def _json(status: int, value: Any) -> Response:
    return Response(status, json.dumps(value).encode(), "application/json")


def _body(req: Request) -> dict[str, Any] | None:
    try:
        doc = json.loads(req.body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


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
        if path == "e911_addresses":
            return "e911_list" if req.method == "GET" else "e911_create"
        if path.startswith("e911_addresses/"):
            return "e911_delete"
        if path.startswith("numbers/") and path.endswith("/e911_settings"):
            return "e911_settings"
        if path.startswith("numbers/"):
            return "number_update" if req.method == "PUT" else "number"
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
            return self._number(req, state, None)
        if endpoint == "number_update":
            return self._number(req, state, ("cnam_listing_details", "enable_caller_id_name"))
        if endpoint == "e911_settings" and req.method == "PUT":
            return self._number(req, state, ("e911_enabled", "e911_address_id"))
        if endpoint == "e911_create" and req.method == "POST":
            return self._create_address(req, state)
        if endpoint == "e911_list":
            return self._addresses(req, state)
        if endpoint == "e911_delete" and req.method == "DELETE":
            return self._delete_address(req, state)
        return _json(404, {"message": "Not found"})

    # ------------------------------------------------------------------ numbers' settings
    def _number(
        self, req: Request, state: SandboxState, changes: tuple[str, ...] | None
    ) -> Response:
        """Read a number's settings, or change the keys ``changes`` allows (PUT)."""
        path = req.path.removeprefix("/origination/numbers/").removesuffix("/e911_settings")
        number = unquote(path)
        with state.lock:
            info = state.owned_by(self.name).get(number)
            if info is None:
                return _json(404, {"message": "Number not found"})
            settings = {**NUMBER_SETTINGS, **info.get("settings", {})}
            if changes is not None:
                body = _body(req)
                if body is None:
                    return _json(400, {"message": "Invalid JSON body"})
                wanted = {k: body[k] for k in changes if k in body}
                address = wanted.get("e911_address_id")
                if address is not None and address not in state.orders.get(ADDRESSES, {}):
                    return _json(422, {"success": False, "message": "E911 address not found"})
                if "cnam_listing_details" in wanted:
                    wanted["cnam_listing_enabled"] = bool(wanted["cnam_listing_details"])
                settings.update(wanted)
                info["settings"] = settings
        return _json(
            200,
            {"number_val_e164": number, "number_val": number[2:], "status": 4, **settings},
        )

    # ------------------------------------------------------------------ E911 addresses
    def _create_address(self, req: Request, state: SandboxState) -> Response:
        body = _body(req)
        if body is None:
            return _json(400, {"message": "Invalid JSON body"})
        address = {key: str(body.get(key) or "") for key in _ADDRESS_FIELDS}
        missing = [k for k in ("line_1", "city", "state", "postal_code") if not address[k]]
        postal = address["postal_code"]
        if missing or not (len(postal) == 5 and postal.isdigit()):
            reasons = [{"field": k, "reason": "required"} for k in missing] or [
                {"field": "postal_code", "reason": "invalid"}
            ]
            return _json(
                200,
                {
                    "status": "failed",
                    "message": "Address could not be validated",
                    "reasons": reasons,
                },
            )
        with state.lock:
            created = state.orders.setdefault(ADDRESSES_CREATED, {})
            address_id = str(FIRST_ADDRESS_ID + len(created))
            stored = {"id": address_id, **address}
            created[address_id] = dict(stored)
            state.orders.setdefault(ADDRESSES, {})[address_id] = stored
        return _json(200, {**stored, "status": "success"})

    def _addresses(self, req: Request, state: SandboxState) -> Response:
        try:
            page = max(1, int(req.query.get("page", "1")))
            per_page = min(1000, max(1, int(req.query.get("per_page", "100"))))
        except ValueError:
            return _json(400, {"message": "Invalid page"})
        with state.lock:
            items = list(state.orders.get(ADDRESSES, {}).values())
        return _json(200, items[(page - 1) * per_page : page * per_page])

    def _delete_address(self, req: Request, state: SandboxState) -> Response:
        address_id = req.path.rsplit("/", 1)[-1]
        with state.lock:
            addresses = state.orders.setdefault(ADDRESSES, {})
            if address_id not in addresses:
                return _json(404, {"message": "E911 address not found", "success": False})
            for info in state.owned_by(self.name).values():
                if info.get("settings", {}).get("e911_address_id") == address_id:
                    return _json(422, {"message": "E911 address in use", "success": False})
            del addresses[address_id]
        return _json(200, {"message": None, "success": True})

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
