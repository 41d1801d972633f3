"""Outcome events: one JSON message per number when a request's share is done.

Other services learn what happened without polling: every event goes to the ``knm.events``
topic exchange (routing key ``number.<operation>.<succeeded|failed>``, bind ``number.#`` for
all) and, when the request named one, to its ``reply_to`` queue. Delivery is at least once: a
redelivered task publishes its events again, so consumers deduplicate on
``(request_id, number)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from knm.domain.number import utcnow

EVENTS_EXCHANGE: Final[str] = "knm.events"
#: Version of the event payload (and of the message contract it belongs to).
EVENT_VERSION: Final = 1


class NumberEvent(BaseModel):
    """What happened to one number in one request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    request_id: str = Field(description="The request's idempotency key.")
    operation: str = Field(description="create, activate, reserve, release, delete or update.")
    number: str = Field(description="The number as normalized (E.164), or the input if invalid.")
    outcome: Literal["succeeded", "failed"]
    old_state: str | None = Field(description="State before the request (null: not stored).")
    new_state: str | None = Field(description="State after it (null: failed or deleted).")
    carrier: str | None = Field(description="The number's carrier module.")
    account: str | None = Field(default=None, description="Assigned account afterwards.")
    error: dict[str, Any] | None = Field(
        default=None, description="KAZOO's error object when the number failed."
    )
    at: datetime = Field(default_factory=utcnow)

    @property
    def routing_key(self) -> str:
        return f"number.{self.operation}.{self.outcome}"


def events_for(
    request_id: str,
    operation: str,
    result: Mapping[str, Any],
    before: Mapping[str, Mapping[str, Any]],
    carriers: Mapping[str, str | None] | None = None,
) -> list[NumberEvent]:
    """Events of one share from its JSON result and the documents read before it ran."""
    events: list[NumberEvent] = []
    for number, doc in sorted(result.get("succeeded", {}).items()):
        old = before.get(number, {})
        deleted = doc.get("pvt_state") == "deleted"
        events.append(
            NumberEvent(
                request_id=request_id,
                operation=operation,
                number=number,
                outcome="succeeded",
                old_state=old.get("pvt_state"),
                new_state=None if deleted else doc.get("pvt_state"),
                carrier=doc.get("pvt_carrier_module"),
                account=doc.get("pvt_assigned_to"),
            )
        )
    for number, error in sorted(result.get("failed", {}).items()):
        old = before.get(number, {})
        events.append(
            NumberEvent(
                request_id=request_id,
                operation=operation,
                number=number,
                outcome="failed",
                old_state=old.get("pvt_state"),
                new_state=old.get("pvt_state"),
                carrier=old.get("pvt_carrier_module") or (carriers or {}).get(number),
                account=old.get("pvt_assigned_to"),
                error=dict(error),
            )
        )
    return events
