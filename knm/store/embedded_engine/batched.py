"""Batched wire writes (7): one transaction per command, and a lean path for ``$set`` by ``_id``.

The wire ``update`` command applies its statements one ``update_one`` each; through mongoeco's
API and engine layers a statement costs about a millisecond of Python (encoding, compiling,
translating the update to SQL, a transaction of its own). knm's job rows are written that way,
one statement per row. Here every statement of a command runs in one SQLite transaction, and a
command whose statements all have the simplest shape (set top-level fields of one document
pinned by a string ``_id``, no upsert, no index on the fields set) is applied directly: read
the row by primary key, decide the rest of the filter with mongoeco's matcher, set the fields
with mongoeco's own path setter (so "modified" means what it means to mongoeco), write the
document back. Any other command, or any surprise, goes through mongoeco unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from mongoeco._types.documents import WriteCommandResult
from mongoeco.api._async import _database_admin_write_commands as write_commands
from mongoeco.api._async._write_command_validation import write_command_acknowledged
from mongoeco.api._command_bson import command_boolean, validate_command_let, validate_write_fields
from mongoeco.core.codec import DocumentCodec
from mongoeco.core.filtering import QueryEngine
from mongoeco.core.paths import set_document_value
from mongoeco.core.query_plan import QueryNode, compile_filter

from knm.store.embedded_engine.support import pinned_ids

if TYPE_CHECKING:
    from knm.store.embedded_engine.engine import KnmSQLiteEngine

#: The keys a statement of the lean path may have.
_STATEMENT_KEYS: Final[frozenset[str]] = frozenset({"q", "u", "multi", "upsert"})


@dataclass(frozen=True, slots=True)
class SetStatement:
    """One ``{q: {_id: ..., ...}, u: {$set: {...}}}`` statement, compiled."""

    storage_key: str
    rest: QueryNode | None
    fields: dict[str, Any]


def _plain_field(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and name != "_id"
        and not name.startswith("$")
        and "." not in name
        and "\x00" not in name
    )


def set_statements(
    admin: Any, collection: Any, engine: KnmSQLiteEngine, spec: dict[str, object]
) -> tuple[list[SetStatement], bool] | None:
    """The statements of an ``update`` command if every one has the lean shape, with whether
    the command is acknowledged; None if any has not (mongoeco runs the command then). Reads
    nothing: whether the collection allows it is :meth:`KnmSQLiteEngine.knm_can_set_directly`."""
    try:  # the command's own checks first: whatever they refuse, mongoeco refuses itself
        validate_write_fields(spec, "update")  # type: ignore[no-untyped-call]
        updates = admin._normalize_update_specs(spec.get("updates"))
        write_commands._validate_update_command_shapes(updates, admin._mongodb_dialect.key)
        admin._normalize_ordered_from_command(spec.get("ordered"))
        command_boolean(  # type: ignore[no-untyped-call]
            spec.get("bypassDocumentValidation", False), "bypassDocumentValidation", numeric=True
        )
        validate_command_let(spec.get("let"))  # type: ignore[no-untyped-call]
        acknowledged = write_command_acknowledged(spec, dialect=admin._mongodb_dialect.key)
    except Exception:
        return None
    if spec.get("let") is not None:
        return None
    dialect = collection._mongodb_dialect
    statements: list[SetStatement] = []
    for update in updates:
        if set(update) - _STATEMENT_KEYS or update.get("multi") or update.get("upsert"):
            return None
        query, change = update.get("q"), update.get("u")
        if not isinstance(query, dict) or not isinstance(change, dict) or set(change) != {"$set"}:
            return None
        fields = change["$set"]
        if not isinstance(fields, dict) or not fields or not all(map(_plain_field, fields)):
            return None
        try:
            plan = compile_filter(admin._normalize_filter(query), dialect=dialect)
            values = DocumentCodec.to_internal(fields)
        except Exception:
            return None
        pinned = pinned_ids(plan)
        if pinned is None or len(pinned[0]) != 1 or not isinstance(values, dict):
            return None
        statements.append(SetStatement(engine._storage_key(pinned[0][0]), pinned[1], values))
    return statements, acknowledged


def fields_set(statements: list[SetStatement]) -> set[str]:
    return {name for statement in statements for name in statement.fields}


def apply_sets(
    engine: KnmSQLiteEngine, db_name: str, coll_name: str, statements: list[SetStatement]
) -> tuple[int, int]:
    """Apply the statements in the current transaction; (matched, modified)."""
    conn = engine._require_connection(None)
    matched = modified = 0
    for statement in statements:
        row = conn.execute(
            "SELECT document FROM documents "
            "WHERE db_name = ? AND coll_name = ? AND storage_key = ?",
            (db_name, coll_name, statement.storage_key),
        ).fetchone()
        if row is None:
            continue
        document = engine._deserialize_document(row[0])
        if statement.rest is not None and not QueryEngine.match_plan(document, statement.rest):
            continue
        matched += 1
        changed = False
        for name, value in statement.fields.items():
            changed = set_document_value(document, name, value) or changed
        if not changed:
            continue
        conn.execute(
            "UPDATE documents SET document = ? "
            "WHERE db_name = ? AND coll_name = ? AND storage_key = ?",
            (engine._serialize_document(document), db_name, coll_name, statement.storage_key),
        )
        modified += 1
    if modified:
        engine._invalidate_collection_features_cache(db_name, coll_name)
    engine.counters.add("lean_updates", len(statements))
    return matched, modified


def update_result(matched: int, modified: int, acknowledged: bool) -> object:
    """The wire reply mongoeco gives for an update command that matched and modified so many."""
    return write_commands._write_command_result(
        WriteCommandResult(count=matched, modified_count=modified), acknowledged=acknowledged
    )
