"""Counting, ``_id`` lookups and probe re-checks: the engine's own parts, not mongoeco's."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from mongoeco.core.query_plan import (
    AndCondition,
    EqualsCondition,
    ExistsCondition,
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    InCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
    MatchAll,
    NotEqualsCondition,
    NotInCondition,
    OrCondition,
    QueryNode,
)
from mongoeco.engines._sqlite_connection import SQLiteConnection

from knm.store.embedded_engine import scoped_indexes
from knm.store.embedded_engine.readers import ReaderPool


# ================================================================================ counters
@dataclass
class EngineCounters:
    """Work done by the engine since it started (or since :meth:`reset`)."""

    documents_decoded: int = 0
    collection_loads: int = 0
    probe_full_scans: int = 0
    probe_delta_checks: int = 0
    id_lookups: int = 0
    vm_steps: int = 0
    write_batches: int = 0
    lean_updates: int = 0
    in_sets: int = 0
    index_ranges: int = 0
    #: SQLite connections opened (a reader takes a pooled one when there is one, 13).
    connections_opened: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def reset(self) -> None:
        names = list(self.snapshot())
        with self._lock:
            for key in names:
                setattr(self, key, 0)


#: SQLite calls the progress handler every this many virtual-machine instructions.
VM_STEP_GRANULARITY: Final[int] = 1000


class _CountingConnection(SQLiteConnection):
    """A connection that counts its SQLite VM steps, whatever handler mongoeco installs,
    creates each collection's indexes partial (:mod:`scoped_indexes`), and goes back to its
    pool when closed (:mod:`.readers`)."""

    counters: EngineCounters | None = None
    index_scopes: scoped_indexes.Scopes | None = None
    #: Where ``close`` hands this connection back (13); None: ``close`` closes it.
    pool: ReaderPool | None = None
    #: The schema version this connection was opened on (a pool keeps it while that stands).
    schema_seen: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if self.index_scopes is not None and sql.startswith("CREATE INDEX "):
            sql = scoped_indexes.scoped(sql, self.index_scopes)
        cursor = super().execute(sql, parameters)
        if self.pool is not None:
            self._cursors.add(cursor)
        return cursor

    def close(self) -> None:
        pool = self.pool
        if pool is not None and pool.give_back(self):
            return
        super().close()

    def close_cursors(self) -> None:
        """Close every cursor ``execute`` opened that is still open (mongoeco and knm open none
        another way): a closed connection's cursors are unusable, and an unfinished statement
        would keep its read snapshot into the next reader's."""
        for cursor in list(self._cursors):
            cursor.close()
        self._cursors.clear()

    def forget_catalogs(self) -> None:
        """What mongoeco's ``SQLiteConnection.close`` forgets: the indexes it cached."""
        self.index_catalogs.clear()
        self._catalog_data_version = None

    def install_counter(self, counters: EngineCounters) -> None:
        self.counters = counters
        self.set_progress_handler(None, 0)

    def set_progress_handler(self, handler: Callable[[], int | None] | None, n: int) -> None:
        counters = self.counters
        if counters is None:
            super().set_progress_handler(handler, n)
            return

        def counting() -> int:
            counters.add("vm_steps", VM_STEP_GRANULARITY)
            return (handler() or 0) if handler is not None else 0

        # mongoeco's own handler (statement deadlines) runs at the same granularity.
        super().set_progress_handler(counting, VM_STEP_GRANULARITY)


# ================================================================================ _id lookups
_RESIDUAL_NODES: Final[tuple[type[QueryNode], ...]] = (
    MatchAll,
    EqualsCondition,
    NotEqualsCondition,
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
    InCondition,
    NotInCondition,
    ExistsCondition,
    AndCondition,
    OrCondition,
)


def _plain(plan: QueryNode) -> bool:
    """Whether ``plan`` uses only operators whose match needs no variables, dialect or collation."""
    if not isinstance(plan, _RESIDUAL_NODES):
        return False
    if isinstance(plan, (AndCondition, OrCondition)):
        return all(_plain(clause) for clause in plan.clauses)
    return True


