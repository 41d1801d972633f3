"""What one request costs the store, counted (pymongo command monitoring, ``getMore`` included),
never timed: a purchase served in one hop on its carrier's queue, and a routed local write.

Dispatch runs in process with a fake broker (what it publishes is not the point here), against
the test rig's MongoDB wire server and the carrier sandbox over HTTP.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from config.settings import Settings
from knm.domain.number import utcnow
from knm.domain.options import Options
from knm.services import dispatch
from knm.services.dispatch import Done
from knm.services.events import NumberEvent
from knm.services.facade import Knm
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.services.search import SearchQuery
from knm.store import read_once, share_reads
from knm.store.embedded import WireServerThread
from knm.store.numbers import Store
from tests.command_log import CommandLog

pytestmark = pytest.mark.integration

ACCOUNT = "c0" * 16
LOCAL = "+13125550191"
STRANGER = "d0" * 16
CHILD = "e0" * 16

#: A purchase in one hop, in this order: claim the request id; read the number's search result,
#: the number (not stored yet), the accounts and the system config in one query (on the search
#: cache, the largest of them; the operation reads none of them again); the ledger's intent and
#: outcome; the number; the request's outcome.
PURCHASE = [
    ("insert", "request_keys"),
    ("aggregate", "search_cache"),
    ("insert", "provisioning"),
    ("update", "provisioning"),
    ("insert", "numbers"),
    ("insert", "request_outcomes"),
]
#: The same through knm's queue: the router claims and reads to route; the carrier's worker
#: reads the claim, the recorded outcome and what the share reads in one query, then buys.
PURCHASE_VIA_KNM = [
    ("insert", "request_keys"),
    ("aggregate", "search_cache"),
    ("aggregate", "search_cache"),
    ("insert", "provisioning"),
    ("update", "provisioning"),
    ("insert", "numbers"),
    ("insert", "request_outcomes"),
]
#: A read: the number, its owner and reseller, the requester and the system config in one query.
GET = [("aggregate", "numbers")]
#: A routed write on the local carrier: no search result, no ledger.
LOCAL_WRITE = [
    ("insert", "request_keys"),
    ("aggregate", "numbers"),
    ("update", "numbers"),
    ("insert", "request_outcomes"),
]


class QuietBroker:
    def publish(self, task: str, kwargs: dict[str, Any], queue: str, **_: Any) -> None:
        raise AssertionError(f"nothing should be forwarded, not {task} to {queue}")

    def emit(self, events: Sequence[NumberEvent], reply_to: str | None) -> None:
        return None


class CarrierBroker(QuietBroker):
    """Runs the share a router forwards at once, as its carrier's worker would."""

    def __init__(self, knm: Knm) -> None:
        self.knm = knm
        self.decision: dispatch.Decision | None = None

    def publish(self, task: str, kwargs: dict[str, Any], queue: str, **options: Any) -> None:
        assert (task, queue) == (dispatch.CARRIER_RUN_TASK, "carrier.knm_telnyx")
        assert "then" not in kwargs
        self.decision = dispatch.run_carrier_share(
            self.knm,
            self,
            Operation(kwargs["operation"]),
            kwargs["payload"],
            kwargs["request_id"],
            kwargs["module"],
            previous=kwargs["previous"],
            then=[],
            transient_attempts=kwargs["transient_attempts"],
            task_id=options["task_id"],
        )


@pytest.fixture
def counted(
    mongo_url: str, db_name: str, sandbox_env: dict[str, str]
) -> Iterator[tuple[Knm, CommandLog]]:
    with _counted_on(mongo_url, db_name) as counted:
        yield counted


@contextlib.contextmanager
def _counted_on(url: str, db_name: str) -> Iterator[tuple[Knm, CommandLog]]:
    commands = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, tz_aware=True, event_listeners=[commands]
    )
    store = Store(client[db_name])
    store.ensure_indexes()
    knm = Knm(store, Settings(mongodb_url=url, mongodb_db=db_name))
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True, reseller=True)
    try:
        yield knm, commands
    finally:
        client.close()


def _route(knm: Knm, op: Operation, request: NumbersRequest, queue: str) -> dict[str, Any]:
    decision = dispatch.route_request(
        knm, QuietBroker(), op, request, task_id=f"cost-{uuid.uuid4().hex[:8]}", queue=queue
    )
    assert isinstance(decision, Done)
    result: dict[str, Any] = decision.result
    assert result["failed"] == {}, result
    return result


