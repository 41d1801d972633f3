"""knm.csvio: reading operators' CSV files (streamed, strict about text) and writing results."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from knm.services.csv_files import CsvInputError, CsvReader, escape_cell, write_csv

Rows = list[tuple[int, dict[str, str], str | None]]


def read(data: bytes, name: str = "in.csv") -> tuple[list[str], Rows]:
    with CsvReader(io.BytesIO(data), name=name) as reader:
        return reader.header, list(reader.rows())


def refused(data: bytes, name: str = "in.csv") -> str:
    with pytest.raises(CsvInputError) as caught:
        read(data, name)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------ text
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no-bom", "bom"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_utf8_with_or_without_bom_and_any_line_end(bom: bytes, newline: bytes) -> None:
    text = newline.join([b"e164,cnam.outbound", "+14155550100,Café Ünïcode".encode(), b""])
    header, rows = read(bom + text)
    assert header == ["e164", "cnam.outbound"]  # no BOM glued to the first column
    assert rows == [(1, {"e164": "+14155550100", "cnam.outbound": "Café Ünïcode"}, None)]


def test_quoted_fields_keep_commas_newlines_and_quotes() -> None:
    data = (
        b"e164,e911.street_address,cnam.outbound\r\n"
        b'+14155550100,"140 Main St, Suite 200","Acme ""HQ"""\r\n'
        b'+14155550101,"line one\r\nline two",plain\r\n'
    )
    _, rows = read(data)
    assert [r[1] for r in rows] == [
        {
            "e164": "+14155550100",
            "e911.street_address": "140 Main St, Suite 200",
            "cnam.outbound": 'Acme "HQ"',
        },
        {
            "e164": "+14155550101",
            "e911.street_address": "line one\r\nline two",
            "cnam.outbound": "plain",
        },
    ]
    assert [r[0] for r in rows] == [1, 2]  # a quoted newline does not start a row


def test_blank_lines_are_skipped_and_rows_numbered_without_them() -> None:
    data = b"\n\n  \ne164,a\n\n1,x\n,\n   ,  \n2,y\n\n"
    header, rows = read(data)
    assert header == ["e164", "a"]
    assert rows == [(1, {"e164": "1", "a": "x"}, None), (2, {"e164": "2", "a": "y"}, None)]


def test_trailing_empty_columns_short_rows_and_padding() -> None:
    data = b"e164,a,b,,\n1,x\n2,x,y,,,\n3\n"
    header, rows = read(data)
    assert header == ["e164", "a", "b"]  # empty trailing header cells dropped
    assert rows == [
        (1, {"e164": "1", "a": "x", "b": ""}, None),  # missing cells padded
        (2, {"e164": "2", "a": "x", "b": "y"}, None),  # extra empty cells ignored
        (3, {"e164": "3", "a": "", "b": ""}, None),
    ]


def test_extra_non_empty_cells_flag_the_row_only() -> None:
    _, rows = read(b"e164,a\n1,x\n2,x,surprise\n3,z\n")
    assert rows[0][2] is None
    assert rows[1] == (
        2,
        {"e164": "2", "a": "x"},
        "row has 3 cells but the header has 2 columns",
    )
    assert rows[2][2] is None


def test_header_names_are_trimmed() -> None:
    header, _ = read(b" e164 , cnam.outbound \n1,2\n")
    assert header == ["e164", "cnam.outbound"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"e164,a,e164\n1,2,3\n", "in.csv: the header repeats column(s) e164"),
        (b"e164,a,a,b,b\n", "in.csv: the header repeats column(s) a, b"),
        (b"e164,,a\n1,2,3\n", "in.csv: the header has an empty column name"),
    ],
)
def test_duplicate_or_empty_header_names_are_refused(data: bytes, expected: str) -> None:
    assert refused(data) == expected


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\r\n  \n", b",,,\n , \n"])
def test_empty_file_is_refused(data: bytes) -> None:
    assert refused(data) == "in.csv is empty: it has no header row"


