"""Dead letters: requests (or one carrier's share of one) that used up their retries.

A share whose numbers still fail with a provider's transient error after every retry is
recorded here with its payload and result, so an operator can see it (``knm requests show``)
and send it again once the provider is back (``knm requests retry``); the retry has the same
request id, so numbers already done are not redone.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from knm.domain.number import utcnow


class DeadLetterStore:
    """``dead_letters``: one document per (request, share)."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self.collection = collection

    def put(
        self,
        request_id: str,
        part: str,
        operation: str,
        module: str | None,
        payload: dict[str, Any],
        result: dict[str, Any],
        reason: str,
        attempts: int,
    ) -> None:
        now = utcnow()
        self.collection.update_one(
            {"_id": f"{request_id}:{part}"},
            {
                "$set": {
                    "request_id": request_id,
                    "part": part,
                    "operation": operation,
                    "module": module,
                    "payload": payload,
                    "result": result,
                    "reason": reason,
                    "attempts": attempts,
                    "updated": now,
                },
                "$setOnInsert": {"created": now},
            },
            upsert=True,
        )

    def for_request(self, request_id: str) -> list[dict[str, Any]]:
        return list(self.collection.find({"request_id": request_id}).sort("_id", 1))

    def remove(self, request_id: str, part: str) -> None:
        self.collection.delete_one({"_id": f"{request_id}:{part}"})

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self.collection.find().sort("updated", -1).limit(limit))

    def count(self) -> int:
        return self.collection.count_documents({})