def _purchase(knm: Knm, commands: CommandLog) -> list[tuple[str, str]]:
    [found] = knm.search(
        SearchQuery(prefix="646", quantity=1, account_id=ACCOUNT, carriers=["knm_telnyx"])
    )
    commands.seen.clear()
    request = NumbersRequest(numbers=[found.number], account=ACCOUNT)
    result = _route(knm, Operation.ACTIVATE, request, "carrier.knm_telnyx")
    assert result["succeeded"][found.number]["pvt_state"] == "in_service"
    return commands.seen


def test_a_purchase_in_one_hop_costs_six_commands(counted: tuple[Knm, CommandLog]) -> None:
    assert _purchase(*counted) == PURCHASE


def test_the_embedded_engine_costs_the_same_commands_and_reads_no_collection_whole(
    sqlite_server: WireServerThread, db_name: str, sandbox_env: dict[str, str]
) -> None:
    """On the embedded store's own engine the joined reads pin their documents by ``_id``:
    the same commands as on MongoDB, and no collection read whole (the joined accounts, the
    numbers, the config) though the store holds many accounts."""
    with _counted_on(sqlite_server.url, db_name) as (knm, commands):
        for i in range(50):
            knm.create_account(f"{i:02d}" * 16, f"Other {i}")
        counters = sqlite_server.engine.counters
        counters.reset()
        assert _purchase(knm, commands) == PURCHASE
        assert _purchase_via_knm(knm, commands) == PURCHASE_VIA_KNM
        assert _local_write(knm, commands) == LOCAL_WRITE
        assert _get(knm, commands) == GET
        snapshot = counters.snapshot()
        assert snapshot.get("collection_loads", 0) == 0, snapshot
        assert snapshot.get("documents_decoded", 0) < 60, snapshot


def test_a_purchase_through_knm_costs_seven_commands(counted: tuple[Knm, CommandLog]) -> None:
    assert _purchase_via_knm(*counted) == PURCHASE_VIA_KNM


def _purchase_via_knm(knm: Knm, commands: CommandLog) -> list[tuple[str, str]]:
    [found] = knm.search(
        SearchQuery(prefix="646", quantity=1, account_id=ACCOUNT, carriers=["knm_telnyx"])
    )
    commands.seen.clear()
    broker = CarrierBroker(knm)
    request = NumbersRequest(numbers=[found.number], account=ACCOUNT)
    routed = dispatch.route_request(
        knm, broker, Operation.ACTIVATE, request, task_id="cost-2", queue="knm"
    )
    assert isinstance(routed, dispatch.Forwarded)
    assert isinstance(broker.decision, Done), broker.decision
    assert broker.decision.result["succeeded"][found.number]["pvt_state"] == "in_service"
    return commands.seen


def test_a_routed_local_write_costs_four_commands(counted: tuple[Knm, CommandLog]) -> None:
    assert _local_write(*counted) == LOCAL_WRITE


def _local_write(knm: Knm, commands: CommandLog) -> list[tuple[str, str]]:
    assert knm.numbers.create([LOCAL], Options(assign_to=ACCOUNT)).failed == {}
    commands.seen.clear()
    request = NumbersRequest(numbers=[LOCAL], public_fields={"notes": {"x": 1}})
    result = _route(knm, Operation.UPDATE, request, "knm")
    assert result["succeeded"][LOCAL]["notes"] == {"x": 1}
    return commands.seen


def test_the_owner_read_with_the_number_decides_who_may_write(
    counted: tuple[Knm, CommandLog],
) -> None:
    """The share read joins each number's owner account: the owner writes at the same cost;
    a stranger is refused from that one read, and nothing is written."""
    knm, commands = counted
    knm.create_account(STRANGER, "Stranger", allow_additions=True)
    assert knm.numbers.create([LOCAL], Options(assign_to=ACCOUNT)).failed == {}
    commands.seen.clear()
    by_owner = NumbersRequest(numbers=[LOCAL], auth_by=ACCOUNT, public_fields={"n": 1})
    assert _route(knm, Operation.UPDATE, by_owner, "knm")["succeeded"][LOCAL]["n"] == 1
    assert commands.seen == LOCAL_WRITE
    commands.seen.clear()
    by_stranger = NumbersRequest(numbers=[LOCAL], auth_by=STRANGER, public_fields={"n": 2})
    decision = dispatch.route_request(
        knm, QuietBroker(), Operation.UPDATE, by_stranger, task_id="cost-3", queue="knm"
    )
    assert isinstance(decision, Done)
    assert decision.result["succeeded"] == {}
    assert decision.result["failed"][LOCAL]["code"] == 403, decision.result
    assert commands.seen == [
        ("insert", "request_keys"),
        ("aggregate", "numbers"),
        ("insert", "request_outcomes"),
    ]
    assert knm.numbers.get([LOCAL]).succeeded[LOCAL].to_document()["n"] == 1


