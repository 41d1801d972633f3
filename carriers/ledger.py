"""The provisioning ledger: what knm asked each provider to do with each number, and what came
of it.

One document per (carrier module, number) in the ``provisioning`` collection, ``_id``
``<module>:<number>``. Before an order or a release is sent, the intent is recorded with a lease
(``status: pending``); after it, the outcome (``done`` with the carrier data, or ``failed``).
Whoever finds a pending intent whose lease has expired (its worker died, or gave up after an
ambiguous failure) must ask the provider whether that attempt took effect before sending
anything again (``Ticket.reconcile``); a live lease held by someone else means the same number is
being provisioned right now, and ``begin`` waits for that outcome instead of ordering twice.
``refs`` keep what a provider returned mid-way (an order id to poll after a crash).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from knm.domain.number import utcnow

#: How many events each ledger document keeps (the newest).
EVENTS_KEPT = 20


class Action(StrEnum):
    ACQUIRE = "acquire"
    DISCONNECT = "disconnect"
    #: An upstream feature provider (``knm_telnyx_e911``, ...) sets or removes a number's feature.
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class LedgerStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Ticket:
    """The right to send one order or release for one number, held under a lease."""

    module: str
    number: str
    action: Action
    token: str
    request_id: str | None
    reconcile: bool = False
    refs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.module}:{self.number}"


@dataclass(frozen=True)
class Settled:
    """This request already did this action (a rerun): its recorded carrier data."""

    carrier_data: dict[str, Any]


class LeaseLostError(Exception):
    """Another attempt took the number over after this one's lease expired."""


class ProvisioningLedger:
    """Intent before the call, outcome after it, per number and carrier module."""

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        lease_s: float,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 0.2,
    ) -> None:
        self.collection = collection
        self.lease = timedelta(seconds=lease_s)
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s

    def get(self, module: str, number: str) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": f"{module}:{number}"})

    def begin(
        self, module: str, number: str, action: Action, request_id: str | None
    ) -> Ticket | Settled:
        """Take the number for ``action``, or return what this same request already settled.

        Waits while another attempt holds a live lease on the number. A ticket with
        ``reconcile`` set means an earlier attempt's outcome is unknown (or the number may
        already be ours): ask the provider before sending.
        """
        key = f"{module}:{number}"
        token = uuid.uuid4().hex
        first = True
        while True:
            now = self.clock()
            # a number's first provisioning (the usual case) costs one insert, no read
            doc = None if first else self.collection.find_one({"_id": key})
            first = False
            if doc is None:
                ticket = Ticket(module, number, action, token, request_id)
                try:
                    self.collection.insert_one(
                        {
                            "_id": key,
                            "module": module,
                            "number": number,
                            "rev": 1,
                            "created": now,
                            **self._claim_fields(ticket, now),
                            "events": [self._event(now, action, "intent", request_id)],
                        }
                    )
                except DuplicateKeyError:
                    continue
                return ticket
            status = doc.get("status")
            if status == LedgerStatus.PENDING and doc.get("lease_until", now) > now:
                self.sleep(self.poll_s)  # someone is provisioning this number right now
                continue
            if (
                status == LedgerStatus.DONE
                and doc.get("action") == action
                and request_id is not None
                and doc.get("request_id") == request_id
            ):
                return Settled(dict(doc.get("result") or {}))
            # reconcile: an attempt's outcome is unknown, or we may hold the number already
            reconcile = status == LedgerStatus.PENDING or (
                status == LedgerStatus.DONE and doc.get("action") == action
            )
            refs = dict(doc.get("refs") or {}) if status == LedgerStatus.PENDING else {}
            ticket = Ticket(module, number, action, token, request_id, reconcile, refs)
            claimed = self.collection.find_one_and_update(
                {"_id": key, "rev": doc.get("rev")},
                {
                    "$set": {**self._claim_fields(ticket, now), "refs": refs},
                    "$inc": {"rev": 1},
                    "$push": {
                        "events": {
                            "$each": [
                                self._event(
                                    now, action, "reconcile" if reconcile else "intent", request_id
                                )
                            ],
                            "$slice": -EVENTS_KEPT,
                        }
                    },
                },
                return_document=ReturnDocument.AFTER,
            )
            if claimed is not None:
                return ticket

    def note(self, ticket: Ticket, **refs: Any) -> None:
        """Remember what the provider returned mid-way (an order id), for a later reconcile."""
        ticket.refs.update(refs)
        self._update(ticket, {"$set": {"refs": ticket.refs, "lease_until": self._lease_end()}})

    def finish(self, ticket: Ticket, carrier_data: dict[str, Any], how: str = "done") -> None:
        """The action took effect; ``carrier_data`` is what the number keeps."""
        now = self.clock()
        self._update(
            ticket,
            {
                "$set": {"status": LedgerStatus.DONE.value, "result": carrier_data, "updated": now},
                "$unset": {"lease_until": ""},
                "$push": {"events": self._event_push(now, ticket, how)},
            },
        )

    def fail(self, ticket: Ticket, reason: str) -> None:
        """The provider refused: nothing happened upstream."""
        now = self.clock()
        self._update(
            ticket,
            {
                "$set": {"status": LedgerStatus.FAILED.value, "error": reason, "updated": now},
                "$unset": {"lease_until": ""},
                "$push": {"events": self._event_push(now, ticket, "failed", reason)},
            },
        )

    def abandon(self, ticket: Ticket, reason: str) -> None:
        """Outcome unknown (retries used up): the next attempt must reconcile first, at once."""
        now = self.clock()
        self._update(
            ticket,
            {
                "$set": {"lease_until": now, "error": reason, "updated": now},
                "$push": {"events": self._event_push(now, ticket, "unknown", reason)},
            },
        )

    # ---------------------------------------------------------------------------------- helpers
    def _lease_end(self) -> datetime:
        return self.clock() + self.lease

    def _claim_fields(self, ticket: Ticket, now: datetime) -> dict[str, Any]:
        return {
            "action": ticket.action.value,
            "status": LedgerStatus.PENDING.value,
            "token": ticket.token,
            "request_id": ticket.request_id,
            "lease_until": now + self.lease,
            "updated": now,
            "error": None,
        }

    def _update(self, ticket: Ticket, update: dict[str, Any]) -> None:
        update.setdefault("$inc", {})["rev"] = 1
        result = self.collection.update_one({"_id": ticket.key, "token": ticket.token}, update)
        if result.matched_count == 0:
            raise LeaseLostError(ticket.key)

    @staticmethod
    def _event(
        now: datetime, action: Action, what: str, request_id: str | None, reason: str | None = None
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "at": now,
            "action": action.value,
            "what": what,
            "request_id": request_id,
        }
        if reason is not None:
            event["reason"] = reason
        return event

    def _event_push(
        self, now: datetime, ticket: Ticket, what: str, reason: str | None = None
    ) -> dict[str, Any]:
        return {
            "$each": [self._event(now, ticket.action, what, ticket.request_id, reason)],
            "$slice": -EVENTS_KEPT,
        }
