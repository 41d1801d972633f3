"""The provisioning ledger on the MongoDB wire server: intent, outcome, leases, reconciliation."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pymongo.database import Database

from carriers.ledger import Action, LeaseLostError, ProvisioningLedger, Settled, Ticket

pytestmark = pytest.mark.integration

MODULE = "knm_test"
NUM = "+14155550100"


def _ledger(db: Database[dict[str, Any]], lease_s: float = 30) -> ProvisioningLedger:
    return ProvisioningLedger(db["provisioning"], lease_s, poll_s=0.02)


def _ticket(value: Ticket | Settled) -> Ticket:
    assert isinstance(value, Ticket)
    return value


def test_intent_is_recorded_before_the_call_and_the_outcome_after(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db)
    ticket = _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1"))
    assert ticket.reconcile is False
    doc = ledger.get(MODULE, NUM)
    assert doc is not None
    assert doc["status"] == "pending"
    assert doc["request_id"] == "req-1"
    assert doc["lease_until"] is not None
    ledger.finish(ticket, {"order_id": "42"})
    doc = ledger.get(MODULE, NUM)
    assert doc is not None
    assert doc["status"] == "done"
    assert doc["result"] == {"order_id": "42"}
    assert [e["what"] for e in doc["events"]] == ["intent", "done"]


def test_the_same_request_again_gets_the_recorded_outcome(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db)
    ledger.finish(_ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")), {"order_id": "42"})
    assert ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1") == Settled({"order_id": "42"})


def test_another_request_for_a_number_we_hold_must_ask_the_provider_first(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db)
    ledger.finish(_ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")), {})
    again = _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-2"))
    assert again.reconcile is True


def test_after_a_release_the_next_purchase_orders_without_asking(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db)
    ledger.finish(_ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")), {})
    ledger.finish(_ticket(ledger.begin(MODULE, NUM, Action.DISCONNECT, "req-2")), {})
    assert _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-3")).reconcile is False


def test_a_refusal_leaves_nothing_to_reconcile(mongo_db: Database[dict[str, Any]]) -> None:
    ledger = _ledger(mongo_db)
    ledger.fail(_ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")), "not available")
    assert _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")).reconcile is False


def test_an_expired_intent_is_taken_over_with_its_refs_and_must_be_reconciled(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db, lease_s=0.2)
    first = _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1"))
    ledger.note(first, order_id="ord-9")
    time.sleep(0.3)  # the first attempt's worker died: its lease runs out
    second = _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1"))
    assert second.reconcile is True
    assert second.refs == {"order_id": "ord-9"}
    with pytest.raises(LeaseLostError):
        ledger.finish(first, {})  # the dead attempt cannot overwrite the new one's outcome
    ledger.finish(second, {"order_id": "ord-9"})


def test_abandoned_outcome_is_reconciled_at_once(mongo_db: Database[dict[str, Any]]) -> None:
    slept: list[float] = []
    ledger = ProvisioningLedger(mongo_db["provisioning"], 30, poll_s=0.02, sleep=slept.append)
    ledger.abandon(_ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")), "timeout")
    assert _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1")).reconcile is True
    assert slept == []  # at once: nobody waits for the abandoned attempt's lease


def test_a_live_intent_makes_a_concurrent_attempt_wait_for_its_outcome(
    mongo_db: Database[dict[str, Any]],
) -> None:
    ledger = _ledger(mongo_db)
    holder = _ticket(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1"))
    outcome: list[Ticket | Settled] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(ledger.begin(MODULE, NUM, Action.ACQUIRE, "req-1"))
    )
    waiter.start()
    time.sleep(0.3)
    assert outcome == []  # still waiting: the number is being ordered right now
    ledger.finish(holder, {"order_id": "1"})
    waiter.join(timeout=5)
    assert outcome == [Settled({"order_id": "1"})]