def test_a_share_read_hands_the_owner_and_its_reseller_to_the_operation(
    counted: tuple[Knm, CommandLog],
) -> None:
    """What the operation would read about accounts (the owner of a number, its reseller, the
    requester) and the system config come from the share read, with no command of their own."""
    knm, commands = counted
    knm.create_account(CHILD, "Child", parent=ACCOUNT)
    assert knm.numbers.create([LOCAL], Options(assign_to=CHILD)).failed == {}
    commands.seen.clear()
    with read_once.reuse_reads():
        read = share_reads.read_share(knm.store, [LOCAL], [STRANGER], discovery=False)
        assert commands.seen == [("aggregate", "numbers")]
        assert read.numbers[LOCAL]["pvt_assigned_to"] == CHILD
        accounts, _config = knm.store.find_accounts_and_config([CHILD, STRANGER])
    assert commands.seen == [("aggregate", "numbers")]
    assert {a.id for a in accounts} == {CHILD, ACCOUNT}  # STRANGER does not exist
    assert next(a for a in accounts if a.id == CHILD).reseller_id == ACCOUNT
    assert read.numbers[LOCAL] == knm.store.find_numbers([LOCAL])[LOCAL]  # nothing joined left


def test_a_share_read_takes_each_numbers_first_discovery_result(
    counted: tuple[Knm, CommandLog],
) -> None:
    """The first unexpired result of a number wins; a number whose first result is not a
    ``discovery`` one is left to the operation's own read (a later one might be)."""
    knm, _ = counted
    fresh, stale, odd = "+16465550001", "+16465550002", "+16465550003"
    later = utcnow() + timedelta(minutes=5)

    def result(number: str, state: str = "discovery") -> dict[str, Any]:
        return {"number": number, "state": state, "carrier_module": "knm_telnyx"}

    knm.store.search_cache.insert_many(
        [
            {
                "_id": "expired",
                "results": [result(stale), result(fresh, "in_service")],
                "discovery_numbers": [stale],
                "expires_at": utcnow() - timedelta(minutes=5),
            },
            {
                "_id": "current",
                "results": [result(odd, "in_service"), result(fresh), result(odd)],
                "discovery_numbers": [fresh, odd],
                "expires_at": later,
            },
        ]
    )
    read = share_reads.read_share(knm.store, [fresh, stale, odd], [], discovery=True)
    assert read.numbers == {}
    assert read.discovery == {fresh: result(fresh)}
    assert read.unsure == {odd}


def _get(knm: Knm, commands: CommandLog) -> list[tuple[str, str]]:
    """A read of a stored number by its owner (``knm.numbers.get``, the API's GET)."""
    commands.seen.clear()
    batch = dispatch.read_numbers(knm, NumbersRequest(numbers=[LOCAL], auth_by=ACCOUNT))
    assert batch.failed == {}
    assert batch.succeeded[LOCAL].to_document()["pvt_assigned_to"] == ACCOUNT
    return commands.seen


def test_a_read_costs_one_command(counted: tuple[Knm, CommandLog]) -> None:
    knm, commands = counted
    assert knm.numbers.create([LOCAL], Options(assign_to=ACCOUNT)).failed == {}
    assert _get(knm, commands) == GET
    stranger = NumbersRequest(numbers=[LOCAL], auth_by=STRANGER)
    knm.create_account(STRANGER, "Stranger", allow_additions=True)
    commands.seen.clear()
    refused = dispatch.read_numbers(knm, stranger)
    assert refused.succeeded == {}
    assert refused.failed[LOCAL].code == 403
    assert commands.seen == GET
