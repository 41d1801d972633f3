"""The embedded engine's adaptation is pinned to the mongoeco release it was written against."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from bson import Decimal128, Int64, ObjectId
from bson.son import SON
from mongoeco.core.codec import DocumentCodec
from mongoeco.core.query_plan import AndCondition, EqualsCondition, InCondition, OrCondition

from knm.store import embedded_engine
from knm.store.embedded_engine import codec


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
