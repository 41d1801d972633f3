"""``KnmSQLiteEngine``: mongoeco's SQLite engine with knm's linear-cost adaptations."""

from __future__ import annotations

import contextlib
import contextvars
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Final

from mongoeco.core.filtering import QueryEngine
from mongoeco.core.query_plan import (
    InCondition,
    QueryNode,
)
from mongoeco.engines._sqlite_connection import sqlite_read_scope
from mongoeco.engines.semantic_core import EngineFindSemantics
from mongoeco.engines.sqlite import SQLiteEngine
from mongoeco.engines.sqlite_planner import (
    SQLiteReadExecutionPlan,
    _hybrid_lineage,
    _hybrid_physical_plan,
    _sql_lineage,
    _sql_physical_plan,
)

from knm.store.embedded_engine import index_ranges, scoped_indexes
from knm.store.embedded_engine.probes import ProbeCaching
from knm.store.embedded_engine.readers import ReaderPool
from knm.store.embedded_engine.support import (
    EngineCounters,
    _ChangeLog,
    _CountingConnection,
    _DeltaConnection,
    _PlanRegistry,
    pinned_ids,
)

#: Set while a batched write command runs: the engine's blocking work runs inline (7).
_INLINE: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar("knm_inline", default=False)


# ================================================================================ the engine
class KnmSQLiteEngine(ProbeCaching):
    """mongoeco's SQLite engine with knm's linear-cost adaptations (see the module doc)."""

    #: No change outbox (6): mongoeco then publishes changes in-process, after each write.
    capabilities = replace(SQLiteEngine.capabilities, change_delivery="none")

    #: ``$in`` lists longer than this are translated in groups joined as a balanced tree.
    IN_GROUP: Final[int] = 100
    #: ``$in`` lists of strings longer than this are tested against the set of values.
    IN_SET_MIN: Final[int] = 8
    #: Run every command's blocking work on the event loop's thread (11), not mongoeco's pool.
    INLINE: bool = True
    #: Read a join's documents by ``_id`` where it pins them (12), not the whole collection.
    JOINS_BY_ID: bool = True

    def __init__(self, path: str, **kwargs: Any) -> None:
        # mongoeco refuses aggregations (count_documents too) past 50,000 documents unless they
        # spill to disk; knm counts whole collections (listing jobs, usage), so no such budget.
        kwargs.setdefault("aggregation_materialization_limit", None)
        super().__init__(path, **kwargs)
        self.counters = EngineCounters()
        self._knm_plans = _PlanRegistry()
        self._knm_changes: dict[tuple[str, str], _ChangeLog] = {}
        self._knm_checked: dict[tuple[str, str, str], int] = {}
        self._knm_changes_lock = threading.Lock()
        self._knm_local = threading.local()
        self._knm_index_scopes: scoped_indexes.Scopes = {}
        #: Idle reader connections (13).
        self.knm_readers = ReaderPool()
        #: Set once every index of the store is partial (9).
        self.knm_indexes_scoped = threading.Event()

    # ---------------------------------------------------------------- connections
    def _create_sqlite_connection(self) -> sqlite3.Connection:
        pooled = self.knm_readers.take()
        if pooled is not None:
            return pooled
        conn = sqlite3.connect(self._path, check_same_thread=False, factory=_CountingConnection)
        try:
            if self._path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.create_function("knm_match", 2, self._knm_match)
            conn.create_function("knm_written", 3, self._knm_written)
            conn.install_counter(self.counters)
            conn.index_scopes = self._knm_index_scopes
            self.knm_readers.adopt(conn)
            self.counters.add("connections_opened")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_sync(self) -> None:
        self.knm_readers.reopen()
        super()._connect_sync()
        for kept in (self._connection, self._change_delivery_connection):
            if isinstance(kept, _CountingConnection):
                kept.pool = None  # the engine's own connections close for real (13)
        conn = self._connection  # the connection every write goes through
        if conn is not None:
            with self._lock:
                pending = scoped_indexes.unscoped(conn, self._knm_index_scopes)
            if pending:
                threading.Thread(
                    target=self._knm_scope_indexes, args=(pending,), daemon=True
                ).start()
            else:
                self.knm_indexes_scoped.set()
            for event in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS knm_log_{event.lower()} "
                    f"AFTER {event} ON main.documents BEGIN "
                    "SELECT knm_written(NEW.db_name, NEW.coll_name, NEW.storage_key); END"
                )

    def _disconnect_sync(self) -> None:
        try:
            super()._disconnect_sync()
        finally:
            if self._connection is None:
                self.knm_readers.drain()

    def _knm_scope_indexes(self, statements: list[str]) -> None:
        """Rebuild whole-table indexes partial (9), one per transaction under the lock."""
        for sql in statements:
            with self._lock:
                conn = self._connection
                if conn is None or not scoped_indexes.rebuild(conn, sql, self._knm_index_scopes):
                    return
        self.knm_indexes_scoped.set()

    def _require_connection(self, context: Any = None) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._require_connection(context)
        delta: list[str] | None = getattr(self._knm_local, "delta", None)
        if delta is not None:
            return _DeltaConnection(conn, delta)  # type: ignore[return-value]
        return conn

    def _physical_index_name(self, db_name: str, coll_name: str, index_name: str) -> str:
        name: str = super()._physical_index_name(db_name, coll_name, index_name)
        self._knm_index_scopes[name] = (db_name, coll_name)  # created partial (9)
        return name

    # ---------------------------------------------------------------- counting
    def _deserialize_document(self, payload: str, *, preserve_bson_wrappers: bool = True) -> Any:
        self.counters.add("documents_decoded")
        return super()._deserialize_document(payload, preserve_bson_wrappers=preserve_bson_wrappers)

    def _load_documents(self, db_name: str, coll_name: str) -> Iterator[tuple[str, Any]]:
        self.counters.add("collection_loads")
        return super()._load_documents(db_name, coll_name)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- 12. joins by _id
    def knm_documents(
        self, db_name: str, coll_name: str, ids: Iterable[str | None] | None = None
    ) -> list[Any]:
        """A collection's documents in the order a whole-collection read returns them (its
        storage keys), decoded as a find decodes them: all of them (``ids`` None), or those
        whose ``_id`` is one of ``ids`` (read by primary key)."""
        with self._lock:
            if ids is None:
                return [document for _key, document in self._load_documents(db_name, coll_name)]
            sql, params = self._id_sql((list(dict.fromkeys(ids)), None), "document")
            conn = self._require_connection(None)
            rows = conn.execute(
                sql + " ORDER BY storage_key", [db_name, coll_name, *params]
            ).fetchall()
            return [self._deserialize_document(payload) for (payload,) in rows]

    # ---------------------------------------------------------------- 1. inserts
    def _validate_document_against_unique_indexes(
        self,
        db_name: str,
        coll_name: str,
        document: Any,
        *,
        exclude_storage_key: str | None = None,
        skip_id_check: bool = False,
        scan_payload_id: bool = False,
    ) -> None:
        if scan_payload_id and isinstance(document.get("_id"), str):
            scan_payload_id = False  # the storage-key check already refuses an equal string
        super()._validate_document_against_unique_indexes(
            db_name,
            coll_name,
            document,
            exclude_storage_key=exclude_storage_key,
            skip_id_check=skip_id_check,
            scan_payload_id=scan_payload_id,
        )

    # ---------------------------------------------------------------- 2. _id lookups
    def _knm_match(self, payload: str, token: int) -> int:
        document = self._deserialize_document(payload)
        return int(QueryEngine.match_plan(document, self._knm_plans.get(token)))

    def _id_sql(
        self, pinned: tuple[Sequence[str | None], QueryNode | None], select_clause: str
    ) -> tuple[str, list[Any]]:
        """SQL reading the pinned ids by primary key, the rest decided by mongoeco's matcher."""
        ids, rest = pinned
        self.counters.add("id_lookups")
        keys = json.dumps([self._storage_key(i) for i in ids])
        sql = (
            f"SELECT {select_clause} FROM documents "  # noqa: S608 - mongoeco's select clause
            "WHERE db_name = ? AND coll_name = ? "
            "AND storage_key IN (SELECT value FROM json_each(?))"
        )
        if rest is None:
            return sql, [keys]
        return sql + " AND knm_match(document, ?)", [keys, self._knm_plans.add(rest)]

    def _compile_read_execution_plan(
        self,
        db_name: str,
        coll_name: str,
        semantics: EngineFindSemantics,
        *,
        select_clause: str = "document",
        hint: Any = None,
    ) -> SQLiteReadExecutionPlan:
        pinned = None
        plain = semantics.collation is None and semantics.text_query is None and hint is None
        if plain:
            pinned = pinned_ids(semantics.query_plan)
        if pinned is None:
            plan = super()._compile_read_execution_plan(
                db_name, coll_name, semantics, select_clause=select_clause, hint=hint
            )
            if plain and plan.use_sql and plan.sql:
                plan = self._with_index_ranges(db_name, coll_name, semantics, plan)
            return plan
        sql, extra = self._id_sql(pinned, select_clause)
        params = (db_name, coll_name, *extra)
        if semantics.sort:  # a handful of rows: sort them in Python, as mongoeco's hybrid does
            reason = "_id lookup sorted in Python"
            return SQLiteReadExecutionPlan(
                semantics=semantics,
                strategy="hybrid",
                execution_lineage=_hybrid_lineage(semantics, reason),
                physical_plan=_hybrid_physical_plan(semantics, reason),
                use_sql=True,
                sql=sql,
                params=params,
                apply_python_sort=True,
                fallback_reason=reason,
            )
        if semantics.limit is not None or semantics.skip:
            sql += " LIMIT ? OFFSET ?"
            limit = -1 if semantics.limit is None else semantics.limit
            params = (*params, limit, semantics.skip)
        return SQLiteReadExecutionPlan(
            semantics=replace(semantics),
            strategy="sql",
            execution_lineage=_sql_lineage(semantics),
            physical_plan=_sql_physical_plan(semantics),
            use_sql=True,
            sql=sql,
            params=params,
        )

    # ---------------------------------------------------------------- 10. index ranges
    def _with_index_ranges(
        self,
        db_name: str,
        coll_name: str,
        semantics: EngineFindSemantics,
        plan: SQLiteReadExecutionPlan,
    ) -> SQLiteReadExecutionPlan:
        """mongoeco's plan with the index-range conditions its filter implies, if any."""
        assert plan.sql is not None
        conditions = index_ranges.implied(self, db_name, coll_name, semantics.query_plan)
        if conditions is None:
            return plan
        rewritten = index_ranges.with_conditions(plan.sql, plan.params, conditions, semantics.sort)
        if rewritten is None:
            return plan
        self.counters.add("index_ranges")
        return replace(plan, sql=rewritten[0], params=rewritten[1])

    def _sort_requires_python(
        self, db_name: str, coll_name: str, plan: QueryNode, sort: Any
    ) -> bool:
        """mongoeco's answer, without its per-sort-field SQL check when the filter implies it
        finds nothing: that check looks for a matching row holding an array or a numeric-like
        object at the sort field, and every matching row holds there an untagged string (an
        equality field) or a date (a date-range field) of the index-range conditions."""
        conditions = index_ranges.implied(self, db_name, coll_name, plan) if sort else None
        covered = conditions.equal | conditions.dates if conditions is not None else frozenset()
        if not sort or not all(
            isinstance(key, (list, tuple)) and key and key[0] in covered for key in sort
        ):
            return bool(super()._sort_requires_python(db_name, coll_name, plan, sort))
        if self._plan_has_array_traversing_paths(db_name, coll_name, plan):
            return True
        return any(
            self._field_traverses_array_in_collection(db_name, coll_name, field)
            or self._field_contains_tagged_bytes_in_collection(db_name, coll_name, field)
            or self._field_contains_tagged_undefined_in_collection(db_name, coll_name, field)
            for field, _direction in sort
        )

    def knm_field_may_hold_arrays(self, db_name: str, coll_name: str, field: str) -> bool:
        """Whether some document holds an array at ``field`` (cached probes)."""
        return self._field_is_top_level_array_in_collection(
            db_name, coll_name, field
        ) or self._field_traverses_array_in_collection(db_name, coll_name, field)

    def knm_field_holds_only_dates(self, db_name: str, coll_name: str, field: str) -> bool:
        """Whether every document holding ``field`` holds a date there (a cached probe)."""
        key = (db_name, coll_name, f"knm_not_only_dates:{field}")

        def run() -> bool:
            conn = self._require_connection()
            with sqlite_read_scope(conn):
                row = conn.execute(
                    index_ranges.not_only_dates_sql(field), (db_name, coll_name)
                ).fetchone()
            self._collection_features_cache[key] = row is not None
            return row is not None

        return not self._probe(run, key)

    def _select_first_document_for_plan(
        self,
        db_name: str,
        coll_name: str,
        plan: QueryNode,
        *,
        hint: Any = None,
        context: Any = None,
    ) -> tuple[str, Any] | None:
        pinned = pinned_ids(plan) if hint is None else None
        if pinned is None:
            return super()._select_first_document_for_plan(
                db_name, coll_name, plan, hint=hint, context=context
            )
        sql, extra = self._id_sql(pinned, "storage_key, document")
        conn = super()._require_connection(context)
        with self._bind_connection(conn), sqlite_read_scope(conn):
            row = conn.execute(sql + " LIMIT 1", (db_name, coll_name, *extra)).fetchone()
        if row is None:
            return None
        return row[0], self._deserialize_document(row[1])

    # ---------------------------------------------------------------- 4. long $in lists
    def _translate_query_plan_with_multikey(
        self, db_name: str, coll_name: str, plan: QueryNode
    ) -> tuple[str, list[object]]:
        if not isinstance(plan, InCondition) or len(plan.values) <= self.IN_SET_MIN:
            return super()._translate_query_plan_with_multikey(db_name, coll_name, plan)
        as_set = self._in_as_set(db_name, coll_name, plan)
        if as_set is not None:
            return as_set
        if len(plan.values) <= self.IN_GROUP:
            return super()._translate_query_plan_with_multikey(db_name, coll_name, plan)
        parts = [
            super(KnmSQLiteEngine, self)._translate_query_plan_with_multikey(
                db_name, coll_name, replace(plan, values=plan.values[i : i + self.IN_GROUP])
            )
            for i in range(0, len(plan.values), self.IN_GROUP)
        ]
        while len(parts) > 1:  # pair up: the OR tree's depth grows with log(len(values))
            paired = []
            for i in range(0, len(parts), 2):
                pair = parts[i : i + 2]
                sql = " OR ".join(f"({s})" for s, _ in pair)
                paired.append((sql, [p for _, ps in pair for p in ps]))
            parts = paired
        return parts[0]

    def _in_as_set(
        self, db_name: str, coll_name: str, plan: InCondition
    ) -> tuple[str, list[object]] | None:
        """An ``$in`` of strings as one test against the set of values, or None.

        mongoeco translates ``$in`` to one OR'd fragment per value, each the same SQL with the
        value bound at every ``= ?``: a statement of hundreds of kilobytes for a thousand values,
        which SQLite plans anew each time. When every value is a string and the fragment is that
        template (checked on the first, the last and the longest value), ``x = v1 OR x = v2 ...``
        is ``x IN (v1, v2, ...)``: each ``= ?`` becomes ``IN (SELECT value FROM json_each(?))``
        with the values as one JSON array, the same test written once.
        """
        values = [v for v in plan.values if type(v) is str]
        if len(values) != len(plan.values):
            return None
        samples = {values[0], values[-1], max(values, key=len)}
        template: str | None = None
        for value in samples:
            sql, params = super()._translate_query_plan_with_multikey(
                db_name, coll_name, replace(plan, values=(value,))
            )
            count = sql.count("?")
            if (
                (template is not None and sql != template)
                or count == 0
                or sql.count("= ?") != count
                or params != [value] * count
            ):
                return None
            template = sql
        assert template is not None
        self.counters.add("in_sets")
        values_json = json.dumps(list(dict.fromkeys(values)))
        sql = template.replace("= ?", "IN (SELECT value FROM json_each(?))")
        return sql, [values_json] * template.count("?")

    # ------------------------------------------------- 7. batched writes, 11. no thread hand-off
    async def _run_blocking(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if _INLINE.get() or self.INLINE:
            return func(*args, **kwargs)
        return await super()._run_blocking(func, *args, **kwargs)  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def write_batch(self) -> Iterator[None]:
        """One SQLite transaction for every statement of a wire write command.

        Runs on the event loop's thread holding the engine's lock, with the engine's blocking
        work inline: no other command's work can interleave, and each statement's own write
        scope becomes a savepoint of this transaction (a failed statement rolls back alone).
        What the statements wrote is committed at the end, whatever happened after them, as
        MongoDB keeps the statements of a failed batch that ran before the failure.
        """
        with self._lock:
            conn = self._require_connection(None)
            began = not conn.in_transaction
            if began:
                conn.execute("BEGIN IMMEDIATE")
            self.counters.add("write_batches")
            token = _INLINE.set(True)
            try:
                yield
            finally:
                _INLINE.reset(token)
                if began and conn.in_transaction:
                    conn.commit()

    @contextlib.contextmanager
    def knm_savepoint(self) -> Iterator[None]:
        """A savepoint in the current transaction, rolled back if the block raises."""
        conn = self._require_connection(None)
        conn.execute("SAVEPOINT knm_batch")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO SAVEPOINT knm_batch")
            conn.execute("RELEASE SAVEPOINT knm_batch")
            raise
        conn.execute("RELEASE SAVEPOINT knm_batch")

    def knm_can_set_directly(self, db_name: str, coll_name: str, fields: set[str]) -> bool:
        """Whether setting these top-level fields needs nothing but the document written:
        no validator or other collection options, no search index, no TTL, partial, text or
        wildcard index, and no index on any of the fields (SQLite keeps the expression indexes
        on the documents table itself; mongoeco's entry tables are not touched)."""
        conn = self._require_connection(None)
        if self._collection_options_or_empty_sync(conn, db_name, coll_name):
            return False
        if self._load_search_index_rows(db_name, coll_name):
            return False
        for index in self._load_indexes(db_name, coll_name):
            if (
                index.partial_filter_expression is not None
                or index.expire_after_seconds is not None
                or index.weights is not None
            ):
                return False
            for name in index.fields:
                if name.startswith("$") or "$**" in name or name.split(".", 1)[0] in fields:
                    return False
        return True

    # ---------------------------------------------------------------- 6. no change publication
    def dispatch_committed_changes(self, consumer_id: str, consumer: Callable[..., None]) -> None:
        """Nothing to deliver: this engine records no changes (knm opens no change stream)."""