def test_nul_bytes_are_refused_at_the_start() -> None:
    message = refused(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert message == (
        "in.csv is not a CSV file: it contains binary data (a NUL byte at offset 8, line 3)"
    )


def test_nul_bytes_are_refused_anywhere_with_offset_and_line() -> None:
    body = b"e164\n" + b"+14155550100\n" * 20_000  # well past the first read
    message = refused(body + b"+1415\x00\n")
    assert message == (
        "in.csv is not a CSV file: it contains binary data "
        f"(a NUL byte at offset {len(body) + 5}, line 20002)"
    )


def test_latin1_is_refused_with_offset_and_line() -> None:
    assert refused("e164,cnam.outbound\n+14155550100,Café\n".encode("latin-1")) == (
        "in.csv is not UTF-8 text (byte 0xe9 at offset 35, line 2: invalid continuation byte); "
        "save it as UTF-8 and submit it again"
    )


def test_latin1_far_into_the_file_is_refused_at_the_right_line() -> None:
    body = b"e164,cnam.outbound\n" + "+14155550100,Zoë\n".encode() * 10_000
    message = refused(body + "+14155550101,Zoë\n".encode("latin-1"))
    offset = len(body) + len("+14155550101,Zo")
    assert f"(byte 0xeb at offset {offset}, line 10002: " in message
    assert message.startswith("in.csv is not UTF-8 text")


def test_a_character_split_across_reads_is_fine_and_a_cut_one_is_not() -> None:
    # 80 kB in two cells (each under the cell limit): the 64 kB reads split an é
    body = b"e164,a,bb\n" + b"1," + "é".encode() * 20_000 + b"," + "é".encode() * 20_000 + b"\n"
    assert body[: 64 * 1024].decode("utf-8", errors="replace").endswith("\ufffd")  # split
    _, rows = read(body)
    assert rows[0][1]["a"] == rows[0][1]["bb"] == "é" * 20_000
    message = refused(b"e164\ncaf\xc3")
    assert "(byte 0xc3 at offset 8, line 2: unexpected end of data)" in message


def test_unbalanced_quotes_are_refused_instead_of_swallowing_rows() -> None:
    message = refused(b'e164,a\n1,"open\n2,x\n3,y\n')
    assert message.startswith("in.csv is not a valid CSV file (line 4: ")
    assert "unexpected end of data" in message
    assert "',' expected after '\"'" in refused(b'e164,a\n1,"x"y\n')


def test_a_path_source_is_opened_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_bytes(b"e164\n+14155550100\n")
    reader = CsvReader(path)
    assert reader.name == "numbers.csv"
    assert [r[1] for r in reader.rows()] == [{"e164": "+14155550100"}]
    reader.close()
    reader.close()  # twice is fine


def test_a_callers_stream_stays_open() -> None:
    stream = io.BytesIO(b"e164\n1\n")
    with CsvReader(stream) as reader:
        assert reader.name == "input"
        list(reader.rows())
    assert not stream.closed


# ------------------------------------------------------------------------------ streaming
def test_a_50_mb_file_streams_in_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    # wide rows (~500 bytes) keep the row count, and so the test's time, down
    note = "x" * 380
    row = "+1{:010d},Acme Corporation {:d},true,140 Main St Suite 200,San Francisco,CA,{:05d},{}\n"
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("e164,cnam.outbound,cnam.inbound,e911.street_address,e911.locality,")
        out.write("e911.region,e911.postal_code,opaque.note\n")
        written = 0
        n = 0
        while written < 50 * 1024 * 1024:
            written += out.write(row.format(4155550000 + n, n, n % 100_000, note))
            n += 1
    size = path.stat().st_size
    assert size >= 50 * 1024 * 1024

    tracemalloc.start()
    try:
        count = 0
        last: dict[str, str] = {}
        with CsvReader(path) as reader:
            for number, cells, problem in reader.rows():
                assert problem is None
                count = number
                last = cells
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        path.unlink()
    assert count == n
    assert last["e164"] == f"+1{4155550000 + n - 1:010d}"
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    assert peak < size / 10


# ------------------------------------------------------------------------------ writing
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+14155550100", "+14155550100"),  # an E.164 number stays a number
        ("-3", "-3"),
        ("+1.5", "+1.5"),
        ("4155550100", "4155550100"),
        ("", ""),
        ("Acme, Inc.", "Acme, Inc."),
        ("a=b", "a=b"),
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+cmd", "'+cmd"),
        ("+1 415 555 0100", "'+1 415 555 0100"),
        ("-x", "'-x"),
        ("-", "'-"),
        ("@x", "'@x"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
    ],
)
def test_escape_cell(value: str, expected: str) -> None:
    assert escape_cell(value) == expected


def test_write_csv_escapes_quotes_and_fills_missing_columns() -> None:
    out = io.StringIO(newline="")
    count = write_csv(
        out,
        ["e164", "cnam.outbound", "error"],
        [
            {"e164": "+14155550100", "cnam.outbound": "=HYPERLINK(x)", "error": ""},
            {"e164": "bad", "error": 'bad field(s) account_id, "x"'},
        ],
    )
    assert count == 2
    assert out.getvalue() == (
        "e164,cnam.outbound,error\r\n"
        "+14155550100,'=HYPERLINK(x),\r\n"
        'bad,,"bad field(s) account_id, ""x"""\r\n'
    )
