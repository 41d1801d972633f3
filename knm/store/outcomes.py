"""Durable outcomes of requests, so a redelivered task returns what the first run did, and
whose request each request id is.

A task records its result here, keyed by the request id and the part it ran (one part per
carrier queue), after the numbers are written and before the message is acknowledged. A rerun
finds the outcome and returns it without touching the numbers again.

A request id belongs to the first request that used it (``RequestKeys``): its requester, its
operation, its options (``scope``) and its numbers. The same id sent by another requester, for
another operation or options, or for numbers that request did not have, is a conflict (409
``request_id_conflict``): it runs nothing and is answered nothing of the first request's.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from knm.domain.number import utcnow

#: ``RequestKeys.claim``'s ``known`` when the caller did not read the claim.
UNREAD: Any = object()


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
        scope: str | None = None,
    ) -> None:
        """Record a part's outcome: an insert (a part is recorded once: a rerun returns the
        record instead of running), a replace when one is there already (two deliveries of
        one share ran at once)."""
        now = utcnow()
        key = self.key(request_id, part)
        record: dict[str, Any] = {
            "request_id": request_id,
            "part": part,
            "scope": scope,
            "operation": operation,
            "numbers": list(numbers or []),
            "result": result,
            "events": list(events or []),
            "recorded": now,
            "expires_at": now + self.ttl,
        }
        try:
            self.collection.insert_one({"_id": key, **record})
        except DuplicateKeyError:
            self.collection.replace_one({"_id": key}, record, upsert=True)

    def for_request(self, request_id: str) -> list[dict[str, Any]]:
        """Every recorded part of a request."""
        return list(self.collection.find({"request_id": request_id}))

    def forget(self, request_id: str, part: str) -> None:
        """Drop a part's outcome so the request can run that part again (a dead letter's retry)."""
        self.collection.delete_one({"_id": self.key(request_id, part)})


def other_scope(records: list[dict[str, Any]], request_id: str, scope: str) -> str | None:
    """A conflict's cause when a recorded outcome of ``request_id`` is another request's."""
    for record in records:
        if record.get("scope") not in (None, scope):  # None: recorded before scopes were kept
            return f"request_id '{request_id}' belongs to another request"
    return None


class RequestKeys:
    """``request_keys``: which request each request id belongs to, expired by a TTL index.

    Claimed by the first request that uses an id, before it runs anything; kept as long as its
    outcomes (``KNM_REQUEST_OUTCOME_TTL_S``).
    """

    def __init__(self, collection: Collection[dict[str, Any]], ttl_s: int) -> None:
        self.collection = collection
        self.ttl = timedelta(seconds=ttl_s)

    def claim(
        self,
        request_id: str,
        *,
        scope: str,
        auth_by: str,
        operation: str,
        numbers: list[str],
        record: bool = True,
        new: bool = False,
        known: Any = UNREAD,
    ) -> str | None:
        """Claim ``request_id`` for this request; ``None`` when it is (or now is) this one's.

        Otherwise the cause of the conflict: another requester, operation, options, or numbers
        the first request did not have (a retry of some of its numbers is the same request).
        ``record=False`` (a dry run) only checks. ``new``: the id is most likely unused (a
        request arriving), so the claim is tried first (one command instead of two). ``known``:
        the claim document as the caller just read it (None: there is none), not read again.
        """
        return self.claim_fresh(
            request_id,
            scope=scope,
            auth_by=auth_by,
            operation=operation,
            numbers=numbers,
            record=record,
            new=new,
            known=known,
        )[0]

    def claim_fresh(
        self,
        request_id: str,
        *,
        scope: str,
        auth_by: str,
        operation: str,
        numbers: list[str],
        record: bool = True,
        new: bool = False,
        known: Any = UNREAD,
    ) -> tuple[str | None, bool]:
        """``claim``, and whether this call claimed the id first: then nothing can have been
        recorded under it yet, and the caller need not look for earlier outcomes."""
        if known is not UNREAD:
            doc = known
        elif new and record:
            doc = None
        else:
            doc = self.collection.find_one({"_id": request_id})
        if doc is None:
            if not record:
                return None, False
            now = utcnow()
            try:
                self.collection.insert_one(
                    {
                        "_id": request_id,
                        "scope": scope,
                        "auth_by": auth_by,
                        "operation": operation,
                        "numbers": list(dict.fromkeys(numbers)),
                        "claimed": now,
                        "expires_at": now + self.ttl,
                    }
                )
                return None, True
            except DuplicateKeyError:  # used before (or concurrently): compare with that one
                doc = self.collection.find_one({"_id": request_id})
                if doc is None:
                    return None, False
        return _conflict(doc, request_id, scope, auth_by, operation, numbers), False


def _conflict(
    doc: dict[str, Any],
    request_id: str,
    scope: str,
    auth_by: str,
    operation: str,
    numbers: list[str],
) -> str | None:
    owner = f"request_id '{request_id}' belongs to"
    if doc.get("auth_by") != auth_by:
        return f"{owner} another requester's request"
    if doc.get("operation") != operation:
        return f"{owner} a request to {doc.get('operation')}, not to {operation}"
    if doc.get("scope") != scope:
        return f"{owner} a request to {operation} with other options"
    claimed = set(doc.get("numbers") or [])
    if not set(numbers) <= claimed:
        return f"{owner} a request to {operation} other numbers"
    return None
