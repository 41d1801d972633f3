"""The embedded engine's adaptation is pinned to the mongoeco release it was written against."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId
from bson.son import SON
from mongoeco.core.codec import DocumentCodec
from mongoeco.core.query_plan import AndCondition, EqualsCondition, InCondition, OrCondition

from knm.store import embedded_engine
from knm.store.embedded_engine import codec
from knm.store.embedded_engine.readers import ReaderPool
from knm.store.embedded_engine.support import _CountingConnection


def test_mongoeco_is_the_pinned_release() -> None:
    assert version("mongoeco") == embedded_engine.MONGOECO_VERSION


def test_patched_mongoeco_internals_are_unchanged() -> None:
    """An upgrade that changes any function the adaptation overrides or relies on fails here:
    re-read the function, re-check the adaptation, then update PATCHED_SOURCES and the pin."""
    assert embedded_engine.patched_source_hashes() == embedded_engine.PATCHED_SOURCES


def test_pinned_ids_takes_only_top_level_string_ids() -> None:
    rev = EqualsCondition("pvt_rev", 3)
    assert embedded_engine.pinned_ids(EqualsCondition("_id", "+1415")) == (["+1415"], None)
    assert embedded_engine.pinned_ids(InCondition("_id", ("a", "b", "a"))) == (["a", "b"], None)
    assert embedded_engine.pinned_ids(AndCondition((EqualsCondition("_id", "a"), rev))) == (
        ["a"],
        rev,
    )
    assert embedded_engine.pinned_ids(EqualsCondition("_id", 1)) is None  # 1 equals 1.0
    assert embedded_engine.pinned_ids(InCondition("_id", ("a", 1))) is None
    assert embedded_engine.pinned_ids(OrCondition((EqualsCondition("_id", "a"), rev))) is None
    assert embedded_engine.pinned_ids(EqualsCondition("number", "a")) is None


def _outcome(encode: Any, value: Any) -> Any:
    try:
        return ("ok", encode(value))
    except Exception as exc:
        return ("error", type(exc))


def test_the_encoder_gives_mongoeco_s_result() -> None:
    """knm's encoder (each value validated once) returns exactly what mongoeco's does, errors
    included, for every kind of value a document holds."""
    original = codec.original_encode()
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    values: list[Any] = [
        "text",
        "",
        True,
        None,
        0,
        2**31,
        -(2**63),
        2**63,  # beyond int64: refused
        1.5,
        float("inf"),
        when,
        ObjectId("0123456789abcdef01234567"),
        Int64(7),
        Decimal128("1.10"),
        b"\x00\x01",
        uuid.UUID(int=5),
        SON([("b", 1), ("a", [1, {"c": when}])]),
        (1, "two", [3]),
        {"a": {"b": {"c": [1, 2.5, {"d": None, "e": when}]}}, "f": "g"},
        {"$mongoeco": {"type": "datetime", "value": "2026"}},  # looks tagged: tagged as a dict
        {"a": [{"$mongoeco": {"type": "x", "value": 1}}]},
        {1: "non-string key"},
        {"a": {"b": {2: "deep non-string key"}}},
        {"a": [1, {2, 3}]},  # a set
        {"a": [{"b": 2**64}]},
        [[1, [2, [3, {"x": "y"}]]]],
    ]
    for value in values:
        assert _outcome(codec.encode, value) == _outcome(original, value), value
    assert DocumentCodec.encode is codec.encode  # installed for the engine


def test_a_pooled_connection_comes_back_as_a_new_one_would(tmp_path: Path) -> None:
    """A connection handed back mid-read (13) keeps no statement, transaction or deadline: the
    next reader sees what was committed meanwhile and runs without the old handler; one kept
    across a schema change is closed instead of handed out."""
    path = str(tmp_path / "pool.sqlite")
    pool = ReaderPool()

    def connect() -> _CountingConnection:
        conn = sqlite3.connect(path, check_same_thread=False, factory=_CountingConnection)
        conn.execute("PRAGMA journal_mode=WAL")
        pool.adopt(conn)
        return conn

    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (n INTEGER)")
    setup.close()
    writer = connect()
    writer.pool = None
    writer.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(5)])
    writer.commit()

    reader = connect()
    reader.execute("BEGIN")
    unfinished = reader.execute("SELECT n FROM t")
    assert unfinished.fetchone() == (0,)
    reader.set_progress_handler(lambda: 1, 1)  # a deadline that has passed: interrupts all
    reader.index_catalogs[("db", "t")] = (1, [])
    reader.close()
    assert len(pool) == 1

    writer.execute("INSERT INTO t VALUES (5)")
    writer.commit()
    again = pool.take()
    assert again is reader
    assert len(pool) == 0
    assert not again.in_transaction
    assert again.index_catalogs == {}
    again.execute("BEGIN")
    assert again.execute("SELECT count(*) FROM t").fetchone() == (6,)
    again.close()
    assert len(pool) == 1

    writer.execute("CREATE INDEX t_n ON t (n)")  # a schema change: the kept one starts anew
    assert pool.take() is None
    with pytest.raises(sqlite3.ProgrammingError):
        reader.execute("SELECT 1")  # closed for real
    reader = connect()
    reader.close()
    assert len(pool) == 1
    during = connect()
    writer.execute("DROP INDEX t_n")  # a schema change while it is in use: not kept either
    during.close()
    assert len(pool) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        during.execute("SELECT 1")

    pool.drain()
    assert len(pool) == 0
    with pytest.raises(sqlite3.ProgrammingError):
        reader.execute("SELECT 1")  # closed for real
    fresh = connect()
    fresh.close()  # a drained pool keeps nothing until it reopens
    assert len(pool) == 0
    writer.close()
