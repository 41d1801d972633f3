"""Reading operators' CSV files and writing result files, safely and without loading them whole.

Input: UTF-8 with or without a BOM, CRLF or LF, quoted fields with commas and newlines, blank
lines and trailing empty columns are all fine; a file that is not UTF-8 text or not a CSV table
is refused with a message saying why. Output: values a spreadsheet would run as a formula
(``=``, ``+``, ``-``, ``@`` first) are escaped, except plain numbers such as E.164 ones.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

SNIFF_BYTES: Final[int] = 64 * 1024
FORMULA_STARTS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final[re.Pattern[str]] = re.compile(r"^[+-]?\d+(\.\d+)?$")

csv.field_size_limit(1024 * 1024)


class CsvInputError(ValueError):
    """The file cannot be read as a UTF-8 CSV table; the message says why, in one line."""


def _check_text(head: bytes, name: str) -> None:
    """Refuse binary or non-UTF-8 files from their first bytes (the rest is checked as read)."""
    if b"\x00" in head:
        raise CsvInputError(f"{name} is not a CSV file: it contains binary data (NUL bytes)")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        decoder.decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise CsvInputError(
            f"{name} is not UTF-8 text (invalid byte at offset {exc.start}); "
            "save it as UTF-8 and submit it again"
        ) from None


class CsvReader:
    """Rows of a CSV file as ``(row_number, {column: value})``, streamed.

    ``row_number`` counts data rows from 1 (the header is row 0); blank lines are skipped but
    still counted as lines so messages can point at them.
    """

    def __init__(self, source: Path | IO[bytes], name: str | None = None) -> None:
        self._own = isinstance(source, Path)
        self._binary: IO[bytes] = source.open("rb") if isinstance(source, Path) else source
        self.name = name or (source.name if isinstance(source, Path) else "input")
        head = self._binary.read(SNIFF_BYTES)
        self._binary.seek(0)
        _check_text(head, self.name)
        self._text = io.TextIOWrapper(
            self._binary, encoding="utf-8-sig", errors="strict", newline=""
        )
        self._reader = csv.reader(self._text)
        self.header = self._read_header()

    def _next_record(self) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except UnicodeDecodeError as exc:
            raise CsvInputError(
                f"{self.name} is not UTF-8 text (invalid byte near line {self._reader.line_num}: "
                f"{exc.reason}); save it as UTF-8 and submit it again"
            ) from None
        except csv.Error as exc:
            raise CsvInputError(
                f"{self.name} is not a valid CSV file (line {self._reader.line_num}: {exc})"
            ) from None

    def _read_header(self) -> list[str]:
        while (record := self._next_record()) is not None:
            if any(cell.strip() for cell in record):
                header = [cell.strip() for cell in record]
                while header and not header[-1]:
                    header.pop()
                if "" in header:
                    raise CsvInputError(f"{self.name}: the header has an empty column name")
                duplicated = sorted({c for c in header if header.count(c) > 1})
                if duplicated:
                    raise CsvInputError(
                        f"{self.name}: the header repeats column(s) {', '.join(duplicated)}"
                    )
                return header
        raise CsvInputError(f"{self.name} is empty: it has no header row")

    def rows(self) -> Iterator[tuple[int, dict[str, str], str | None]]:
        """``(row_number, row, problem)``; ``problem`` names a structural fault of that row."""
        number = 0
        width = len(self.header)
        while (record := self._next_record()) is not None:
            if not any(cell.strip() for cell in record):
                continue
            number += 1
            problem = None
            extra = record[width:]
            if any(cell.strip() for cell in extra):
                problem = f"row has {len(record)} cells but the header has {width} columns"
            cells = record[:width] + [""] * (width - len(record))
            yield number, dict(zip(self.header, cells, strict=True)), problem

    def close(self) -> None:
        if self._own:
            self._text.close()
        else:
            self._text.detach()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def escape_cell(value: str) -> str:
    """Neutralize spreadsheet formulas; plain numbers (``+14155550100``, ``-3``) stay as is."""
    if value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterable[dict[str, str]]) -> int:
    """Write ``rows`` under ``columns`` with every cell escaped; returns the rows written."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([escape_cell(row.get(c, "") or "") for c in columns])
        count += 1
    return count
