"""Each collection's SQLite indexes cover only its own documents (9).

mongoeco keeps every collection in one ``documents`` table and builds an index of a collection
as an expression index on that whole table: ``CREATE INDEX idx_... ON documents (db_name,
coll_name, COALESCE(json_extract(document, ...)), ...)``. SQLite then evaluates every index of
every collection on every write of any document: with knm's twenty-odd indexes a job row or a
number written parses its JSON some sixty times, for index entries no query of that collection
ever reads.

Here an index is created partial, ``... WHERE db_name = 'knm' AND coll_name = 'numbers'``, so a
write maintains only its own collection's indexes. mongoeco's queries all say ``db_name = ? AND
coll_name = ?``; SQLite matches bound values against a partial index's condition (and prepares
the statement again when they change), so the same plans are chosen. Indexes of a store
written before are rebuilt partial once, one at a time, by a thread the engine starts when it
connects: the server answers meanwhile (a whole index is still a correct one), and a large
store's rebuild never holds up its start.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Final

#: mongoeco's statement creating a collection's index (``_sqlite_index_admin.create_index``).
_CREATE: Final[re.Pattern[str]] = re.compile(
    r'CREATE INDEX "(?P<name>idx_[0-9a-f]{16})" ON documents \((?P<columns>.*)\)', re.DOTALL
)

#: Physical index name -> (database, collection), for the indexes of this engine's file.
Scopes = dict[str, tuple[str, str]]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def scoped(sql: str, scopes: Scopes) -> str:
    """``sql`` limited to its collection's documents if it creates a known collection index."""
    match = _CREATE.fullmatch(sql.strip())
    if match is None or match["name"] not in scopes:
        return sql
    db_name, coll_name = scopes[match["name"]]
    return (
        f'CREATE INDEX "{match["name"]}" ON documents ({match["columns"]}) '
        f"WHERE db_name = {_literal(db_name)} AND coll_name = {_literal(coll_name)}"
    )


def unscoped(conn: sqlite3.Connection, scopes: Scopes) -> list[str]:
    """Record the store's collection indexes in ``scopes``; the statements that created those
    still built whole (by an older knm), to rebuild partial with :func:`rebuild`."""
    rows = conn.execute(
        "SELECT db_name, coll_name, physical_name FROM indexes WHERE physical_name IS NOT NULL"
    ).fetchall()
    pending: list[str] = []
    for db_name, coll_name, name in rows:
        scopes[str(name)] = (str(db_name), str(coll_name))
        found = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).fetchone()
        if found is not None and found[0] and scoped(found[0], scopes) != found[0]:
            pending.append(str(found[0]))
    return pending


def rebuild(conn: sqlite3.Connection, sql: str, scopes: Scopes) -> bool:
    """Drop the index ``sql`` created and create it partial, in one transaction; False when
    the connection is inside another transaction (left for a later start)."""
    match = _CREATE.fullmatch(sql.strip())
    if match is None or conn.in_transaction:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f'DROP INDEX "{match["name"]}"')
        conn.execute(scoped(sql, scopes))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return True
