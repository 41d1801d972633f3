"""Carriers whose stock is the numbers collection itself: knm_local, knm_inventory, knm_mdn,
knm_reserved and knm_reserved_reseller.

Searches are bounded by the prefix and page with the index on
``(pvt_state, pvt_carrier_module, _id)`` or ``(pvt_assigned_to, pvt_state, _id)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from carriers.base import Carrier, CarrierKind, SearchRequest, SearchResult, prefix_range
from knm.domain.number import NumberState

NUMBERS_COLLECTION = "numbers"


class LocalCarrier(Carrier):
    """Numbers owned by the system: available local numbers are offered to searching accounts.

    Its numbers carry the ``local`` marker and are deleted when released; it is the home module
    (released from any state, where port-ins are created).
    """

    name: ClassVar[str] = "knm_local"
    kind: ClassVar[CarrierKind] = CarrierKind.LOCAL
    is_local: ClassVar[bool] = True
    billable: ClassVar[bool] = False
    max_prefix_length: ClassVar[int] = 10
    marks_numbers_local: ClassVar[bool] = True
    deletes_on_release: ClassVar[bool] = True
    home: ClassVar[bool] = True

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        if request.account_id is None or not request.prefix.startswith("+"):
            return []
        query: dict[str, Any] = {
            "pvt_state": NumberState.AVAILABLE.value,
            "pvt_carrier_module": self.name,
            "_id": prefix_range(request.prefix),
        }
        cursor = (
            self.ctx.db[NUMBERS_COLLECTION]
            .find(query, {"pvt_carrier_data": 1})
            .sort("_id", 1)
            .skip(request.offset)
            .limit(request.quantity)
        )
        return [
            SearchResult(
                number=doc["_id"],
                carrier_module=self.name,
                state=NumberState.AVAILABLE,
                carrier_data=dict(doc.get("pvt_carrier_data") or {}),
            )
            for doc in cursor
        ]


class InventoryCarrier(LocalCarrier):
    """Admin-managed stock imported as ``available``: the full lifecycle, billed by services."""

    name: ClassVar[str] = "knm_inventory"
    is_local: ClassVar[bool] = False
    marks_numbers_local: ClassVar[bool] = False
    deletes_on_release: ClassVar[bool] = False
    home: ClassVar[bool] = False


class MdnCarrier(Carrier):
    """Mobile numbers: created by mobile provisioning, never searchable; local, deleted when
    released."""

    name: ClassVar[str] = "knm_mdn"
    kind: ClassVar[CarrierKind] = CarrierKind.LOCAL
    billable: ClassVar[bool] = False
    max_prefix_length: ClassVar[int] = 0
    marks_numbers_local: ClassVar[bool] = True
    mobile: ClassVar[bool] = True
    deletes_on_release: ClassVar[bool] = True


class ReservedCarrier(Carrier):
    """Numbers reserved for the searching account, so it can activate them."""

    name: ClassVar[str] = "knm_reserved"
    kind: ClassVar[CarrierKind] = CarrierKind.LOCAL
    is_local: ClassVar[bool] = True
    billable: ClassVar[bool] = False
    max_prefix_length: ClassVar[int] = 10

    def owner(self, request: SearchRequest) -> str | None:
        return request.account_id

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        owner = self.owner(request)
        if owner is None or request.account_id is None or not request.prefix.startswith("+"):
            return []
        query = {
            "pvt_assigned_to": owner,
            "pvt_state": NumberState.RESERVED.value,
            "_id": prefix_range(request.prefix),
        }
        cursor = (
            self.ctx.db[NUMBERS_COLLECTION]
            .find(query, {"pvt_carrier_module": 1, "pvt_carrier_data": 1})
            .sort("_id", 1)
            .skip(request.offset)
            .limit(request.quantity)
        )
        return [
            SearchResult(
                number=doc["_id"],
                carrier_module=str(doc.get("pvt_carrier_module") or self.name),
                state=NumberState.RESERVED,
                carrier_data=dict(doc.get("pvt_carrier_data") or {}),
            )
            for doc in cursor
        ]


class ReservedResellerCarrier(ReservedCarrier):
    """Numbers reserved in the reseller's name (paging fixed)."""

    name: ClassVar[str] = "knm_reserved_reseller"

    def owner(self, request: SearchRequest) -> str | None:
        return request.reseller_id
