"""Idempotency and payload validation through a real worker.

A redelivered message is the same message executed again: same task id, same payload. Each
request's message is captured once (the exact Redis payload a plain client publishes) and
delivered several times: as published, flagged ``redelivered`` the way kombu's Redis transport
restores an unacknowledged message, after deleting the request's ``request_outcomes`` documents
(the worst crash window: numbers written, outcome not recorded), and as a duplicate publish with
the same ``task_id``. The result of each delivery is awaited on its own (the previous one is
forgotten first). Every delivery must return the first result and leave the documents exactly
as the first run left them (same ``pvt_rev``: one bump; same timestamps).

Invalid payloads fail at once (FAILURE, a message naming the problem, no retry) and the worker
keeps serving. A redelivered request reuses the outcomes its shares recorded (with the inputs
each covered), and a hard delete leaves a tombstone, so a rerun after a crash at any point
reports the deletion it already did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult
from pymongo import MongoClient

from config.settings import Settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig

pytestmark = pytest.mark.integration

BROKER_DB = 12  # Redis dbs: 5, 6, 7, 9, 12, 13 are the test_worker_* modules
ACCOUNT = "b2" * 16
N1, N2 = "+14155550181", "+14155550182"
M1 = "+12025550190"  # knm_managed inventory of ACCOUNT, discovered by a search
QUEUES = ["knm", "celery", "carrier.knm_local", "carrier.knm_managed"]

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def broker(redis_url: str) -> str:
    return rig.empty_redis_db(redis_url, BROKER_DB)


@pytest.fixture(scope="module")
def db_name(mongo_client: MongoClient[Doc]) -> Iterator[str]:
    """One database and one worker for the module; each test starts from a clean database."""
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def worker(
    broker: str, mongo_url: str, db_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rig.Worker]:
    tmp = tmp_path_factory.mktemp("idempotency")
    env = rig.worker_env(broker, mongo_url, db_name, tmp / "worker-data")
    with rig.run_worker(env, QUEUES, tmp / "logs", label="idem") as running:
        yield running


@pytest.fixture
def knm(mongo_url: str, db_name: str, worker: rig.Worker) -> Iterator[Knm]:
    """The module's database emptied, then ACCOUNT with M1 in its managed inventory, discovered."""
    app = Knm.open(Settings(mongodb_url=mongo_url, mongodb_db=db_name))
    try:
        for collection in app.store.db.list_collection_names():
            app.store.db[collection].delete_many({})
        app.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
        assert app.generate_numbers("managed", ACCOUNT, int(M1[1:]), 1)["errors"] == {}
        found = app.search(
            SearchQuery(prefix=M1[2:8], account_id=ACCOUNT, carriers=["knm_managed"])
        )
        assert [r.number for r in found] == [M1]
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(broker: str) -> Iterator[Celery]:
    app = rig.producer(broker)
    try:
        yield app
    finally:
        app.close()


def _docs(knm: Knm, numbers: list[str]) -> dict[str, Doc | None]:
    return {n: knm.store.numbers.find_one({"_id": n}) for n in numbers}


def _wait(client: Celery, task_id: str, what: object) -> Doc:
    result: AsyncResult[Any] = AsyncResult(task_id, app=client)
    rig.wait_result(result)
    assert result.state == "SUCCESS", (what, result.result, result.traceback)
    assert result.retries == 0
    value: Doc = result.result  # a snapshot: AsyncResult.result re-reads the backend
    return value


def _send(client: Celery, name: str, kwargs: Doc, task_id: str) -> Doc:
    """Send a request the way a service does and wait for its result."""
    client.send_task(name, kwargs=kwargs, queue="knm", task_id=task_id)
    return _wait(client, task_id, (name, kwargs))


class Message:
    """One captured task message, deliverable again and again (``redelivered`` like Redis)."""

    def __init__(self, client: Celery, broker: str, name: str, kwargs: Doc) -> None:
        self.client, self.broker, self.name = client, broker, name
        self.task_id = str(uuid.uuid4())
        self.payload = rig.capture_message(
            client, broker, name, kwargs=kwargs, task_id=self.task_id
        )

    def deliver(self, *, redelivered: bool) -> Doc:
        AsyncResult(self.task_id, app=self.client).forget()  # await this delivery's own result
        rig.push_message(self.broker, "knm", self.payload, redelivered=redelivered)
        return _wait(self.client, self.task_id, (self.name, "redelivered" if redelivered else ""))


def _redeliver(client: Celery, name: str, kwargs: Doc, task_id: str) -> Doc:
    """The same request sent again with the same task id (a duplicate publish)."""
    AsyncResult(task_id, app=client).forget()
    return _send(client, name, kwargs, task_id)


