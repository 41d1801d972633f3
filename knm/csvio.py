"""Reading operators' CSV files and writing result files, safely and without loading them whole.

Input: UTF-8 with or without a BOM, CRLF or LF, quoted fields with commas and newlines, blank
lines and trailing empty columns are all fine; a file that is not UTF-8 text or not a CSV table
is refused with a message saying why: an invalid UTF-8 byte or a NUL byte anywhere in the file
(with its byte offset and line), an unbalanced quote, an empty or repeated header name. Output:
values a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` first) are escaped,
except plain numbers such as E.164 ones.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Final

READ_BYTES: Final[int] = 64 * 1024
FORMULA_STARTS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER: Final[re.Pattern[str]] = re.compile(r"^[+-]?\d+(\.\d+)?$")

csv.field_size_limit(1024 * 1024)


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
        self._reader = csv.reader(self._text, strict=True)
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

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
