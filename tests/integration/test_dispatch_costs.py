"""What one request costs the store, counted (pymongo command monitoring, ``getMore`` included),
never timed: a purchase served in one hop on its carrier's queue, and a routed local write.

Dispatch runs in process with a fake broker (what it publishes is not the point here), against
the test rig's MongoDB wire server and the carrier sandbox over HTTP.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from config.settings import Settings
from knm.domain.options import Options
from knm.services import dispatch
from knm.services.dispatch import Done
from knm.services.events import NumberEvent
from knm.services.facade import Knm
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.services.search import SearchQuery
from knm.store.numbers import Store

pytestmark = pytest.mark.integration

ACCOUNT = "c0" * 16
LOCAL = "+13125550191"

#: A purchase in one hop: claim the request id; read the number (not stored yet), its search
#: result and the accounts with the system config, once each (dispatch's reads are reused by
#: the operation); the ledger's intent and outcome; the number; the request's outcome.
PURCHASE = {
    ("insert", "request_keys"): 1,
    ("find", "numbers"): 1,
    ("find", "search_cache"): 1,
    ("aggregate", "accounts"): 1,
    ("insert", "provisioning"): 1,
    ("update", "provisioning"): 1,
    ("insert", "numbers"): 1,
    ("update", "request_outcomes"): 1,
}
#: A routed write on the local carrier: no search result, no ledger.
LOCAL_WRITE = {
    ("insert", "request_keys"): 1,
    ("find", "numbers"): 1,
    ("aggregate", "accounts"): 1,
    ("update", "numbers"): 1,
    ("update", "request_outcomes"): 1,
}


class Commands(monitoring.CommandListener):
    """(command, collection) of every command sent, in order."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.seen[(event.command_name, target if isinstance(target, str) else "")] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class QuietBroker:
    def publish(self, task: str, kwargs: dict[str, Any], queue: str, **_: Any) -> None:
        raise AssertionError(f"nothing should be forwarded, not {task} to {queue}")

    def emit(self, events: Sequence[NumberEvent], reply_to: str | None) -> None:
        return None


@pytest.fixture
def counted(
    mongo_url: str, db_name: str, sandbox_env: dict[str, str]
) -> Iterator[tuple[Knm, Commands]]:
    commands = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_url, tz_aware=True, event_listeners=[commands]
    )
    store = Store(client[db_name])
    store.ensure_indexes()
    knm = Knm(store, Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True, reseller=True)
    try:
        yield knm, commands
    finally:
        client.close()


def _route(knm: Knm, op: Operation, request: NumbersRequest, queue: str) -> dict[str, Any]:
    decision = dispatch.route_request(
        knm, QuietBroker(), op, request, task_id="cost-1", queue=queue
    )
    assert isinstance(decision, Done)
    result: dict[str, Any] = decision.result
    assert result["failed"] == {}, result
    return result


def test_a_purchase_in_one_hop_costs_eight_commands(counted: tuple[Knm, Commands]) -> None:
    knm, commands = counted
    [found] = knm.search(
        SearchQuery(prefix="646", quantity=1, account_id=ACCOUNT, carriers=["knm_telnyx"])
    )
    commands.seen.clear()
    request = NumbersRequest(numbers=[found.number], account=ACCOUNT)
    result = _route(knm, Operation.ACTIVATE, request, "carrier.knm_telnyx")
    assert result["succeeded"][found.number]["pvt_state"] == "in_service"
    assert dict(commands.seen) == PURCHASE
    assert sum(commands.seen.values()) == 8


def test_a_routed_local_write_costs_five_commands(counted: tuple[Knm, Commands]) -> None:
    knm, commands = counted
    assert knm.numbers.create([LOCAL], Options(assign_to=ACCOUNT)).failed == {}
    commands.seen.clear()
    request = NumbersRequest(numbers=[LOCAL], public_fields={"notes": {"x": 1}})
    _route(knm, Operation.UPDATE, request, "knm")
    assert dict(commands.seen) == LOCAL_WRITE
