"""Reading operators' CSV files and writing result files, safely and without loading them whole.

Input: UTF-8 with or without a BOM, CRLF or LF, quoted fields with commas and newlines, blank
lines and trailing empty columns are all fine; a file that is not UTF-8 text or not a CSV table
is refused with a message saying why: an invalid UTF-8 byte or a NUL byte anywhere in the file
(with its byte offset and line), an unbalanced quote, an empty or repeated header name, a line or
a cell longer than ``PARSE_LIMIT`` (what the reader ever holds). A cell over ``MAX_CELL_BYTES``
or a row over ``MAX_ROW_BYTES`` fails only its row, whose oversized cells are cut short so that
what is kept of it stays small. Output:
values a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) are escaped,
except plain numbers such as E.164 ones.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

READ_BYTES: Final[int] = 64 * 1024
FORMULA_STARTS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final[re.Pattern[str]] = re.compile(r"^[+-]?\d+(\.\d+)?$")

#: The largest cell (UTF-8 bytes): a bigger one fails its row.
MAX_CELL_BYTES: Final[int] = 64 * 1024
#: The largest row, its cells together (UTF-8 bytes): a bigger one fails.
MAX_ROW_BYTES: Final[int] = 256 * 1024
#: The longest line or cell the reader holds (characters): a longer one refuses the file.
PARSE_LIMIT: Final[int] = 1024 * 1024
#: Characters kept of an oversized cell in a refused row (enough to find it in the file).
KEPT_OF_OVERSIZED: Final[int] = 64

csv.field_size_limit(PARSE_LIMIT)


class CsvInputError(ValueError):
    """The file cannot be read as a UTF-8 CSV table; the message says why, in one line."""


class _CheckedBytes(io.RawIOBase):
    """The source's bytes, refused at the first NUL byte or invalid UTF-8 sequence.

    Checking the bytes as they are read (not only the first ones) gives the exact byte offset
    and line of a fault anywhere in the file; ``TextIOWrapper`` decodes ahead in chunks, so its
    own errors would point at the wrong line.
    """

    def __init__(self, source: IO[bytes], name: str) -> None:
        super().__init__()
        self._source = source
        self._name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._offset = 0  # bytes read so far
        self._lines = 0  # newlines among them

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        nul = data.find(b"\x00")
        if nul >= 0:
            raise CsvInputError(
                f"{self._name} is not a CSV file: it contains binary data "
                f"(a NUL byte at offset {self._offset + nul}, {self._line(data, nul)})"
            )
        pending = len(self._decoder.getstate()[0])  # a split character's first bytes
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            offset = self._offset - pending + exc.start
            bad = exc.object[exc.start : exc.start + 1].hex() or "?"
            raise CsvInputError(
                f"{self._name} is not UTF-8 text (byte 0x{bad} at offset {offset}, "
                f"{self._line(data, exc.start - pending)}: {exc.reason}); "
                "save it as UTF-8 and submit it again"
            ) from None
        self._offset += len(data)
        self._lines += data.count(b"\n")
        buffer[: len(data)] = data
        return len(data)

    def _line(self, data: bytes, at: int) -> str:
        """``line N`` of the byte at ``data[at]`` (a negative ``at``: before ``data``)."""
        before = data.count(b"\n", 0, max(at, 0))
        return f"line {self._lines + before + 1}"


class CsvReader:
    """Rows of a CSV file as ``(row_number, {column: value})``, streamed.

    ``row_number`` counts data rows from 1 (the header is row 0); blank lines are skipped but
    still counted as lines so messages can point at them.
    """

    def __init__(self, source: Path | IO[bytes], name: str | None = None) -> None:
        self._own = isinstance(source, Path)
        self._binary: IO[bytes] = source.open("rb") if isinstance(source, Path) else source
        self.name = name or (source.name if isinstance(source, Path) else "input")
        checked = io.BufferedReader(_CheckedBytes(self._binary, self.name), READ_BYTES)
        self._text = io.TextIOWrapper(checked, encoding="utf-8-sig", errors="strict", newline="")
        # strict: an unbalanced quote is an error, not a cell that swallows the rest of the file
        self._reader = csv.reader(self._lines(), strict=True)
        self._line_no = 0
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def _lines(self) -> Iterator[str]:
        """The text's lines, none longer than ``PARSE_LIMIT`` (one long line is never held)."""
        while line := self._text.readline(PARSE_LIMIT + 1):
            self._line_no += 1
            if len(line) > PARSE_LIMIT:
                raise CsvInputError(
                    f"{self.name}: line {self._line_no} is longer than {PARSE_LIMIT} characters "
                    f"(a cell may hold at most {MAX_CELL_BYTES} bytes)"
                )
            yield line

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
            if "field limit" in str(exc):
                raise CsvInputError(
                    f"{self.name}: line {self._reader.line_num} has a cell longer than "
                    f"{PARSE_LIMIT} characters (a cell may hold at most {MAX_CELL_BYTES} bytes)"
                ) from None
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
            row = dict(zip(self.header, cells, strict=True))
            oversized = size_problem(row)
            if oversized is not None:
                problem = oversized
                row = {c: v if len(v) <= KEPT_OF_OVERSIZED else _cut(v) for c, v in row.items()}
            yield number, row, problem

    def close(self) -> None:
        """Close the file it opened; a caller's stream is left open."""
        if self._text.closed:
            return
        if self._own:
            self._binary.close()
        self._text.close()  # closes only the checking layers when the stream is the caller's

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def utf8_len(value: str) -> int:
    """The UTF-8 size of ``value`` (without encoding plain ASCII)."""
    return len(value) if value.isascii() else len(value.encode("utf-8"))


def row_bytes(row: Mapping[str, str]) -> int:
    """The UTF-8 size of a row's column names and cells."""
    return sum(utf8_len(column) + utf8_len(value) for column, value in row.items())


def size_problem(row: dict[str, str]) -> str | None:
    """Why ``row`` is too big to take (a cell over ``MAX_CELL_BYTES``, the row over
    ``MAX_ROW_BYTES``), or None."""
    total = 0
    for column, value in row.items():
        size = utf8_len(value)
        if size > MAX_CELL_BYTES:
            return f"cell {column} is {size} bytes, more than the {MAX_CELL_BYTES} allowed"
        total += size
    if total > MAX_ROW_BYTES:
        return f"row is {total} bytes, more than the {MAX_ROW_BYTES} allowed"
    return None


def _cut(value: str) -> str:
    """The start of an oversized cell, marked as cut (a refused row keeps this much)."""
    return f"{value[:KEPT_OF_OVERSIZED]}... ({utf8_len(value)} bytes)"


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
