"""Carriers selling from an inventory collection: knm_managed and knm_inum.

Inventory documents are ``{_id, pvt_carrier_module, pvt_state, pvt_account_id,
pvt_assigned_to}``. A search offers an account's own stock, falling back to its reseller's; the
results are ``discovery`` numbers, which activation acquires (updating the inventory document).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from carriers.base import Carrier, CarrierKind, SearchRequest, SearchResult, prefix_range
from knm.domain import errors
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber, utcnow

DUPLICATE_KEY = 11000


class InventoryBackedCarrier(Carrier):
    """Shared search, acquire, disconnect and ``generate_numbers`` over one inventory collection."""

    collection: ClassVar[str]
    kind: ClassVar[CarrierKind] = CarrierKind.INVENTORY
    is_local: ClassVar[bool] = True
    max_prefix_length: ClassVar[int] = 15

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        prefix = request.prefix if request.prefix.startswith("+") else "+" + request.prefix
        owners = [o for o in (request.account_id, request.reseller_id) if o]
        for owner in dict.fromkeys(owners):
            docs = list(
                self.ctx.db[self.collection]
                .find(
                    {
                        "pvt_account_id": owner,
                        "pvt_state": NumberState.AVAILABLE.value,
                        "_id": prefix_range(prefix),
                    },
                    {"_id": 1},
                )
                .sort("_id", 1)
                .limit(request.quantity)
            )
            if docs:
                return [
                    SearchResult(doc["_id"], self.name, NumberState.DISCOVERY, {}) for doc in docs
                ]
        return []

    def acquire_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Mark the inventory documents with the numbers' new state and owner in one write."""
        return self._update_inventory(
            pns,
            lambda pn: {
                "pvt_state": pn.state.value if pn.state else None,
                "pvt_assigned_to": pn.assigned_to,
                "pvt_carrier_module": self.name,
                "pvt_modified": utcnow(),
            },
        )

    def disconnect_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Return the inventory documents to the pool."""
        return self._update_inventory(
            pns,
            lambda _pn: {
                "pvt_state": NumberState.AVAILABLE.value,
                "pvt_assigned_to": None,
                "pvt_modified": utcnow(),
            },
        )

    def acquire_number(self, pn: PhoneNumber) -> None:
        self._raise_first(self.acquire_numbers([pn]))

    def disconnect_number(self, pn: PhoneNumber) -> None:
        self._raise_first(self.disconnect_numbers([pn]))

    @staticmethod
    def _raise_first(failed: dict[str, KnmError]) -> None:
        for error in failed.values():
            raise error

    def _update_inventory(self, pns: Sequence[PhoneNumber], fields: Any) -> dict[str, KnmError]:
        if not pns:
            return {}
        ops = [UpdateOne({"_id": pn.number}, {"$set": fields(pn)}) for pn in pns]
        try:
            self.ctx.db[self.collection].bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            bad = {pns[e["index"]].number for e in exc.details.get("writeErrors", [])}
            return {n: errors.unspecified("database_error", n) for n in bad}
        except PyMongoError as exc:
            return {pn.number: errors.unspecified("database_error", str(exc)) for pn in pns}
        return {}

    def generate_numbers(self, account_id: str, start: int, quantity: int) -> dict[str, Any]:
        """Create ``quantity`` inventory numbers ``+start``, ``+start+1``, ... for an account."""
        numbers = [f"+{start + i}" for i in range(quantity)]
        return self.import_numbers(account_id, numbers)

    def import_numbers(self, account_id: str, numbers: Sequence[str]) -> dict[str, Any]:
        """KAZOO's ``{success: {num: {}}, errors: {num: {reason, message}}}`` report."""
        now = utcnow()
        docs = [
            {
                "_id": number,
                "pvt_carrier_module": self.name,
                "pvt_state": NumberState.AVAILABLE.value,
                "pvt_account_id": account_id,
                "pvt_assigned_to": None,
                "pvt_type": "number",
                "pvt_created": now,
                "pvt_modified": now,
            }
            for number in numbers
        ]
        failed: dict[str, dict[str, str]] = {}
        if docs:
            try:
                self.ctx.db[self.collection].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                for err in exc.details.get("writeErrors", []):
                    reason = "exists" if err.get("code") == DUPLICATE_KEY else "datastore_fault"
                    failed[docs[err["index"]]["_id"]] = {
                        "reason": reason,
                        "message": "error adding number to DB",
                    }
        return {
            "success": {n: {} for n in numbers if n not in failed},
            "errors": failed,
        }


class ManagedCarrier(InventoryBackedCarrier):
    """Numbers an operator generated for an account (``knm_managed``); billable."""

    name: ClassVar[str] = "knm_managed"
    collection: ClassVar[str] = "numbers_managed"
    billable: ClassVar[bool] = True


class InumCarrier(InventoryBackedCarrier):
    """iNum (global) numbers generated into the ``numbers_inum`` inventory."""

    name: ClassVar[str] = "knm_inum"
    collection: ClassVar[str] = "numbers_inum"
    billable: ClassVar[bool] = False
