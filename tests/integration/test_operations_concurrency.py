"""No lost updates, dry runs and the fixed round-trip cost of a batch.

* Two threads, each with its own client, update the same number many times: every successful
  update is in the final document and ``pvt_rev`` counts them exactly.
* A writer that changes the document between an operation's read and its write makes the operation
  re-run on the fresh document (deterministic: the read is wrapped).
* ``dry_run`` validates and reports the would-be state, writes nothing and calls no carrier.
* create / reserve / activate / release cost the same number of MongoDB commands for 10 and 50
  numbers (observed with pymongo command monitoring).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database

from carriers.base import SearchResult
from config.settings import Settings
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.operations import NumberManager
from knm.services.search import SearchQuery
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    CHILD,
    MASTER,
    NOT_FOUND,
    RESELLER,
    TEST_AVAILABLE_NUM,
    TEST_CREATE_NUM,
    TEST_IN_SERVICE_NUM,
    TEST_IN_SERVICE_WITH_HISTORY_NUM,
    TEST_RESERVED_NUM,
    UNRELATED,
    Doc,
    failures,
    fixture_doc,
    hidden,
    load_kazoo,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

S = NumberState
NUM = "+14155550180"


@pytest.fixture
def store(mongo_db: Database[Doc]) -> Store:
    s = Store(mongo_db)
    s.ensure_indexes()
    return s


@pytest.fixture
def nm(store: Store) -> NumberManager:
    return NumberManager(store, Settings())


@pytest.fixture
def client_factory(mongo_url: str) -> Iterator[Callable[..., pymongo.MongoClient[Doc]]]:
    """New clients to the test server, closed after the test."""
    clients: list[pymongo.MongoClient[Doc]] = []

    def make(**kwargs: Any) -> pymongo.MongoClient[Doc]:
        client: pymongo.MongoClient[Doc] = pymongo.MongoClient(mongo_url, tz_aware=True, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _only(batch: Any, number: str) -> PhoneNumber:
    assert failures(batch) == {}
    assert list(batch.succeeded) == [number]
    pn: PhoneNumber = batch.succeeded[number]
    return pn


def _merge(fields: Doc) -> Callable[[PhoneNumber], None]:
    """An update_doc setter."""
    return lambda pn: pn.update_public(fields)


def _racing_reads(
    monkeypatch: pytest.MonkeyPatch, store: Store, interfere: Callable[[int], None]
) -> list[int]:
    """Wrap ``store.find_numbers``: after read number ``i`` (1-based), call ``interfere(i)``."""
    original = store.find_numbers
    reads: list[int] = []

    def racing(numbers: Any) -> dict[str, Doc]:
        docs = original(numbers)
        reads.append(len(reads) + 1)
        interfere(reads[-1])
        return docs

    monkeypatch.setattr(store, "find_numbers", racing)
    return reads


# =========================================================================== two writers
def test_two_threads_lose_no_update(
    store: Store, mongo_db: Database[Doc], client_factory: Callable[..., Any]
) -> None:
    load_kazoo(mongo_db, accounts=False, extra=[number_doc(NUM, "in_service", assigned_to=CHILD)])
    iterations = 25
    successes: Counter[str] = Counter()
    errors: list[Any] = []
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        client = client_factory()
        manager = NumberManager(Store(client[mongo_db.name]), Settings(max_conflict_retries=200))
        barrier.wait()
        for i in range(iterations):
            key = f"{name}_{i}"
            batch = manager.update([NUM], [_merge({key: i})])
            if batch.failed:
                errors.append(failures(batch))
            else:
                successes[name] += 1

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert successes == {"a": iterations, "b": iterations}
    doc = stored(mongo_db, NUM)
    assert doc is not None
    for name in ("a", "b"):
        for i in range(iterations):
            assert doc[f"{name}_{i}"] == i
    assert doc["pvt_rev"] == 1 + 2 * iterations
    assert doc["pvt_assigned_to"] == CHILD


def test_concurrent_creates_of_one_number_create_it_once(
    store: Store, mongo_db: Database[Doc], client_factory: Callable[..., Any]
) -> None:
    load_kazoo(mongo_db)
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def worker(owner: str) -> None:
        client = client_factory()
        manager = NumberManager(Store(client[mongo_db.name]), Settings())
        barrier.wait()
        results[owner] = manager.create([TEST_CREATE_NUM], Options(assign_to=owner))

    threads = [threading.Thread(target=worker, args=(o,)) for o in (RESELLER, CHILD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    doc = stored(mongo_db, TEST_CREATE_NUM)
    assert doc is not None
    winner = doc["pvt_assigned_to"]
    loser = CHILD if winner == RESELLER else RESELLER
    assert doc["pvt_rev"] == 1
    assert list(results[winner].succeeded) == [TEST_CREATE_NUM]
    assert failures(results[loser]) == {
        TEST_CREATE_NUM: {
            "error": "number_exists",
            "code": 409,
            "message": f"number {TEST_CREATE_NUM} already exists",
            "cause": TEST_CREATE_NUM,
        }
    }


# =========================================================================== deterministic
def test_update_reruns_on_the_fresh_document(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)

    def interfere(read: int) -> None:
        if read == 1:
            mongo_db["numbers"].update_one(
                {"_id": TEST_IN_SERVICE_NUM},
                {"$set": {"theirs": "x", "pvt_used_by": "trunkstore"}, "$inc": {"pvt_rev": 1}},
            )

    reads = _racing_reads(monkeypatch, store, interfere)
    batch = nm.update([TEST_IN_SERVICE_NUM], [lambda pn: pn.update_public({"mine": 1})])
    pn = _only(batch, TEST_IN_SERVICE_NUM)
    assert reads == [1, 2]
    assert pn.public == {"theirs": "x", "mine": 1}
    assert pn.used_by == "trunkstore"
    assert pn.rev == 3
    doc = stored(mongo_db, TEST_IN_SERVICE_NUM)
    assert doc is not None
    assert (doc["theirs"], doc["mine"], doc["pvt_used_by"], doc["pvt_rev"]) == (
        "x",
        1,
        "trunkstore",
        3,
    )


def test_move_decides_again_on_the_fresh_document(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    """Read: available (anyone may buy it). Meanwhile RESELLER reserves it. Re-run: forbidden."""
    load_kazoo(mongo_db, [TEST_AVAILABLE_NUM])
    other = NumberManager(Store(mongo_db), Settings())

    def interfere(read: int) -> None:
        if read == 1:
            _only(
                other.reserve([TEST_AVAILABLE_NUM], Options(assign_to=RESELLER)), TEST_AVAILABLE_NUM
            )

    reads = _racing_reads(monkeypatch, store, interfere)
    batch = nm.move([TEST_AVAILABLE_NUM], UNRELATED, Options(auth_by=UNRELATED))
    assert reads == [1, 2]
    refusal = hidden(TEST_AVAILABLE_NUM, "reserved", UNRELATED, RESELLER)
    assert failures(batch) == {TEST_AVAILABLE_NUM: refusal}
    doc = stored(mongo_db, TEST_AVAILABLE_NUM)
    assert doc is not None
    assert (doc["pvt_state"], doc["pvt_assigned_to"], doc["pvt_rev"]) == ("reserved", RESELLER, 2)


def test_release_reruns_after_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    """A hard delete conditional on a stale revision removes nothing and is re-run."""
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)

    def interfere(read: int) -> None:
        if read == 1:
            mongo_db["numbers"].update_one(
                {"_id": TEST_IN_SERVICE_NUM}, {"$set": {"x": 1}, "$inc": {"pvt_rev": 1}}
            )

    reads = _racing_reads(monkeypatch, store, interfere)
    pn = _only(nm.release([TEST_IN_SERVICE_NUM]), TEST_IN_SERVICE_NUM)
    assert reads == [1, 2]
    assert pn.state == S.DELETED
    assert stored(mongo_db, TEST_IN_SERVICE_NUM) is None


def test_release_sees_a_concurrent_reservation(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    """Read: history [RESELLER] (would be deleted). Meanwhile CHILD reserves it: the re-run
    unwinds the fresh history [CHILD, RESELLER] back to RESELLER instead."""
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)
    other = NumberManager(Store(mongo_db), Settings())

    def interfere(read: int) -> None:
        if read == 1:
            batch = other.reserve([TEST_IN_SERVICE_NUM], Options(assign_to=CHILD))
            _only(batch, TEST_IN_SERVICE_NUM)

    reads = _racing_reads(monkeypatch, store, interfere)
    pn = _only(nm.release([TEST_IN_SERVICE_NUM]), TEST_IN_SERVICE_NUM)
    assert reads == [1, 2]
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, RESELLER, [RESELLER])
    doc = stored(mongo_db, TEST_IN_SERVICE_NUM)
    assert doc is not None
    assert (doc["pvt_state"], doc["pvt_assigned_to"], doc["pvt_rev"]) == ("reserved", RESELLER, 3)


def test_concurrent_delete_is_not_resurrected(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)

    def interfere(read: int) -> None:
        if read == 1:
            mongo_db["numbers"].delete_one({"_id": TEST_IN_SERVICE_NUM})

    reads = _racing_reads(monkeypatch, store, interfere)
    batch = nm.update([TEST_IN_SERVICE_NUM], [lambda pn: pn.update_public({"mine": 1})])
    assert reads == [1, 2]
    assert batch.succeeded == {}
    assert failures(batch) == {TEST_IN_SERVICE_NUM: NOT_FOUND}
    assert stored(mongo_db, TEST_IN_SERVICE_NUM) is None


def test_create_reruns_when_the_number_appears(
    monkeypatch: pytest.MonkeyPatch, store: Store, nm: NumberManager, mongo_db: Database[Doc]
) -> None:
    load_kazoo(mongo_db)

    def interfere(read: int) -> None:
        if read == 1:
            mongo_db["numbers"].insert_one(
                number_doc(TEST_CREATE_NUM, "in_service", assigned_to=CHILD)
            )

    reads = _racing_reads(monkeypatch, store, interfere)
    batch = nm.create([TEST_CREATE_NUM], Options(assign_to=RESELLER))
    assert reads == [1, 2]
    assert failures(batch)[TEST_CREATE_NUM]["error"] == "number_exists"
    doc = stored(mongo_db, TEST_CREATE_NUM)
    assert doc is not None
    assert (doc["pvt_assigned_to"], doc["pvt_rev"]) == (CHILD, 1)


def test_retries_are_bounded(
    monkeypatch: pytest.MonkeyPatch, store: Store, mongo_db: Database[Doc]
) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM, TEST_RESERVED_NUM], accounts=False)
    nm = NumberManager(store, Settings(max_conflict_retries=3))

    def interfere(read: int) -> None:
        mongo_db["numbers"].update_one({"_id": TEST_IN_SERVICE_NUM}, {"$inc": {"pvt_rev": 1}})

    reads = _racing_reads(monkeypatch, store, interfere)
    batch = nm.update(
        [TEST_IN_SERVICE_NUM, TEST_RESERVED_NUM], [lambda pn: pn.update_public({"mine": 1})]
    )
    assert reads == [1, 2, 3]
    assert failures(batch) == {
        TEST_IN_SERVICE_NUM: {
            "error": "unspecified_fault",
            "code": 500,
            "message": "database_error",
            "cause": "revision conflict",
        }
    }
    assert list(batch.succeeded) == [TEST_RESERVED_NUM]  # the other number was written once
    doc = stored(mongo_db, TEST_IN_SERVICE_NUM)
    assert doc is not None
    assert "mine" not in doc
    assert doc["pvt_rev"] == 4
    reserved = stored(mongo_db, TEST_RESERVED_NUM)
    assert reserved is not None
    assert (reserved["mine"], reserved["pvt_rev"]) == (1, 2)


# =========================================================================== dry run
def _unchanged(mongo_db: Database[Doc], *numbers: str) -> None:
    for number in numbers:
        assert stored(mongo_db, number) == fixture_doc(number)


def test_dry_run_create(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_AVAILABLE_NUM])
    options = Options(auth_by=MASTER, assign_to=CHILD, dry_run=True)
    batch = nm.create([TEST_AVAILABLE_NUM, TEST_CREATE_NUM], options)
    assert failures(batch) == {}
    for pn in batch.succeeded.values():
        assert (pn.state, pn.assigned_to, pn.dirty) == (S.IN_SERVICE, CHILD, True)
    _unchanged(mongo_db, TEST_AVAILABLE_NUM)
    assert stored(mongo_db, TEST_CREATE_NUM) is None


def test_dry_run_move(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_RESERVED_NUM])
    batch = nm.move([TEST_RESERVED_NUM], CHILD, Options(auth_by=CHILD, dry_run=True))
    pn = _only(batch, TEST_RESERVED_NUM)
    assert (pn.state, pn.assigned_to, pn.rev) == (S.IN_SERVICE, CHILD, 1)
    _unchanged(mongo_db, TEST_RESERVED_NUM)
    # refusals are still reported
    batch = nm.move([TEST_RESERVED_NUM], UNRELATED, Options(auth_by=UNRELATED, dry_run=True))
    refusal = hidden(TEST_RESERVED_NUM, "reserved", UNRELATED, RESELLER)
    assert failures(batch) == {TEST_RESERVED_NUM: refusal}


def test_dry_run_reserve(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM])
    batch = nm.reserve([TEST_IN_SERVICE_NUM], Options(assign_to=CHILD, dry_run=True))
    pn = _only(batch, TEST_IN_SERVICE_NUM)
    assert (pn.state, pn.assigned_to, pn.reserve_history) == (S.RESERVED, CHILD, [CHILD, RESELLER])
    _unchanged(mongo_db, TEST_IN_SERVICE_NUM)


def test_dry_run_release(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM, TEST_IN_SERVICE_WITH_HISTORY_NUM], accounts=False)
    batch = nm.release(
        [TEST_IN_SERVICE_NUM, TEST_IN_SERVICE_WITH_HISTORY_NUM], Options(dry_run=True)
    )
    assert failures(batch) == {}
    assert batch.succeeded[TEST_IN_SERVICE_NUM].state == S.DELETED
    back = batch.succeeded[TEST_IN_SERVICE_WITH_HISTORY_NUM]
    assert (back.state, back.assigned_to) == (S.RESERVED, MASTER)
    _unchanged(mongo_db, TEST_IN_SERVICE_NUM, TEST_IN_SERVICE_WITH_HISTORY_NUM)


def test_dry_run_delete(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)
    pn = _only(nm.delete([TEST_IN_SERVICE_NUM], Options(dry_run=True)), TEST_IN_SERVICE_NUM)
    assert pn.state == S.DELETED
    _unchanged(mongo_db, TEST_IN_SERVICE_NUM)


def test_dry_run_update(nm: NumberManager, mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db, [TEST_IN_SERVICE_NUM], accounts=False)
    batch = nm.update(
        [TEST_IN_SERVICE_NUM], [lambda pn: pn.update_public({"a": 1})], Options(dry_run=True)
    )
    assert _only(batch, TEST_IN_SERVICE_NUM).public == {"a": 1}
    _unchanged(mongo_db, TEST_IN_SERVICE_NUM)


def test_dry_run_calls_no_carrier(store: Store, mongo_db: Database[Doc]) -> None:
    """Activating a discovered managed number in a dry run does not touch the inventory."""
    load_kazoo(mongo_db)
    knm = Knm(store, Settings())
    knm.generate_numbers("managed", RESELLER, 14155550190, 1)
    number = "+14155550190"
    knm.search(SearchQuery(prefix="4155550", account_id=RESELLER, carriers=["knm_managed"]))
    before = mongo_db["numbers_managed"].find_one({"_id": number})
    batch = knm.numbers.move([number], CHILD, Options(dry_run=True))
    pn = _only(batch, number)
    assert (pn.state, pn.assigned_to) == (S.IN_SERVICE, CHILD)
    assert mongo_db["numbers_managed"].find_one({"_id": number}) == before
    assert stored(mongo_db, number) is None


# =========================================================================== command counts
class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_command_count_does_not_grow_with_the_batch(
    mongo_db: Database[Doc], client_factory: Callable[..., Any]
) -> None:
    load_kazoo(mongo_db)
    listener = _Commands()
    client = client_factory(event_listeners=[listener])
    store = Store(client[mongo_db.name])
    nm = NumberManager(store, Settings())
    counts: dict[str, dict[int, list[str]]] = {}

    def measure(name: str, size: int, run: Callable[[], Any], state: NumberState) -> None:
        listener.names.clear()
        batch = run()
        counts.setdefault(name, {})[size] = list(listener.names)
        assert failures(batch) == {}
        assert len(batch.succeeded) == size
        assert {pn.state for pn in batch.succeeded.values()} == {state}

    for size, base in ((10, 14155551000), (50, 14155552000)):
        numbers = [f"+{base + i}" for i in range(size)]
        create = Options(
            auth_by=MASTER, assign_to=RESELLER, module_name="knm_inventory", state=S.RESERVED
        )
        measure("create", size, partial(nm.create, numbers, create), S.RESERVED)
        measure(
            "reserve",
            size,
            partial(nm.reserve, numbers, Options(auth_by=RESELLER, assign_to=CHILD)),
            S.RESERVED,
        )
        measure(
            "activate",
            size,
            partial(nm.move, numbers, CHILD, Options(auth_by=CHILD)),
            S.IN_SERVICE,
        )
        measure(
            "release",
            size,
            partial(nm.release, numbers, Options(auth_by=RESELLER)),
            S.RESERVED,
        )
        measure(
            "release again",
            size,
            partial(nm.release, numbers, Options(auth_by=RESELLER)),
            S.AVAILABLE,
        )
        discovered = [f"+{base + 500 + i}" for i in range(size)]
        nm.search_cache.put(
            f"q-{size}", [SearchResult(n, "knm_local", S.DISCOVERY, {}) for n in discovered]
        )
        measure(
            "activate discovered",
            size,
            partial(nm.move, discovered, CHILD, Options(auth_by=RESELLER)),
            S.IN_SERVICE,
        )
    for name, by_size in counts.items():
        assert by_size[10] == by_size[50], (name, by_size)
        assert len(by_size[50]) <= 6, (name, by_size[50])
    assert stored(mongo_db, "+14155552049") is not None
    final = stored(mongo_db, "+14155552049")
    assert final is not None
    assert (final["pvt_state"], final["pvt_rev"]) == ("available", 5)
