"""Patches of mongoeco module functions, active only for a ``KnmSQLiteEngine``."""

from __future__ import annotations

import contextvars
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from mongoeco._types.documents import WriteCommandResult, WriteErrorEntry
from mongoeco.api._async import _database_admin_write_commands as write_commands
from mongoeco.api._async._write_command_validation import write_command_acknowledged
from mongoeco.api._command_bson import command_boolean
from mongoeco.core.codec import DocumentCodec
from mongoeco.engines import sqlite as mongoeco_sqlite
from mongoeco.errors import BulkWriteError

from knm.store.embedded_engine import batched, codec, joins
from knm.store.embedded_engine.engine import KnmSQLiteEngine
from knm.store.embedded_engine.support import _CountingConnection

# ================================================================================ module patches
# mongoeco calls these module-level functions directly; the wrappers change behaviour only for a
# KnmSQLiteEngine (its connections, its collections) and call the original otherwise.
_ORIGINALS: dict[str, Any] = {}

log = logging.getLogger(__name__)


def _append_change(conn: sqlite3.Connection, **kwargs: Any) -> int | None:
    if isinstance(conn, _CountingConnection):
        return None  # no change publication (6): "no event recorded" is a result mongoeco handles
    return _ORIGINALS["_sqlite_outbox.append_change"](conn, **kwargs)  # type: ignore[no-any-return]


async def _command_insert(self: Any, spec: dict[str, object], *, session: Any = None) -> object:
    """The wire ``insert``: one ``insert_many`` (one transaction) for a KnmSQLiteEngine (5)."""
    original = _ORIGINALS[
        "_database_admin_write_commands.DatabaseAdminWriteCommandService.command_insert"
    ]
    admin = self._admin
    raw = spec.get("documents")
    name = spec.get("insert")
    if not (
        isinstance(name, str)
        and isinstance(raw, list)
        and raw
        and all(isinstance(d, dict) and isinstance(d.get("_id"), str) for d in raw)
    ):
        return await original(self, spec, session=session)
    collection = admin._database.get_collection(admin._require_collection_name(name, "insert"))
    if not isinstance(getattr(collection, "_engine", None), KnmSQLiteEngine):
        return await original(self, spec, session=session)
    documents = admin._normalize_insert_documents(raw)
    ordered = admin._normalize_ordered_from_command(spec.get("ordered"))
    bypass = command_boolean(  # type: ignore[no-untyped-call]
        spec.get("bypassDocumentValidation", False), "bypassDocumentValidation", numeric=True
    )
    acknowledged = write_command_acknowledged(spec, dialect=admin._mongodb_dialect.key)
    inserted = len(documents)
    errors: list[WriteErrorEntry] | None = None
    try:
        await collection.insert_many(
            documents, ordered=ordered, bypass_document_validation=bypass, session=session
        )
    except BulkWriteError as exc:
        details: dict[str, Any] = getattr(exc, "details", None) or {}
        inserted = int(details.get("nInserted", 0))
        errors = [
            WriteErrorEntry(
                index=int(e["index"]),
                errmsg=str(e.get("errmsg", "")),
                code=e.get("code"),
                details={k: v for k, v in e.items() if k not in {"index", "errmsg", "code", "op"}},
            )
            for e in details.get("writeErrors", [])
        ]
    return write_commands._write_command_result(
        WriteCommandResult(count=inserted, write_errors=errors or None),
        acknowledged=acknowledged,
    )


async def _command_update(
    self: Any,
    spec: dict[str, object],
    *,
    session: Any = None,
    execution_context: Any = None,
) -> object:
    """The wire ``update`` for a KnmSQLiteEngine (7): the lean path when the statements and
    the collection allow it, else mongoeco's, in one transaction when there are several
    statements (a single one, say a long ``multi`` update, runs as mongoeco runs it)."""
    original = _ORIGINALS[
        "_database_admin_write_commands.DatabaseAdminWriteCommandService.command_update"
    ]
    updates = spec.get("updates")
    target = _batch_target(self, spec.get("update"), updates, session)
    if target is None:
        return await original(self, spec, session=session, execution_context=execution_context)
    engine, collection = target
    lean = batched.set_statements(self._admin, collection, engine, spec)
    if lean is None and isinstance(updates, list) and len(updates) < 2:
        return await original(self, spec, session=session, execution_context=execution_context)
    db_name, coll_name = collection._db_name, collection._collection_name
    with engine.write_batch():
        if lean is not None:
            statements, acknowledged = lean
            fields = batched.fields_set(statements)
            if engine.knm_can_set_directly(db_name, coll_name, fields):
                try:
                    with engine.knm_savepoint():
                        matched, modified = batched.apply_sets(
                            engine, db_name, coll_name, statements
                        )
                except Exception:
                    log.warning("lean update failed; mongoeco runs the command", exc_info=True)
                else:
                    return batched.update_result(matched, modified, acknowledged)
        return await original(self, spec, session=session, execution_context=execution_context)


