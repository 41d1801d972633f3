"""The first row on which each number of a streaming CSV appeared, in flat memory.

A job's rows are checked for duplicates while the file streams in. Holding every number seen in
a dict costs ~135 bytes a row (13 MB at 100,000 rows, growing with the file); a private
temporary SQLite database keeps the same index on disk behind a small page cache, so the
submitter's (and the HTTP API's) memory stays flat whatever the file's size.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType


class FirstRows:
    """``first(number, row)`` answers the row on which ``number`` first appeared."""

    def __init__(self) -> None:
        # "" opens a private temporary database: on disk past SQLite's page cache, deleted on close.
        self._db = sqlite3.connect("")
        self._db.execute(
            "CREATE TABLE first_row (number TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID"
        )

    def first(self, number: str, row: int) -> int:
        """``row`` if ``number`` is new (it is remembered), else the row it was first seen on."""
        if self._db.execute(
            "INSERT OR IGNORE INTO first_row VALUES (?, ?)", (number, row)
        ).rowcount:
            return row
        found = self._db.execute("SELECT row FROM first_row WHERE number = ?", (number,)).fetchone()
        return int(found[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FirstRows:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