#: (task, kwargs): a lifecycle, each step a request of its own. M1 is a knm_managed number, so
#: activate and update are split over two carrier queues (a chain of two shares).
LIFECYCLE: list[tuple[str, Doc]] = [
    ("knm.numbers.create", {"numbers": [N1, N2], "account": ACCOUNT, "state": "available"}),
    ("knm.numbers.reserve", {"numbers": [N1], "account": ACCOUNT}),
    ("knm.numbers.activate", {"numbers": [N1, M1], "account": ACCOUNT}),
    ("knm.numbers.update", {"numbers": [N1, M1], "public_fields": {"notes": {"x": "KNM"}}}),
    ("knm.numbers.release", {"numbers": [M1]}),
]
#: Requests that hard-delete their numbers (release of a knm_local number, delete), each run
#: after the lifecycle's create; their documents are gone afterwards.
HARD_DELETES: list[tuple[str, Doc]] = [
    ("knm.numbers.release", {"numbers": [N1]}),
    ("knm.numbers.delete", {"numbers": [N2]}),
]
#: The state each step leaves; None: the document is gone.
EXPECTED_STATE: dict[str, dict[str, str | None]] = {
    "knm.numbers.create": {N1: "available", N2: "available"},
    "knm.numbers.reserve": {N1: "reserved"},
    "knm.numbers.activate": {N1: "in_service", M1: "in_service"},
    "knm.numbers.update": {N1: "in_service", M1: "in_service"},
    "knm.numbers.release": {M1: "available"},
}


def _check_step(
    knm: Knm, name: str, result: Doc, before: dict[str, Doc | None], task_id: str
) -> dict[str, Doc | None]:
    """The result and the documents after a step's first run; returns the documents."""
    expected = EXPECTED_STATE[name]
    after = _docs(knm, list(expected))
    assert result["failed"] == {}, (name, result)
    assert sorted(result["succeeded"]) == sorted(expected), (name, result)
    for number, state in expected.items():
        doc = after[number]
        if state is None:
            assert doc is None, (name, doc)
            continue
        assert doc is not None
        assert doc["pvt_state"] == state, (name, doc)
        assert doc["pvt_request_id"] == task_id, (name, doc)
        previous = before[number]
        assert doc["pvt_rev"] == (previous["pvt_rev"] if previous else 0) + 1, (name, doc)
    return after


def test_every_operation_redelivered_has_one_effect_and_the_same_result(
    knm: Knm, client: Celery, broker: str, worker: rig.Worker
) -> None:
    """Each step's message delivered four times: first run; broker redelivery; redelivery
    after a crash that lost the outcome record (numbers written, outcome not); duplicate
    publish with the same task id. One write (one pvt_rev bump), one result."""
    for name, kwargs in LIFECYCLE:
        message = Message(client, broker, name, kwargs)
        before = _docs(knm, list(EXPECTED_STATE[name]))
        first = message.deliver(redelivered=False)
        after = _check_step(knm, name, first, before, message.task_id)

        assert message.deliver(redelivered=True) == first, (name, "redelivery: another result")
        assert _docs(knm, list(after)) == after, (name, "the redelivery changed the documents")

        lost = knm.store.db["request_outcomes"].delete_many({"request_id": message.task_id})
        assert lost.deleted_count >= 1
        assert message.deliver(redelivered=True) == first, (name, "rerun: another result")
        assert _docs(knm, list(after)) == after, (name, "the rerun without outcome wrote again")

        assert _redeliver(client, name, kwargs, message.task_id) == first, (name, "duplicate")
        assert _docs(knm, list(after)) == after, (name, "the duplicate changed the documents")

    inventory = knm.store.db["numbers_managed"].find_one({"_id": M1})
    assert inventory is not None
    assert (inventory["pvt_state"], inventory["pvt_assigned_to"]) == ("available", None)


def test_a_late_redelivery_changes_nothing(
    knm: Knm, client: Celery, broker: str, worker: rig.Worker
) -> None:
    """Redis hands an unacknowledged message out again after the visibility timeout, by which
    time later requests may have changed the numbers: it must return what it did, not redo."""
    messages: list[tuple[Message, Doc]] = []
    for name, kwargs in LIFECYCLE:
        message = Message(client, broker, name, kwargs)
        messages.append((message, message.deliver(redelivered=False)))
    final = _docs(knm, [N1, N2, M1])
    for message, first in messages:
        again = message.deliver(redelivered=True)
        assert _docs(knm, [N1, N2, M1]) == final, (message.name, "a late redelivery wrote")
        assert again == first, (message.name, "a late redelivery returned another result")


@pytest.mark.parametrize(("name", "kwargs"), HARD_DELETES, ids=["release_local", "delete"])
def test_redelivered_hard_delete_returns_the_recorded_result(
    knm: Knm, client: Celery, worker: rig.Worker, name: str, kwargs: Doc
) -> None:
    _send(client, *LIFECYCLE[0], str(uuid.uuid4()))
    task_id = str(uuid.uuid4())
    first = _send(client, name, kwargs, task_id)
    assert list(first["succeeded"]) == kwargs["numbers"], first
    assert first["succeeded"][kwargs["numbers"][0]]["pvt_state"] == "deleted"
    assert knm.store.numbers.find_one({"_id": kwargs["numbers"][0]}) is None
    outcomes = knm.outcomes.for_request(task_id)
    assert [o["part"].split(":")[0] for o in outcomes] == ["knm_local"]
    assert [o["numbers"] for o in outcomes] == [kwargs["numbers"]]
    assert _redeliver(client, name, kwargs, task_id) == first


