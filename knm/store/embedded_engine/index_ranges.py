"""Finds that read an index range instead of the whole collection (10).

mongoeco writes a filter such as the aging sweep's ``{pvt_state: "aging", pvt_modified: {$lt:
date}}`` with ``json_type`` / ``json_extract`` tests that keep every BSON rule (arrays, type
order), and these match none of the expression indexes it builds: SQLite reads every document
of the collection, on every batch of a sweep.

Here the same SQL gets extra conditions in the indexes' own terms, each *implied* by the filter,
so the answer cannot change while SQLite can read the index range:

- ``field == "string"``, when no document holds an array at ``field``: the value is that
  untagged string (``type = '' AND value = ?``);
- ``field < date`` (and ``<=``, ``>``, ``>=``), when every document holding ``field`` holds a
  date there (mongoeco orders other types before dates, so with another type present this
  would not be implied): the value is a date in that range (``type = 'datetime' AND value < ?``,
  dates compared as mongoeco stores them, ISO text).

When every sort key is one of those fields, the ORDER BY is rewritten in the index's terms too:
among the rows that pass these conditions an equality field is one value and a date field is
ordered by its stored text, so the order is mongoeco's (only ties may come in another order,
as MongoDB leaves them) and SQLite reads the index in order, stopping at the limit.

Only filters on a field that leads one of the collection's indexes get them. The "no arrays" and
"only dates" answers are the engine's cached collection probes, re-checked on new rows only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from mongoeco.core.codec import DocumentCodec
from mongoeco.core.query_plan import (
    AndCondition,
    EqualsCondition,
    GreaterThanCondition,
    GreaterThanOrEqualCondition,
    LessThanCondition,
    LessThanOrEqualCondition,
    QueryNode,
)

if TYPE_CHECKING:
    from knm.store.embedded_engine.engine import KnmSQLiteEngine

_FIELD: Final[re.Pattern[str]] = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RANGES: Final[dict[type[QueryNode], str]] = {
    LessThanCondition: "<",
    LessThanOrEqualCondition: "<=",
    GreaterThanCondition: ">",
    GreaterThanOrEqualCondition: ">=",
}
#: The namespace test every collection query of mongoeco starts its WHERE clause with.
ANCHOR: Final[str] = "WHERE db_name = ? AND coll_name = ?"


def type_sql(field: str) -> str:
    """The type column of mongoeco's expression index on ``field``."""
    return f"COALESCE(json_extract(document, '$.{field}.\"$mongoeco\".type'), '')"


def value_sql(field: str) -> str:
    """The value column of mongoeco's expression index on ``field``."""
    return (
        f"COALESCE(json_extract(document, '$.{field}.\"$mongoeco\".value'), "
        f"json_extract(document, '$.{field}'))"
    )


def not_only_dates_sql(field: str) -> str:
    """A probe: does some document of the collection hold something other than a date?"""
    return (  # the field name is checked against _FIELD (letters, digits, underscores)
        f"SELECT 1 FROM documents {ANCHOR} "  # noqa: S608
        f"AND json_type(document, '$.{field}') IS NOT NULL "
        f"AND {type_sql(field)} != 'datetime' LIMIT 1"
    )


@dataclass(frozen=True, slots=True)
class Conditions:
    """Index-range conditions: SQL, parameters, and the fields they pin or bound."""

    sql: str
    params: list[Any]
    equal: frozenset[str]
    dates: frozenset[str]


def implied(
    engine: KnmSQLiteEngine, db_name: str, coll_name: str, plan: QueryNode
) -> Conditions | None:
    """Index-range conditions implied by ``plan``, or None."""
    clauses = plan.clauses if isinstance(plan, AndCondition) else (plan,)
    candidates = [
        c
        for c in clauses
        if isinstance(getattr(c, "field", None), str)
        and _FIELD.fullmatch(c.field)  # type: ignore[attr-defined]
        and c.field != "_id"  # type: ignore[attr-defined]
    ]
    if not candidates:
        return None
    leading = {
        index.fields[0]
        for index in engine._load_indexes(db_name, coll_name)
        if index.physical_name and index.fields
    }
    if not any(c.field in leading for c in candidates):  # type: ignore[attr-defined]
        return None
    parts: list[str] = []
    params: list[Any] = []
    equal: set[str] = set()
    dates: set[str] = set()
    for clause in candidates:
        field: str = clause.field  # type: ignore[attr-defined]
        value = getattr(clause, "value", None)
        if type(clause) is EqualsCondition and type(value) is str:
            if engine.knm_field_may_hold_arrays(db_name, coll_name, field):
                continue
            parts.append(f"{type_sql(field)} = '' AND {value_sql(field)} = ?")
            params.append(value)
            equal.add(field)
        elif type(clause) in _RANGES and isinstance(value, datetime):
            if not engine.knm_field_holds_only_dates(db_name, coll_name, field):
                continue
            encoded = DocumentCodec.encode(value)[DocumentCodec._MARKER]
            if encoded[DocumentCodec._TYPE] != "datetime":
                continue
            op = _RANGES[type(clause)]
            parts.append(f"{type_sql(field)} = 'datetime' AND {value_sql(field)} {op} ?")
            params.append(encoded[DocumentCodec._VALUE])
            dates.add(field)
    if not parts:
        return None
    return Conditions(" AND ".join(parts), params, frozenset(equal), frozenset(dates))


def _order_by(sort: object, conditions: Conditions) -> str | None:
    """The ORDER BY in index terms for rows passing ``conditions``, or None."""
    if not isinstance(sort, (list, tuple)) or not sort:
        return None
    keys: list[str] = []
    for item in sort:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or item[1] not in (1, -1):
            return None
        field, direction = item
        if field in conditions.equal:
            continue
        if field not in conditions.dates:
            return None
        keys.append(f"{value_sql(field)} {'ASC' if direction == 1 else 'DESC'}")
    return f"ORDER BY {', '.join(keys)}" if keys else None


def with_conditions(
    sql: str, params: tuple[object, ...], conditions: Conditions, sort: object
) -> tuple[str, tuple[object, ...]] | None:
    """mongoeco's ``sql`` with ``conditions`` after its namespace test (and its ORDER BY in
    index terms when ``sort`` allows), or None if its shape is not the expected one (then it
    runs as it is)."""
    if sql.count(ANCHOR) != 1 or len(params) < 2 or "?" in sql[: sql.index(ANCHOR)]:
        return None
    sql = sql.replace(ANCHOR, f"{ANCHOR} AND {conditions.sql}")
    order = _order_by(sort, conditions)
    found = list(_ORDER_BY.finditer(sql))
    if order is not None and len(found) == 1 and "?" not in found[0]["order"]:
        sql = sql[: found[0].start("order")] + order + sql[found[0].end("order") :]
    return sql, (*params[:2], *conditions.params, *params[2:])


#: mongoeco's ORDER BY clause: up to its LIMIT, or the end of the statement.
_ORDER_BY: Final[re.Pattern[str]] = re.compile(
    r"(?P<order>ORDER BY .*?)(?=\s+LIMIT\s|\s*$)", re.DOTALL
)
