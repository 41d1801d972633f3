"""The embedded store's engine (mongoeco on SQLite, adapted): same answers, flat cost per row.

Runs against the engine the product runs (``KnmSQLiteEngine`` on a SQLite file) over the wire
protocol with pymongo. Cost is checked by counting the engine's work (documents decoded, full
probe scans, SQLite VM steps), never by timing.
"""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import InsertOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from config.settings import Settings
from knm.services import jobs
from knm.services.facade import Knm
from knm.store.embedded import WireServerThread
from knm.store.numbers import Store

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
ACCOUNT = "e" * 32


@pytest.fixture
def client(sqlite_server: WireServerThread) -> Iterator[pymongo.MongoClient[Doc]]:
    mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(sqlite_server.url, tz_aware=True)
    try:
        yield mongo
    finally:
        mongo.close()


def _coll(client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest) -> Any:
    return client["engine_test"][request.node.name[:60]]


# ================================================================================ same answers
def test_id_lookups_with_conditions_match_exactly(
    client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    coll = _coll(client, request)
    coll.insert_many([{"_id": f"+1415{i:07d}", "pvt_rev": i % 3, "tags": ["x"]} for i in range(30)])
    # conditional update by _id: the revision decides
    assert (
        coll.update_one({"_id": "+14150000004", "pvt_rev": 0}, {"$set": {"a": 1}}).matched_count
        == 0
    )
    assert (
        coll.update_one({"_id": "+14150000004", "pvt_rev": 1}, {"$set": {"a": 1}}).matched_count
        == 1
    )
    assert coll.find_one({"_id": "+14150000004"})["a"] == 1
    missing = {"_id": "+14150000005", "pvt_rev": {"$exists": False}}
    assert coll.count_documents(missing) == 0
    ids = [f"+1415{i:07d}" for i in range(0, 40, 2)]
    found = sorted(d["_id"] for d in coll.find({"_id": {"$in": ids}, "tags": "x"}))
    assert found == ids[:15]
    ordered = [d["_id"] for d in coll.find({"_id": {"$in": ids}}).sort("_id", -1).limit(3)]
    assert ordered == ids[14:11:-1]
    assert coll.count_documents({"_id": {"$in": ids}, "pvt_rev": 2}) == 5
    assert coll.delete_many({"_id": {"$in": ids[:4]}, "pvt_rev": {"$ne": 1}}).deleted_count == 3


def test_in_lists_of_any_length(
    client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """No chunking needed: thousands of values on _id and on other fields."""
    coll = _coll(client, request)
    coll.insert_many([{"_id": f"n{i:05d}", "number": f"+1{i:010d}"} for i in range(3000)])
    ids = [f"n{i:05d}" for i in range(0, 6000, 2)]  # half of them exist
    assert coll.count_documents({"_id": {"$in": ids}}) == 1500
    numbers = [f"+1{i:010d}" for i in range(0, 3000, 3)]
    assert coll.count_documents({"number": {"$in": numbers}}) == 1000


def test_bulk_inserts_report_duplicates_by_index(
    client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    coll = _coll(client, request)
    coll.insert_one({"_id": "b"})
    with pytest.raises(BulkWriteError) as unordered:
        coll.bulk_write([InsertOne({"_id": i}) for i in ("a", "b", "c")], ordered=False)
    details = unordered.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    assert details["nInserted"] == 2
    with pytest.raises(BulkWriteError) as ordered:
        coll.bulk_write([InsertOne({"_id": i}) for i in ("d", "a", "e")], ordered=True)
    assert [e["index"] for e in ordered.value.details["writeErrors"]] == [1]
    assert sorted(d["_id"] for d in coll.find()) == ["a", "b", "c", "d"]
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": "c"})
    coll.insert_many([{"_id": 1}, {"_id": 2}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 1.0})  # numeric ids still compare by value


def test_cached_probe_answers_follow_later_writes(
    client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """A query planned while no document held an array still finds one written afterwards."""
    coll = _coll(client, request)
    coll.insert_many([{"_id": f"s{i}", "tag": "a", "n": i} for i in range(5)])
    assert coll.count_documents({"tag": "a"}) == 5  # planned: 'tag' is never an array
    assert coll.count_documents({"n": {"$gt": 2}}) == 2
    coll.insert_one({"_id": "arr", "tag": ["b", "a"], "n": [1, 10]})
    coll.update_one({"_id": "s0"}, {"$set": {"tag": ["a", "z"]}})
    assert sorted(d["_id"] for d in coll.find({"tag": "a"})) == [
        "arr",
        "s0",
        "s1",
        "s2",
        "s3",
        "s4",
    ]
    assert sorted(d["_id"] for d in coll.find({"n": {"$gt": 2}})) == ["arr", "s3", "s4"]


# ================================================================================ flat cost
def _import_csv(rows: int, start: int) -> bytes:
    lines = ["e164,opaque.batch"] + [f"415{start + i:07d},b" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.timeout(900)
def test_importing_20000_rows_costs_the_same_per_row_first_and_last(
    sqlite_server: WireServerThread, client: pymongo.MongoClient[Doc]
) -> None:
    """20,000 rows through the job path (create_job, then each chunk as the worker runs it) on
    the embedded SQLite store: the engine's work per row of the last chunks is that of the
    first ones. A store that scans the collection per insert or per lookup (as mongoeco alone
    does) grows by the size of the collection: tens of times more by the last chunk."""
    db_name = "engine_import"
    client.drop_database(db_name)
    store = Store(client[db_name])
    store.ensure_indexes()
    knm = Knm(store, Settings())
    knm.create_account(ACCOUNT, "Import", allow_additions=True, reseller=True)
    counters = sqlite_server.engine.counters

    counters.reset()
    job = jobs.create_job(
        knm, "import", io.BytesIO(_import_csv(20_000, 2_000_000)), account_id=ACCOUNT
    )
    created = counters.snapshot()
    assert (job.rows, job.chunks) == (20_000, 20)
    assert created["collection_loads"] == 0
    assert created["documents_decoded"] < 100  # storing rows decodes none of them

    per_chunk: list[dict[str, int]] = []
    for chunk in range(job.chunks):
        counters.reset()
        report = jobs.run_chunk(knm, job.id, chunk)
        assert report.succeeded == 1000
        per_chunk.append(counters.snapshot())

    done = jobs.JobStore(knm).get(job.id)
    assert done is not None
    assert (done.status, done.succeeded) == ("succeeded", 20_000)
    assert client[db_name]["numbers"].count_documents({}) == 20_000
    first = per_chunk[1]  # chunk 0 also pays for the first plans of each query
    for last in per_chunk[-3:]:
        assert last["collection_loads"] == 0
        assert last["documents_decoded"] <= first["documents_decoded"] * 1.2 + 50
        assert last["probe_full_scans"] <= first["probe_full_scans"]
        assert last["vm_steps"] <= first["vm_steps"] * 1.5 + 100_000, (first, last)
    client.drop_database(db_name)


def test_engine_counts_are_per_engine(tmp_path: Path) -> None:
    server = WireServerThread(tmp_path / "other.sqlite")
    server.start()
    try:
        assert server.engine.counters.snapshot()["documents_decoded"] == 0
    finally:
        server.stop()


def test_counts_past_fifty_thousand_documents(
    client: pymongo.MongoClient[Doc], request: pytest.FixtureRequest
) -> None:
    """mongoeco alone refuses an aggregation (count_documents is one) past 50,000 documents."""
    coll = _coll(client, request)
    coll.insert_many([{"_id": f"c{i:06d}", "job_id": "j"} for i in range(50_001)])
    assert coll.count_documents({}) == 50_001
    assert coll.count_documents({"job_id": "j"}) == 50_001


# ================================================================================ batched writes
@pytest.fixture(scope="module")
def reference_server() -> Iterator[WireServerThread]:
    """mongoeco's in-memory engine: the answers the adapted engine must give."""
    server = WireServerThread()
    server.start()
    try:
        yield server
    finally:
        server.stop()


_SEED: list[Doc] = [
    {"_id": "a", "status": "pending", "n": 1, "idx": "x"},
    {"_id": "b", "status": "done", "n": 2, "idx": "y"},
    {"_id": "c", "status": "pending", "nested": {"k": [1, 2]}, "idx": "z"},
    {"_id": "d", "status": "pending", "n": 4},
]

_UPDATE_COMMANDS: list[list[Doc]] = [
    # the lean shape: $set of top-level fields by _id, with or without more conditions
    [
        {"q": {"_id": "a", "status": "pending"}, "u": {"$set": {"status": "ok", "l": {"e": 1}}}},
        {"q": {"_id": "b", "status": "pending"}, "u": {"$set": {"status": "ok"}}},  # no match
        {"q": {"_id": "zz"}, "u": {"$set": {"status": "ok"}}},  # no document
        {"q": {"_id": "d"}, "u": {"$set": {"n": 4}}},  # matched, not modified
        {"q": {"_id": "c", "nested.k": 2}, "u": {"$set": {"error": None, "big": 2**40}}},
    ],
    # not the lean shape: each runs through mongoeco (upsert, an indexed field, $inc, _id)
    [
        {"q": {"_id": "a"}, "u": {"$set": {"x": 1}}},
        {"q": {"_id": "new"}, "u": {"$set": {"x": 2}}, "upsert": True},
    ],
    [{"q": {"_id": "b"}, "u": {"$set": {"idx": "moved"}}}],
    [{"q": {"_id": "b"}, "u": {"$inc": {"n": 5}}}],
    [
        {"q": {"_id": "d"}, "u": {"$set": {"y": 1}}},
        {"q": {"_id": "d"}, "u": {"$set": {"_id": "other"}}},  # refused: _id is immutable
        {"q": {"_id": "a"}, "u": {"$set": {"y": 2}}},  # ordered: never runs
    ],
]


def _run_updates(url: str, name: str) -> tuple[list[Doc], list[Doc], list[str]]:
    mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(url, tz_aware=True)
    try:
        db = mongo["engine_batched"]
        db.drop_collection(name)
        db[name].insert_many([dict(d) for d in _SEED])
        db[name].create_index("idx")
        replies = []
        for updates in _UPDATE_COMMANDS:
            reply = db.command("update", name, updates=updates, ordered=True)
            errors = [(e["index"], e["code"]) for e in reply.get("writeErrors", [])]
            replies.append({"n": reply["n"], "nModified": reply["nModified"], "errors": errors})
        docs = list(db[name].find().sort("_id", 1))
        by_index = [d["_id"] for d in db[name].find({"idx": "moved"})]
        return replies, docs, by_index
    finally:
        mongo.close()


def test_batched_updates_answer_as_mongoeco(
    sqlite_server: WireServerThread, reference_server: WireServerThread
) -> None:
    """The same update commands (the lean shape and others) give the same replies and leave
    the same documents on the adapted engine as on mongoeco's own."""
    counters = sqlite_server.engine.counters
    counters.reset()
    adapted = _run_updates(sqlite_server.url, "batched")
    expected = _run_updates(reference_server.url, "batched")
    assert adapted == expected
    assert adapted[0][0] == {"n": 3, "nModified": 2, "errors": []}
    assert adapted[0][4]["errors"] == [(1, 66)]
    assert adapted[2] == ["b"]  # the indexed field was written through mongoeco's index path
    snapshot = counters.snapshot()
    assert snapshot["lean_updates"] == len(_UPDATE_COMMANDS[0])
    # one transaction each, but for the lone $inc, which runs as mongoeco runs it
    assert snapshot["write_batches"] == len(_UPDATE_COMMANDS) - 1


def test_an_update_command_is_one_batch(
    sqlite_server: WireServerThread,
    client: pymongo.MongoClient[Doc],
    request: pytest.FixtureRequest,
) -> None:
    """A thousand statements (a chunk's row results) run as one batch on the lean path."""
    coll = _coll(client, request)
    coll.insert_many([{"_id": f"r{i:04d}", "status": "pending"} for i in range(1000)])
    counters = sqlite_server.engine.counters
    counters.reset()
    result = coll.bulk_write(
        [
            pymongo.UpdateOne({"_id": f"r{i:04d}", "status": "pending"}, {"$set": {"status": "ok"}})
            for i in range(1000)
        ],
        ordered=False,
    )
    assert (result.matched_count, result.modified_count) == (1000, 1000)
    snapshot = counters.snapshot()
    assert (snapshot["write_batches"], snapshot["lean_updates"]) == (1, 1000)
    assert snapshot["collection_loads"] == 0
    assert coll.count_documents({"status": "ok"}) == 1000


# ================================================================================ $in as a set
_IN_DOCS: list[Doc] = [
    {"_id": "s1", "f": "+14150000001"},
    {"_id": "s2", "f": ["x", "+14150000002"]},
    {"_id": "s3", "f": ["y", ["+14150000003"]]},  # nested array: $in does not look inside
    {"_id": "s4", "f": {"k": "+14150000004"}},
    {"_id": "s5", "f": 14150000005},
    {"_id": "s6"},
    {"_id": "s7", "f": None},
    {"_id": "s8", "f": "o'brien \u00e9\u00e8"},
    {"_id": "s9", "f": ["+14150000009", "+14150000001"]},
    {"_id": "s10", "f": datetime(2026, 1, 1, tzinfo=UTC)},
    {"_id": "s11", "f": "+14150000011", "g": "active"},
]


def _in_answers(url: str) -> list[list[str]]:
    mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(url, tz_aware=True)
    try:
        coll = mongo["engine_in"]["docs"]
        coll.drop()
        coll.insert_many([dict(d) for d in _IN_DOCS])
        coll.create_index("f")
        many = [f"+1415{i:07d}" for i in range(0, 2000)] + ["o'brien \u00e9\u00e8", "x"]
        queries: list[Doc] = [
            {"f": {"$in": many}},
            {"f": {"$in": many}, "g": {"$in": ["active", "a", "b", "c", "d", "e", "f", "g", "h"]}},
            {"f": {"$in": [*many[:20], 14150000005]}},  # a number among them: mongoeco's SQL
            {"f": {"$in": [*many[:20], None]}},  # null matches missing fields too
            {"f": {"$nin": many[:5]}},
            {"$or": [{"f": {"$in": many[:30]}}, {"_id": "s5"}]},
        ]
        return [sorted(d["_id"] for d in coll.find(q)) for q in queries]
    finally:
        mongo.close()


def test_long_in_lists_answer_as_mongoeco(
    sqlite_server: WireServerThread, reference_server: WireServerThread
) -> None:
    """``$in`` over many strings is tested against the set of values: the same documents as
    mongoeco's own engine, arrays, nested arrays, other types and missing fields included."""
    counters = sqlite_server.engine.counters
    counters.reset()
    adapted = _in_answers(sqlite_server.url)
    assert adapted == _in_answers(reference_server.url)
    assert adapted[0] == ["s1", "s11", "s2", "s8", "s9"]
    assert counters.snapshot()["in_sets"] >= 1


# ================================================================================ scoped indexes
def _document_indexes(path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'documents' "
            "AND sql IS NOT NULL"
        ).fetchall()
    return {str(name): str(sql) for name, sql in rows}


def test_collection_indexes_cover_only_their_collection(tmp_path: Path) -> None:
    """Each collection's index is partial (its own documents only), also for a store whose
    indexes were built whole before: they are rebuilt after the engine connects, while it
    answers."""
    path = tmp_path / "scoped.sqlite"
    server = WireServerThread(path)
    server.start()
    try:
        mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(server.url)
        Store(mongo["knm"]).ensure_indexes()
        mongo["knm"]["numbers"].insert_one({"_id": "+14155550000", "pvt_state": "in_service"})
        mongo.close()
    finally:
        server.stop()
    indexes = _document_indexes(path)
    assert len(indexes) >= 10
    for sql in indexes.values():
        assert re.search(r"\) WHERE db_name = 'knm' AND coll_name = '\w+'$", sql), sql
    with contextlib.closing(sqlite3.connect(path)) as db:  # as an older knm left them: whole
        for name, sql in indexes.items():
            db.execute(f'DROP INDEX "{name}"')
            db.execute(sql[: sql.rindex(" WHERE ")])
        db.commit()
    assert all(" WHERE " not in sql for sql in _document_indexes(path).values())

    server = WireServerThread(path)
    server.start()
    try:
        mongo = pymongo.MongoClient(server.url)
        numbers = mongo["knm"]["numbers"]
        assert [d["_id"] for d in numbers.find({"pvt_state": "in_service"})] == ["+14155550000"]
        assert server.engine.knm_indexes_scoped.wait(120)  # rebuilt by a thread, one by one
        assert [d["_id"] for d in numbers.find({"pvt_state": "in_service"})] == ["+14155550000"]
        mongo.close()
    finally:
        server.stop()
    assert _document_indexes(path) == indexes


# ================================================================================ index ranges
_BASE = datetime(2026, 1, 1, tzinfo=UTC)
_RANGE_QUERIES: list[tuple[Doc, list[tuple[str, int]]]] = [
    ({"pvt_state": "aging", "pvt_modified": {"$lt": _BASE + timedelta(days=20)}}, []),
    (
        {"pvt_state": "aging", "pvt_modified": {"$lte": _BASE + timedelta(days=20)}},
        [("pvt_state", 1), ("pvt_modified", 1)],
    ),
    ({"pvt_state": "aging", "pvt_modified": {"$gte": _BASE}}, [("pvt_modified", -1)]),
    ({"pvt_state": "released"}, []),
    ({"pvt_state": "aging", "x": 1}, [("pvt_modified", 1)]),
]
# Sorts are on unique values: MongoDB leaves the order of ties open.


def _range_answers(url: str, extra: list[Doc]) -> list[list[str]]:
    mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(url, tz_aware=True)
    try:
        coll = mongo["engine_ranges"]["numbers"]
        coll.drop()
        coll.create_index([("pvt_state", 1), ("pvt_modified", 1)], name="state_modified")
        states = ("aging", "released", "in_service")
        coll.insert_many(
            [
                {
                    "_id": f"+1{i:010d}",
                    "pvt_state": states[i % 3],
                    "pvt_modified": _BASE + timedelta(days=i % 40, seconds=i),
                    "x": i % 2,
                }
                for i in range(300)
            ]
            + [dict(d) for d in extra]
        )
        return [
            [d["_id"] for d in coll.find(q, {"_id": 1}, sort=sort or None, limit=50)]
            if sort
            else sorted(d["_id"] for d in coll.find(q, {"_id": 1}))
            for q, sort in _RANGE_QUERIES
        ]
    finally:
        mongo.close()


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            {"_id": "arr", "pvt_state": ["aging", "x"], "pvt_modified": _BASE - timedelta(hours=1)}
        ],  # an array
        [{"_id": "str", "pvt_state": "aging", "pvt_modified": "2026-01-02"}],  # not a date
        [{"_id": "none", "pvt_state": "aging", "pvt_modified": None}],
        [{"_id": "gone", "pvt_state": "aging"}],  # no pvt_modified
    ],
    ids=["dates", "array-state", "string-modified", "null-modified", "missing-modified"],
)
def test_index_ranges_answer_as_mongoeco(
    sqlite_server: WireServerThread, reference_server: WireServerThread, extra: list[Doc]
) -> None:
    """A filter and sort on a leading index field read the index range: the same documents,
    in the same order, as mongoeco's own engine, whatever else the collection holds."""
    counters = sqlite_server.engine.counters
    counters.reset()
    assert _range_answers(sqlite_server.url, extra) == _range_answers(reference_server.url, extra)
    if not extra:
        assert counters.snapshot()["index_ranges"] >= 3


def test_a_sweep_batch_reads_its_range_not_the_collection(
    sqlite_server: WireServerThread,
    client: pymongo.MongoClient[Doc],
    request: pytest.FixtureRequest,
) -> None:
    """The aging sweep's find costs the same among 200 or 20,000 documents not due."""
    coll = _coll(client, request)
    coll.create_index([("pvt_state", 1), ("pvt_modified", 1)], name="state_modified")
    due = [
        {"_id": f"d{i:05d}", "pvt_state": "aging", "pvt_modified": _BASE + timedelta(seconds=i)}
        for i in range(200)
    ]
    coll.insert_many(due)
    query = {"pvt_state": "aging", "pvt_modified": {"$lt": _BASE + timedelta(days=1)}}
    counters = sqlite_server.engine.counters

    def batch_cost() -> int:
        list(coll.find(query).sort([("pvt_state", 1), ("pvt_modified", 1)]).limit(101))
        counters.reset()
        found = coll.find(query, {"_id": 1}).sort([("pvt_state", 1), ("pvt_modified", 1)])
        assert len(list(found.limit(101).batch_size(101))) == 101
        return counters.snapshot()["vm_steps"]

    few = batch_cost()
    later = _BASE + timedelta(days=30)
    for start in range(0, 20_000, 5_000):
        coll.insert_many(
            [
                {
                    "_id": f"n{i:06d}",
                    "pvt_state": "aging" if i % 2 else "in_service",
                    "pvt_modified": later if i % 2 else _BASE,
                }
                for i in range(start, start + 5_000)
            ]
        )
    assert batch_cost() <= few * 2 + 20_000


# ================================================================================ joins by _id
_JOINED: list[Doc] = [
    {"_id": "a1", "kind": "account", "reseller": "r1"},
    {"_id": "a2", "kind": "account", "reseller": "r1"},
    {"_id": "a3", "kind": "account", "reseller": ["r1", "r2"]},
    {"_id": "r1", "kind": "reseller"},
    {"_id": "r2", "kind": "reseller"},
    {"_id": 7, "kind": "numeric"},
    *({"_id": f"x{i:03d}", "kind": "other"} for i in range(200)),
]
_JOINING: list[Doc] = [
    {"_id": "+1", "owner": "a1"},
    {"_id": "+2", "owner": "a3"},
    {"_id": "+3"},  # no owner: joins the null _id, which no account has
    {"_id": "+4", "owner": None},
    {"_id": "+5", "owner": ["a1", "a2"]},
    {"_id": "+6", "owner": "nobody"},
    {"_id": "+7", "owner": 7},  # not a string: the whole collection is read
]


def _lookup(local: str, into: str) -> Doc:
    return {"$lookup": {"from": "acc", "localField": local, "foreignField": "_id", "as": into}}


#: (pipeline, whether it reads the whole joined collection)
_JOIN_PIPELINES: list[tuple[list[Doc], bool]] = [
    # a share read: numbers, their owners and owners' resellers, accounts, the config
    (
        [
            {"$match": {"_id": {"$in": ["+1", "+2", "+3", "+4", "+5", "+6"]}}},
            _lookup("owner", "o"),
            _lookup("o.reseller", "r"),
            {"$addFields": {"k": "number"}},
            {
                "$unionWith": {
                    "coll": "acc",
                    "pipeline": [
                        {"$match": {"_id": {"$in": ["a2", "a3", "zz"]}}},
                        _lookup("reseller", "rs"),
                        {"$addFields": {"k": "account"}},
                    ],
                }
            },
            {"$unionWith": {"coll": "cfg", "pipeline": [{"$match": {"_id": "config"}}]}},
            {"$unionWith": {"coll": "cfg", "pipeline": [{"$match": {"_id": "missing"}}]}},
        ],
        False,
    ),
    ([{"$match": {"_id": "+7"}}, _lookup("owner", "o")], True),
    ([_lookup("owner", "o"), {"$sort": {"_id": 1}}], True),  # +7's owner is a number
    (
        [
            {"$match": {"_id": "+1"}},
            {"$unionWith": {"coll": "acc", "pipeline": [{"$match": {"kind": "reseller"}}]}},
        ],
        True,
    ),
    (
        [
            {"$match": {"_id": {"$in": ["+1", "+2"]}}},
            {"$unionWith": {"pipeline": [{"$match": {"_id": "+5"}}]}},  # the same collection
            {"$facet": {"owners": [_lookup("owner", "o")], "n": [{"$count": "n"}]}},
        ],
        False,
    ),
    (
        [
            {"$match": {"_id": "+2"}},
            {
                "$lookup": {
                    "from": "acc",
                    "localField": "owner",
                    "foreignField": "_id",
                    "pipeline": [{"$project": {"kind": 1}}],
                    "as": "o",
                }
            },
        ],
        False,
    ),
    (
        [
            {"$match": {"_id": "+1"}},
            {"$unionWith": {"coll": "acc", "pipeline": [{"$match": {"_id": "a1"}}]}},
            {
                "$lookup": {
                    "from": "acc",
                    "pipeline": [{"$match": {"kind": "reseller"}}],
                    "as": "all",
                }
            },
        ],
        True,
    ),
]


def test_joins_by_id_answer_as_mongoeco_and_read_only_what_they_join(
    sqlite_server: WireServerThread, client: pymongo.MongoClient[Doc]
) -> None:
    """Each aggregation gives the same documents in the same order with joins read by ``_id``
    as with mongoeco's whole-collection reads; those that pin every join read no collection
    whole, and decode a handful of documents, not the two hundred the joined one holds."""
    db = client["engine_joins"]
    for name in ("num", "acc", "cfg"):
        db.drop_collection(name)
    db["acc"].insert_many([dict(d) for d in _JOINED])
    db["num"].insert_many([dict(d) for d in _JOINING])
    db["cfg"].insert_one({"_id": "config", "v": 1})
    engine = sqlite_server.engine
    for pipeline, whole in _JOIN_PIPELINES:
        engine.JOINS_BY_ID = False
        try:
            expected = list(db["num"].aggregate(pipeline))
        finally:
            engine.JOINS_BY_ID = True
        engine.counters.reset()
        assert list(db["num"].aggregate(pipeline)) == expected, pipeline
        counts = engine.counters.snapshot()
        assert (counts.get("collection_loads", 0) > 0) is whole, (pipeline, counts)
        if not whole:
            assert counts.get("documents_decoded", 0) < 30, (pipeline, counts)
    # and the joins joined: owners, their resellers, the pinned accounts and the config
    read = list(db["num"].aggregate(_JOIN_PIPELINES[0][0]))
    numbers = {d["_id"]: d for d in read if d.get("k") == "number"}
    assert [a["_id"] for a in numbers["+1"]["o"]] == ["a1"]
    assert [a["_id"] for a in numbers["+1"]["r"]] == ["r1"]
    assert [a["_id"] for a in numbers["+2"]["r"]] == ["r1", "r2"]
    assert [a["_id"] for a in numbers["+5"]["o"]] == ["a1", "a2"]
    assert numbers["+3"]["o"] == numbers["+6"]["o"] == []
    accounts = {d["_id"]: d for d in read if d.get("k") == "account"}
    assert sorted(accounts) == ["a2", "a3"]
    assert [r["_id"] for r in accounts["a3"]["rs"]] == ["r1", "r2"]
    assert {"_id": "config", "v": 1} in read


# ================================================================================ pooled readers
def test_readers_reuse_connections_and_see_every_later_write(tmp_path: Path) -> None:
    """A read ends by handing its SQLite connection back (13): the next read opens none, and
    sees every write committed since, even after a read left its statement unfinished."""
    server = WireServerThread(tmp_path / "readers.sqlite")
    server.start()
    engine = server.engine
    try:
        mongo: pymongo.MongoClient[Doc] = pymongo.MongoClient(server.url)
        coll = mongo["readers"]["docs"]
        coll.insert_many([{"_id": f"d{i}", "n": i} for i in range(10)])
        list(coll.find({}))
        opened = engine.counters.snapshot()["connections_opened"]
        for i in range(40):
            unfinished = coll.find({}, batch_size=2)  # its reader keeps a statement open
            next(unfinished)
            unfinished.close()  # the server closes the reader mid-read
            coll.insert_one({"_id": f"new{i}", "n": 100 + i})
            seen = [doc["_id"] for doc in coll.aggregate([{"$match": {"n": {"$gte": 0}}}])]
            assert len(seen) == 11 + i
            assert f"new{i}" in seen
            assert coll.count_documents({"n": {"$gte": 100}}) == i + 1
        assert engine.counters.snapshot()["connections_opened"] == opened
        assert 1 <= len(engine.knm_readers) <= engine.knm_readers.SIZE
        mongo.close()
    finally:
        server.stop()
    assert len(engine.knm_readers) == 0  # the engine's disconnect closed them for real