def pinned_ids(plan: QueryNode) -> tuple[list[str], QueryNode | None] | None:
    """The string ``_id`` values a filter is limited to, and the rest of the filter.

    ``{_id: "a"}``, ``{_id: {$in: ["a", "b"]}}`` and an ``$and`` holding one of those (the form
    ``{_id: "a", pvt_rev: 3}`` takes) qualify; anything else (``$or`` at the top, numeric or
    document ids, operators that need variables) does not. The rest is ``None`` when the ``_id``
    clause is the whole filter: a string's storage key decides it exactly.
    """
    if not _plain(plan):
        return None
    clauses = list(plan.clauses) if isinstance(plan, AndCondition) else [plan]
    for position, clause in enumerate(clauses):
        ids: list[str] | None = None
        if isinstance(clause, EqualsCondition) and clause.field == "_id":
            if isinstance(clause.value, str):
                ids = [clause.value]
        elif (
            isinstance(clause, InCondition)
            and clause.field == "_id"
            and clause.values
            and all(isinstance(v, str) for v in clause.values)
        ):
            ids = list(dict.fromkeys(str(v) for v in clause.values))
        if ids is not None:
            rest = clauses[:position] + clauses[position + 1 :]
            if not rest:
                return ids, None
            return ids, rest[0] if len(rest) == 1 else AndCondition(tuple(rest))
    return None


class _PlanRegistry:
    """Query plans handed to the ``knm_match`` SQL function by number (bounded, newest kept)."""

    SIZE: Final[int] = 100_000

    def __init__(self) -> None:
        self._plans: OrderedDict[int, QueryNode] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, plan: QueryNode) -> int:
        with self._lock:
            token = next(self._ids)
            self._plans[token] = plan
            while len(self._plans) > self.SIZE:
                self._plans.popitem(last=False)
            return token

    def get(self, token: int) -> QueryNode:
        with self._lock:
            plan = self._plans.get(token)
        if plan is None:
            raise RuntimeError(f"knm_match: query plan {token} is no longer registered")
        return plan


# ================================================================================ probes
#: Probes whose answer is "some document has the property" (a True stays True).
_EXISTENTIAL_PROBES: Final[tuple[str, ...]] = (
    "_field_contains_tagged_value_type_in_collection",
    "_field_is_top_level_array_in_collection",
    "_field_traverses_array_in_collection",
    "_field_traverses_dbref_in_collection",
    "_field_contains_real_numeric_in_collection",
    "_field_contains_non_ascii_text_in_collection",
    "_field_has_comparison_type_mismatch_in_collection",
    "_field_has_scalar_or_array_element_type_mismatch_in_collection",
)
#: The one probe whose answer is about every document ("all values are numbers"): its cached
#: answer is dropped when the collection changes, as mongoeco does.
_UNIVERSAL_PROBE_PREFIX: Final[str] = "uniform_scalar_sort_type:"

_PROBE_SCOPE: Final[re.Pattern[str]] = re.compile(r"WHERE db_name = \? AND coll_name = \?")
#: Past this many logged writes a collection's cached probe answers are dropped instead.
_CHANGE_LOG_LIMIT: Final[int] = 200_000


class _ChangeLog:
    """Storage keys written in one collection, in order; positions are absolute."""

    def __init__(self) -> None:
        self.base = 0
        self.keys: list[str] = []

    @property
    def end(self) -> int:
        return self.base + len(self.keys)

    def since(self, position: int) -> list[str]:
        return self.keys[max(0, position - self.base) :]

    def trim(self, position: int) -> None:
        drop = position - self.base
        if drop > 0:
            del self.keys[:drop]
            self.base = position


class _DeltaConnection:
    """A connection whose collection-wide probe SQL sees only the given storage keys."""

    def __init__(self, conn: sqlite3.Connection, keys: list[str]) -> None:
        self._conn = conn
        self._keys = json.dumps(keys)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        scoped, found = _PROBE_SCOPE.subn(
            "WHERE db_name = ? AND coll_name = ? "
            "AND storage_key IN (SELECT value FROM json_each(?))",
            sql,
        )
        if found != 1:
            raise RuntimeError(f"knm engine: unexpected probe SQL shape: {sql[:200]!r}")
        params = tuple(params)
        return self._conn.execute(scoped, (*params[:2], self._keys, *params[2:]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
