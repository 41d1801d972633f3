"""The embedded engine's adaptation is pinned to the mongoeco release it was written against."""

from __future__ import annotations

from importlib.metadata import version

from mongoeco.core.query_plan import AndCondition, EqualsCondition, InCondition, OrCondition

from knm.store import embedded_engine


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