@pytest.mark.parametrize(("name", "kwargs"), HARD_DELETES, ids=["release_local", "delete"])
def test_hard_delete_rerun_after_the_write_but_before_the_outcome_was_recorded(
    knm: Knm, client: Celery, worker: rig.Worker, name: str, kwargs: Doc
) -> None:
    _send(client, *LIFECYCLE[0], str(uuid.uuid4()))
    task_id = str(uuid.uuid4())
    first = _send(client, name, kwargs, task_id)
    assert list(first["succeeded"]) == kwargs["numbers"], first
    knm.store.db["request_outcomes"].delete_many({"request_id": task_id})
    assert _redeliver(client, name, kwargs, task_id) == first


def test_carrier_run_twice_with_the_same_request_id(
    knm: Knm, client: Celery, worker: rig.Worker
) -> None:
    """``knm.carrier.run`` delivered twice (two messages, one request): one effect."""
    request_id = str(uuid.uuid4())
    payload = {"numbers": [N1], "account": ACCOUNT, "state": "available"}
    args = [None, "create", payload, request_id, "knm_local"]
    runs = []
    for _ in range(2):
        result = client.send_task("knm.carrier.run", args=args, queue="carrier.knm_local")
        rig.wait_result(result)
        assert result.state == "SUCCESS", (result.result, result.traceback)
        runs.append(result.result)
    assert runs[0] == runs[1]
    assert list(runs[0]["succeeded"]) == [N1]
    doc = knm.store.numbers.find_one({"_id": N1})
    assert doc is not None
    assert doc["pvt_rev"] == 1
    assert doc["pvt_request_id"] == request_id


# ================================================================================ invalid payloads
INVALID: list[tuple[str, tuple[Any, ...], Doc, str]] = [
    (
        "knm.numbers.create",
        (),
        {"numbers": [N1], "colour": "red"},
        "colour: Extra inputs are not permitted",
    ),
    (
        "knm.numbers.create",
        (),
        {"numbers": [N1], "dry_run": "maybe"},
        "dry_run: Input should be a valid boolean",
    ),
    ("knm.numbers.create", (), {"numbers": [14155550181]}, "numbers.0: Input should be a valid"),
    ("knm.numbers.create", (), {"numbers": [N1], "account": 42}, "account: Input should be"),
    ("knm.numbers.create", ([N1],), {}, "positional arguments are not accepted"),
    ("knm.numbers.update", ([N1],), {}, "positional arguments are not accepted"),
    ("knm.numbers.activate", (), {"numbers": [N1]}, "'account' is required by activate"),
    ("knm.numbers.reserve", (), {"numbers": [N1]}, "'account' is required by reserve"),
    ("knm.numbers.create", (), {"numbers": []}, "numbers: List should have at least 1 item"),
    (
        "knm.numbers.release",
        (),
        {"numbers": "+14155550181"},
        "numbers: Input should be a valid list",
    ),
    ("knm.numbers.delete", (), {}, "numbers: Field required"),
    ("knm.numbers.get", (), {"numbers": [" "]}, "numbers must not be empty strings"),
    ("knm.numbers.update", (), {"numbers": [N1]}, "'public_fields' is required by update"),
    (
        "knm.numbers.activate",
        (),
        {"numbers": [N1], "account": ACCOUNT, "state": "in_service"},
        "'state' is only valid for create",
    ),
    ("knm.search", (), {"prefix": "415", "quantity": "lots"}, "quantity"),
    ("knm.search", ("415",), {}, "positional arguments are not accepted"),
]


def test_invalid_payloads_fail_at_once_and_the_worker_keeps_working(
    knm: Knm, client: Celery, worker: rig.Worker
) -> None:
    sent = [
        (client.send_task(name, args=args, kwargs=kwargs, queue="knm"), name, kwargs, expected)
        for name, args, kwargs, expected in INVALID
    ]
    for result, name, kwargs, expected in sent:
        rig.wait_result(result)
        assert result.state == "FAILURE", (name, kwargs, result.result)
        assert type(result.result).__name__ == "InvalidRequestError", (name, result.result)
        assert expected in str(result.result), (name, kwargs, str(result.result))
        assert result.retries == 0, (name, kwargs)
        assert result.worker == worker.name
    assert "Retry in" not in worker.log()
    assert knm.store.numbers.count_documents({}) == 0
    assert knm.store.db["request_outcomes"].count_documents({}) == 0

    # the same worker serves a valid request afterwards (sent with no queue: the "celery" queue)
    ok = client.send_task(
        "knm.numbers.create", kwargs={"numbers": [N1], "account": ACCOUNT, "state": "available"}
    )
    rig.wait_result(ok)
    assert ok.state == "SUCCESS", (ok.result, ok.traceback)
    assert list(ok.result["succeeded"]) == [N1]
    assert worker.alive()
