"""What no entrance may store: public-field keys MongoDB misreads, and inputs past knm's limits.

Public-field keys (``$x``, ``a.b``, empty, NUL, at any depth) fail their number with 400
``invalid_field`` naming the path, in the CLI (``--set``/``--merge``) and in CSV jobs
(``opaque.*`` columns: the row fails, the chunk goes on); a stored document that is already
poisoned fails only its own row. The bounds: E.164's 15 digits, 64 KiB of public fields per
number, 64 KiB per CSV cell and 256 KiB per row (a refused row keeps only a cut of its cells),
chunks of at most 8 MiB of input, 10,000 numbers per in-process request, and a submitter that
streams. (A task's ``public_fields`` from another service: ``test_worker_garbage.py``.)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner, Result

from config.settings import Settings
from knm.cli.root import cli
from knm.domain.public_fields import MAX_PUBLIC_BYTES
from knm.services.csv_files import MAX_CELL_BYTES, MAX_ROW_BYTES
from knm.services.facade import Knm
from knm.services.jobs import CHUNK_MAX_BYTES, Job, JobStatus, JobStore, create_job, run_chunk
from knm.store.numbers import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "a1" * 16
N1, N2, N3 = "+14155550131", "+14155550132", "+14155550133"
HUGE = "1" * 20_001  # the review's 20,001-digit number

Run = Callable[..., Result]
Doc = dict[str, Any]


@pytest.fixture
def knm_cli(mongo_url: str, mongo_db: Database[Doc]) -> Run:
    """``knm ARGS`` in this process on this test's database; never a traceback."""
    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def run(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        if code is not None:
            assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def knm(mongo_db: Database[Doc]) -> Knm:
    store = Store(mongo_db)
    store.ensure_indexes()
    knm = Knm(store, Settings())
    knm.create_account(ACCOUNT, "Bounds", admin=True, allow_additions=True)
    return knm


def _failed(result: Result) -> dict[str, Doc]:
    failed: dict[str, Doc] = json.loads(result.stdout)["failed"]
    return failed


# ================================================================================ the CLI
@pytest.mark.parametrize(
    ("option", "fields", "path", "rule"),
    [
        ("--merge", {"$where": "x"}, '"$where"', "must not start with '$'"),
        ("--set", {"e911": {"street.address": "1 Main"}}, 'e911."street.address"', "'.'"),
        ("--merge", {"a": [{"b": {"$gt": 1}}]}, 'a[0].b."$gt"', "must not start with '$'"),
        ("--set", {"": 1}, '""', "must not be empty"),
        ("--merge", {"x": {"a\u0000b": 1}}, 'x."a\\u0000b"', "NUL"),
    ],
)
def test_a_key_mongodb_would_misread_is_a_clean_400_naming_its_path(
    knm_cli: Run, knm: Knm, option: str, fields: Doc, path: str, rule: str
) -> None:
    knm_cli("numbers", "create", N1, "--account", ACCOUNT, "--force")
    before = knm.store.find_numbers([N1])[N1]
    result = knm_cli("numbers", "update", N1, option, json.dumps(fields), "--json", code=1)
    error = _failed(result)[N1]
    assert (error["error"], error["code"]) == ("invalid_field", 400), error
    assert error["message"].startswith(f"invalid field {path}: "), error
    assert rule in error["message"], error
    assert error["cause"] == path
    assert knm.store.find_numbers([N1])[N1] == before  # nothing written


def test_the_table_output_names_the_path_without_a_traceback(knm_cli: Run) -> None:
    knm_cli("numbers", "create", N1, "--account", ACCOUNT, "--force")
    result = knm_cli("numbers", "update", N1, "--merge", '{"$where":"x"}', code=1)
    assert "invalid_field" in result.stdout
    assert "$where" in result.stdout
    assert "0 succeeded, 1 failed" in result.stdout


def test_public_fields_over_64_kib_are_refused_and_at_the_limit_taken(
    knm_cli: Run, knm: Knm
) -> None:
    knm_cli("numbers", "create", N1, N2, "--account", ACCOUNT, "--force")
    at_limit = {"note": "x" * (MAX_PUBLIC_BYTES - len('{"note":""}'))}
    knm_cli("numbers", "update", N1, "--set", json.dumps(at_limit), "--json")
    over = {"note": "x" * MAX_PUBLIC_BYTES}
    error = _failed(knm_cli("numbers", "update", N2, "--set", json.dumps(over), "--json", code=1))
    assert error[N2]["error"] == "invalid_field"
    assert f"more than the {MAX_PUBLIC_BYTES} allowed" in error[N2]["message"]
    assert "note" not in knm.store.find_numbers([N2])[N2]
    # a merge that would grow a number past the limit is refused the same way
    error = _failed(knm_cli("numbers", "update", N1, "--merge", '{"more": "y"}', "--json", code=1))
    assert error[N1]["error"] == "invalid_field"


def test_numbers_longer_than_e164_allows_are_not_reconcilable_and_never_stored(
    knm_cli: Run, knm: Knm
) -> None:
    fifteen = "+441234567890123"  # 15 digits: the longest E.164 number
    sixteen = "+4412345678901234"
    result = knm_cli(
        "numbers",
        "create",
        HUGE,
        sixteen,
        fifteen,
        "--account",
        ACCOUNT,
        "--force",
        "--json",
        code=1,
    )
    out = json.loads(result.stdout)
    assert out["failed"] == {
        HUGE: {"error": "not_reconcilable"},
        sixteen: {"error": "not_reconcilable"},
    }
    assert list(out["succeeded"]) == [fifteen]
    assert knm.store.numbers.count_documents({}) == 1


def test_the_in_process_cli_takes_at_most_10000_numbers_like_the_task_contract(
    knm_cli: Run, knm: Knm
) -> None:
    numbers = [f"+1415{n:07d}" for n in range(10_001)]
    result = knm_cli("numbers", "create", *numbers, "--account", ACCOUNT, "--force", code=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "at most 10,000 numbers per request (10,001 given)" in lines[0]
    assert knm.store.numbers.count_documents({}) == 0


# ================================================================================ CSV jobs
def _csv(*lines: str) -> io.BytesIO:
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def _run(knm: Knm, job: Job) -> Job:
    for chunk in range(job.chunks):
        run_chunk(knm, job.id, chunk)
    final = JobStore(knm).get(job.id)
    assert final is not None
    return final


def _errors(knm: Knm, job: Job) -> dict[str, str]:
    return {row["e164"]: row["error"] for row in JobStore(knm).result_rows(job.id)}


def test_an_opaque_dollar_column_fails_its_row_and_the_chunk_goes_on(knm: Knm) -> None:
    job = create_job(
        knm,
        "import",
        _csv("e164,opaque.$x,opaque.note", f"{N1},1,a", f"{N2},,b", f"{N3},,c"),
        account_id=ACCOUNT,
    )
    final = _run(knm, job)
    assert (final.status, final.succeeded, final.failed) == (JobStatus.PARTIAL, 2, 1)
    assert _errors(knm, job) == {N1: "bad field(s) opaque.$x", N2: "", N3: ""}
    assert set(knm.store.find_numbers([N1, N2, N3])) == {N2, N3}
    # the numbers it stored take later updates (nothing poisoned them)
    update = create_job(
        knm, "update_merge", _csv("e164,opaque.note", f"{N2},B", f"{N3},C"), account_id=ACCOUNT
    )
    assert _run(knm, update).status == JobStatus.SUCCEEDED
    assert knm.store.find_numbers([N2])[N2]["note"] == "B"


def test_a_poisoned_stored_document_fails_only_its_own_row(knm: Knm) -> None:
    """A number stored with a ``$`` key before knm refused them: pymongo refuses to write it
    back, which used to fail the whole chunk (every row ``applier crashed``)."""
    lines = ["e164,state", f"{N1},reserved", f"{N2},reserved", f"{N3},reserved"]
    imported = create_job(knm, "import", _csv(*lines), account_id=ACCOUNT)
    assert _run(knm, imported).status == JobStatus.SUCCEEDED
    doc = knm.store.numbers.find_one({"_id": N2})
    assert doc is not None
    knm.store.numbers.delete_one({"_id": N2})
    knm.store.numbers.insert_one({"$x": "1", **doc})  # as the old CSV import stored it

    rows = _csv("e164,opaque.note", f"{N1},x", f"{N2},y", f"{N3},z")
    for action, expected in (
        # a save that keeps the public fields as they are (result rows: message, then cause)
        ("assign_to", "database_error: field '$x' starts with '$'"),
        ("update_merge", "invalid field \"$x\": a key must not start with '$'"),
    ):
        rows.seek(0)
        job = create_job(knm, action, rows, account_id=ACCOUNT)
        final = _run(knm, job)
        assert (final.succeeded, final.failed) == (2, 1), (action, _errors(knm, job))
        assert _errors(knm, job)[N2] == expected, action
    # replacing its public fields repairs it
    repair = create_job(
        knm, "update_overwrite", _csv("e164,opaque.note", f"{N2},fixed"), account_id=ACCOUNT
    )
    assert _run(knm, repair).status == JobStatus.SUCCEEDED
    repaired = knm.store.find_numbers([N2])[N2]
    assert "$x" not in repaired
    assert repaired["note"] == "fixed"


def test_a_20001_digit_number_in_a_csv_is_not_reconcilable(knm: Knm) -> None:
    job = create_job(knm, "import", _csv("e164", HUGE, N1), account_id=ACCOUNT)
    final = _run(knm, job)
    assert (final.succeeded, final.failed) == (1, 1)
    rows = list(JobStore(knm).result_rows(job.id))
    assert rows[0]["error"] == "not_reconcilable"
    assert list(knm.store.find_numbers([N1])) == [N1]
    assert knm.store.numbers.count_documents({}) == 1


def test_an_oversized_cell_or_row_fails_that_row_and_keeps_only_a_cut_of_it(knm: Knm) -> None:
    cell = "c" * (MAX_CELL_BYTES + 1)
    wide = ",".join(["w" * 60_000] * 5)  # five cells within the cell limit, a row over 256 KiB
    job = create_job(
        knm,
        "import",
        _csv(
            "e164,opaque.a,opaque.b,opaque.c,opaque.d,opaque.e",
            f"{N1},{cell},,,,",
            f"{N2},{wide}",
            f"{N3},ok,,,,",
        ),
        account_id=ACCOUNT,
    )
    final = _run(knm, job)
    assert (final.succeeded, final.failed) == (1, 2)
    errors = _errors(knm, job)
    assert errors[N1] == f"cell opaque.a is {MAX_CELL_BYTES + 1} bytes, more than the 65536 allowed"
    row = 60_000 * 5 + len(N2)
    assert errors[N2] == f"row is {row} bytes, more than the {MAX_ROW_BYTES} allowed"
    assert errors[N3] == ""
    # what is kept of a refused row is small: a cut of each oversized cell, marked
    rows = {r["row"]: r for r in knm.store.db["job_rows"].find({"job_id": job.id})}
    assert rows[1]["input"]["opaque.a"] == f"{'c' * 64}... ({MAX_CELL_BYTES + 1} bytes)"
    assert len(json.dumps(rows[2]["input"])) < 1024


def test_chunks_are_cut_by_bytes_so_no_read_exceeds_what_a_reply_carries(knm: Knm) -> None:
    """Rows near the row limit: a chunk holds at most CHUNK_MAX_BYTES of them, whatever the
    chunk size, and every chunk and the results read back (the review's 51 MB CSV failed every
    row and its results forever with a message-size error)."""
    row_bytes = 200 * 1024
    rows_per_chunk = CHUNK_MAX_BYTES // row_bytes
    count = rows_per_chunk + 5
    cells = ",".join(["v" * (row_bytes // 4)] * 4)
    lines = ["e164,opaque.a,opaque.b,opaque.c,opaque.d"]
    lines += [f"+1415556{n:04d},{cells}" for n in range(count)]
    job = create_job(knm, "import", _csv(*lines), account_id=ACCOUNT, chunk_size=1000)
    assert job.chunks == 2
    first = knm.store.db["job_rows"].count_documents({"job_id": job.id, "chunk": 0})
    assert first * row_bytes <= CHUNK_MAX_BYTES < (first + 1) * row_bytes
    final = _run(knm, job)
    assert final.done == count
    # each row asks for 200 KiB of public fields: each fails alone, and the job finishes
    errors = set(_errors(knm, job).values())
    assert len(errors) == 1
    assert errors.pop().startswith("invalid field public_fields: ")
    assert len(list(JobStore(knm).result_rows(job.id))) == count


# ================================================================================ streaming
_PEAK = """
import resource, sys
from knm.cli.root import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _submit_peak_kb(env: dict[str, str], csv_path: Path) -> int:
    """``knm jobs submit import FILE`` in its own process; its peak resident memory (kB)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK,
            "jobs",
            "submit",
            "import",
            str(csv_path),
            "--account",
            ACCOUNT,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # no worker: publishing to the embedded broker succeeds, the job waits
    assert done.returncode == 0, done.stderr
    return int(done.stderr.strip().splitlines()[-1])


def test_submitting_a_large_csv_streams(knm: Knm, mongo_url: str, tmp_path: Path) -> None:
    """The submitter's memory does not grow with the file: rows are stored in batches of at
    most 1 MiB (it used to hold 1,000 rows at a time: 221 MB for a 51 MB file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env.update(
        {
            "KNM_MONGODB_URL": mongo_url,
            "KNM_MONGODB_DB": knm.store.db.name,
            "KNM_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": str(ROOT),
        }
    )
    small = tmp_path / "small.csv"
    small.write_text(f"e164,opaque.a\n{N1},x\n")
    big = tmp_path / "big.csv"
    cell = "b" * 60_000
    with big.open("w") as out:
        out.write("e164,opaque.a,opaque.b\n")
        for n in range(200):  # 24 MB of rows within every limit
            out.write(f"+1415557{n:04d},{cell},{cell}\n")
    baseline = _submit_peak_kb(env, small)
    peak = _submit_peak_kb(env, big)
    grown_mb = (peak - baseline) / 1024
    assert grown_mb < 12, f"submitting {big.stat().st_size / 1e6:.0f} MB grew by {grown_mb:.0f} MB"