def _batch_target(
    admin_service: Any, name: object, statements: object, session: Any
) -> tuple[KnmSQLiteEngine, Any] | None:
    """The KnmSQLiteEngine and collection of a write command with statements, or None."""
    if not isinstance(name, str) or not isinstance(statements, list) or not statements:
        return None
    if session is not None and getattr(session, "in_transaction", False):
        return None
    try:
        collection = admin_service._admin._database.get_collection(name)
    except Exception:
        return None
    engine = getattr(collection, "_engine", None)
    return (engine, collection) if isinstance(engine, KnmSQLiteEngine) else None


#: Set while the patched ``_load_pipeline_resources`` runs: joined collections are not read.
_DEFER_LOADS: contextvars.ContextVar[bool] = contextvars.ContextVar("knm_defer", default=False)


async def _load_pipeline_resources(self: Any) -> Any:
    """The resources of an aggregation on a KnmSQLiteEngine: the joined collections are read
    when a stage asks, by ``_id`` where the stage pins them (12)."""
    original = _ORIGINALS["AsyncAggregationCursor._load_pipeline_resources"]
    engine = getattr(self._collection, "_engine", None)
    if not (isinstance(engine, KnmSQLiteEngine) and engine.JOINS_BY_ID):
        return await original(self)
    token = _DEFER_LOADS.set(True)
    try:
        resources = await original(self)
    finally:
        _DEFER_LOADS.reset(token)
    deferred = frozenset(
        request.collection
        for request in self._pipeline.requests
        if request.operator == "documents" and request.collection is not None
    )
    return joins.LazyResources(
        {k: v for k, v in resources.documents.items() if k not in deferred},
        resources.collection,
        resources.snapshots,
        engine=engine,
        db_name=self._collection._db_name,
        lazy=deferred,
    )


async def _load_collection_documents(self: Any, collection_name: str) -> Any:
    if _DEFER_LOADS.get():
        return []  # read on demand (12)
    return await _ORIGINALS["AsyncAggregationCursor._load_collection_documents"](
        self, collection_name
    )


def _install_join_patches() -> None:
    """12: the joined collections of an aggregation read on demand, by ``_id`` where pinned."""
    from mongoeco.api._async.aggregation_cursor import AsyncAggregationCursor
    from mongoeco.core.aggregation import join_stages, runtime_state, stages

    _ORIGINALS["AsyncAggregationCursor._load_pipeline_resources"] = (
        AsyncAggregationCursor._load_pipeline_resources
    )
    _ORIGINALS["AsyncAggregationCursor._load_collection_documents"] = (
        AsyncAggregationCursor._load_collection_documents
    )
    setattr(AsyncAggregationCursor, "_load_pipeline_resources", _load_pipeline_resources)  # noqa: B010
    setattr(AsyncAggregationCursor, "_load_collection_documents", _load_collection_documents)  # noqa: B010
    originals: dict[str, Callable[..., Any]] = {
        "join_stages._apply_lookup": join_stages._apply_lookup,
        "join_stages._apply_union_with": join_stages._apply_union_with,
        "runtime_state._apply_lookup_states": runtime_state._apply_lookup_states,
        "runtime_state._apply_union_states": runtime_state._apply_union_states,
    }
    _ORIGINALS.update(originals)
    lookup = joins.hinted(originals["join_stages._apply_lookup"], joins.lookup_hint)
    union = joins.hinted(originals["join_stages._apply_union_with"], joins.union_hint)
    for module in (join_stages, stages):
        setattr(module, "_apply_lookup", lookup)  # noqa: B010
        setattr(module, "_apply_union_with", union)  # noqa: B010
    lookup_states = joins.hinted(originals["runtime_state._apply_lookup_states"], joins.lookup_hint)
    union_states = joins.hinted(originals["runtime_state._apply_union_states"], joins.union_hint)
    setattr(runtime_state, "_apply_lookup_states", lookup_states)  # noqa: B010
    setattr(runtime_state, "_apply_union_states", union_states)  # noqa: B010


def install_module_patches() -> None:
    """Install the wrappers (once); they defer to mongoeco for any other engine."""
    from mongoeco.engines import _sqlite_outbox

    if _ORIGINALS:
        return
    service = write_commands.DatabaseAdminWriteCommandService
    _ORIGINALS["_database_admin_write_commands.DatabaseAdminWriteCommandService.command_insert"] = (
        service.command_insert
    )
    _ORIGINALS["_database_admin_write_commands.DatabaseAdminWriteCommandService.command_update"] = (
        service.command_update
    )
    _ORIGINALS["_sqlite_outbox.append_change"] = _sqlite_outbox.append_change
    setattr(service, "command_update", _command_update)  # noqa: B010 - patching a class
    setattr(service, "command_insert", _command_insert)  # noqa: B010 - patching a class
    setattr(mongoeco_sqlite, "_sqlite_append_change", _append_change)  # noqa: B010
    _ORIGINALS["DocumentCodec.encode"] = codec.original_encode()
    setattr(DocumentCodec, "encode", staticmethod(codec.encode))  # noqa: B010 - the same result
    _install_join_patches()
