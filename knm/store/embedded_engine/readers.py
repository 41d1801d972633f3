"""Pooled SQLite connections (13): a closed reader connection is kept for the next reader.

mongoeco opens a dedicated SQLite connection for every read that may return more than one
document (each aggregation, most finds) and closes it when the read ends. A new connection
costs more than the read it serves: the connect, its pragmas and functions, and SQLite parsing
the whole schema again on its first statement. Here ``close`` hands the connection back
instead, as a new one would start: its cursors closed, its transaction rolled back, no progress
handler (mongoeco's statement deadline) and no catalog cached (mongoeco's own ``close`` clears
those). The engine's write connection is never pooled.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from knm.store.embedded_engine.support import _CountingConnection


class ReaderPool:
    """Idle connections, at most :attr:`SIZE`; the rest close for real.

    A connection is kept only while the schema it was opened on stands (no index or collection
    created or dropped since): SQLite re-prepares a cached statement when the schema changes,
    but a reader's statement prepared before an index was dropped and created again was seen to
    read the old index (nothing found), so a connection that lived through a schema change
    closes, and the next reader opens a new one.
    """

    #: Readers open at once beyond this many close when they end (a long listing's cursor).
    SIZE: Final[int] = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_CountingConnection] = []
        self._open = True

    def __len__(self) -> int:
        """Idle connections now."""
        with self._lock:
            return len(self._idle)

    def adopt(self, conn: _CountingConnection) -> None:
        """Make a new connection ``conn`` one this pool keeps when it closes."""
        conn.schema_seen = schema_version(conn)
        conn.pool = self

    def take(self) -> _CountingConnection | None:
        """An idle connection, or None when there is none (the caller connects)."""
        while True:
            with self._lock:
                if not self._open or not self._idle:
                    return None
                conn = self._idle.pop()
            if self._schema_stands(conn):
                return conn
            conn.pool = None
            conn.close()

    def give_back(self, conn: _CountingConnection) -> bool:
        """Keep ``conn`` for the next reader, reset; False when it must close for real."""
        try:
            conn.set_progress_handler(None, 0)  # first: an expired deadline would stop the rest
            conn.close_cursors()
            if conn.in_transaction:
                conn.rollback()
        except sqlite3.Error:
            return False
        if conn.in_transaction or not self._schema_stands(conn):
            return False
        conn.forget_catalogs()
        with self._lock:
            if not self._open or len(self._idle) >= self.SIZE:
                return False
            self._idle.append(conn)
            return True

    def reopen(self) -> None:
        with self._lock:
            self._open = True

    def drain(self) -> None:
        """Close every idle connection for real; until :meth:`reopen`, none is kept."""
        with self._lock:
            self._open = False
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.pool = None
            conn.close()

    @staticmethod
    def _schema_stands(conn: _CountingConnection) -> bool:
        try:
            return schema_version(conn) == conn.schema_seen
        except sqlite3.Error:
            return False


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema cookie: it changes with every index or table created or dropped."""
    cursor = conn.execute("PRAGMA schema_version")
    try:
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()
