"""Durable outcomes of requests, so a redelivered task returns what the first run did.

A task records its result here, keyed by the request id and the part it ran (one part per
carrier queue), after the numbers are written and before the message is acknowledged. A rerun
finds the outcome and returns it without touching the numbers again.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from pymongo.collection import Collection

from knm.model import utcnow


class OutcomeStore:
    """``request_outcomes``: one document per (request, part), expired by a TTL index."""

    def __init__(self, collection: Collection[dict[str, Any]], ttl_s: int) -> None:
        self.collection = collection
        self.ttl = timedelta(seconds=ttl_s)

    @staticmethod
    def key(request_id: str, part: str) -> str:
        return f"{request_id}:{part}"

    @staticmethod
    def part_key(module: str | None, numbers: list[str]) -> str:
        """A share's name: its carrier module and a digest of the inputs it covers."""
        digest = hashlib.sha1("\n".join(numbers).encode(), usedforsecurity=False).hexdigest()
        return f"{module or '-'}:{digest[:16]}"

    def get(self, request_id: str, part: str) -> dict[str, Any] | None:
        doc = self.collection.find_one({"_id": self.key(request_id, part)})
        return dict(doc["result"]) if doc else None

    def get_record(self, request_id: str, part: str) -> dict[str, Any] | None:
        """The whole recorded outcome: result and events."""
        return self.collection.find_one({"_id": self.key(request_id, part)})

    def put(
        self,
        request_id: str,
        part: str,
        operation: str,
        result: dict[str, Any],
        numbers: list[str] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        now = utcnow()
        self.collection.replace_one(
            {"_id": self.key(request_id, part)},
            {
                "request_id": request_id,
                "part": part,
                "operation": operation,
                "numbers": list(numbers or []),
                "result": result,
                "events": list(events or []),
                "recorded": now,
                "expires_at": now + self.ttl,
            },
            upsert=True,
        )

    def for_request(self, request_id: str) -> list[dict[str, Any]]:
        """Every recorded part of a request."""
        return list(self.collection.find({"request_id": request_id}))

    def forget(self, request_id: str, part: str) -> None:
        """Drop a part's outcome so the request can run that part again (a dead letter's retry)."""
        self.collection.delete_one({"_id": self.key(request_id, part)})
