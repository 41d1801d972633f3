"""``knm jobs submit|status|results|list`` end to end, with real workers.

A real worker subprocess (``python -m knm worker --pool solo``) consumes a real Redis broker (db
``BROKER_DB``, flushed when the module starts) and writes to this module's database on the
MongoDB wire server; the CLI runs in process with the same environment. The worker is shared by
the module's tests (it takes seconds to start), so each test uses its own account and numbers.

The last test runs everything embedded: no ``KNM_BROKER_URL``, no ``KNM_MONGODB_URL``, only a
``KNM_DATA_DIR``, and submits ``examples/numbers.csv`` as the README tells an operator to.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from typer.testing import CliRunner, Result

from knm.cli.root import cli
from knm.services.jobs import RESULT_HEADER
from knm.store import embedded
from tests import workers_rig as rig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "numbers.csv"
BROKER_DB = 10  # this module's Redis database
IDLE_BROKER_DB = 11  # a broker nobody consumes
READY_TIMEOUT_S = 90.0
JOB_TIMEOUT = "120"

Run = Callable[..., Result]


# ------------------------------------------------------------------------------ helpers
def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}


def _redis_db(redis_url: str, db: int) -> str:
    return rig.empty_redis_db(redis_url, db)


def _runner(env: dict[str, str | None]) -> Run:
    runner = CliRunner()

    def run(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        if code is not None:
            assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "knm", "worker", "--pool", "solo", "--loglevel", "INFO"]
    cmd += ["--hostname", f"knm-jobs-{uuid.uuid4().hex[:6]}@%h"]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    while " ready." not in log.read_text(errors="replace"):
        code = proc.poll()
        assert code is None, f"worker exited with {code}:\n{log.read_text(errors='replace')}"
        elapsed = time.monotonic() - started
        assert elapsed < READY_TIMEOUT_S, f"worker not ready:\n{log.read_text(errors='replace')}"
        time.sleep(0.1)
    return time.monotonic() - started


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def account_id(label: str) -> str:
    return (label + uuid.uuid4().hex)[:32]


def write_csv_file(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def module_db(mongo_client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[str]:
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def env(
    mongo_url: str, module_db: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of the worker and of the CLI."""
    return {
        **_clean_env(),
        "KNM_BROKER_URL": _redis_db(redis_url, BROKER_DB),
        "KNM_MONGODB_URL": mongo_url,
        "KNM_MONGODB_DB": module_db,
        "KNM_DATA_DIR": str(tmp_path_factory.mktemp("knm-jobs-data")),
    }


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real ``knm worker`` for the module; its log path."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = _start_worker(env, log)
    try:
        ready = _wait_ready(proc, log)
        print(f"worker ready in {ready:.1f} s")
        yield log
    finally:
        _stop(proc)


@pytest.fixture
def knm_cli(env: dict[str, str]) -> Run:
    return _runner(dict(env))


@pytest.fixture
def db(mongo_client: pymongo.MongoClient[dict[str, Any]], module_db: str) -> Any:
    return mongo_client[module_db]


# ------------------------------------------------------------------------------ worker path
def test_submit_wait_json_status_results_and_list(
    worker: Path, knm_cli: Run, db: Any, tmp_path: Path
) -> None:
    owner = account_id("jobs")
    knm_cli("accounts", "create", owner, "--name", "Acme, Inc.", "--allow-additions")
    source = write_csv_file(
        tmp_path / "numbers.csv",
        # knm_inventory: billable numbers may use paid features (CNAM, E911); local ones may not
        "e164,carrier_module,account_id,cnam.outbound,e911.street_address",
        '+14155551000,knm_inventory,,Acme,"140 Main St, Suite 200"',
        "4155551001,,,,",
        "14155551002,,,,",
        "+14155551003,,not-an-account,=HYPERLINK(evil),",  # a bad cell, a formula
        "+14155551004,,,,",
        "4155551000,,,,",  # a duplicate of the first row
    )
    result = knm_cli(
        "jobs",
        "submit",
        "import",
        str(source),
        "--account",
        owner,
        "--chunk-size",
        "2",
        "--wait",
        "--json",
        "--timeout",
        JOB_TIMEOUT,
        code=1,  # partial
    )
    job = json.loads(result.stdout)  # nothing else on stdout
    assert {k: job[k] for k in ("action", "status", "rows", "done", "succeeded", "failed")} == {
        "action": "import",
        "status": "partial",
        "rows": 6,
        "done": 6,
        "succeeded": 4,
        "failed": 2,
    }
    assert (job["account_id"], job["auth_account_id"], job["source"]) == (
        owner,
        "system",
        "numbers.csv",
    )
    assert (job["chunks"], job["chunks_done"], job["chunk_size"]) == (3, 3, 2)
    assert job["started"] is not None
    assert job["finished"] is not None
    assert "storing rows 6 " in result.stderr  # rows stored, then rows done / rows
    assert "6/6" in result.stderr
    stored = db.numbers.find_one({"_id": "+14155551000"})
    assert stored["pvt_assigned_to"] == owner
    assert stored["e911"] == {"street_address": "140 Main St, Suite 200"}

    # status
    status = knm_cli("jobs", "status", job["id"], "--json")
    assert json.loads(status.stdout) == job
    table = knm_cli("jobs", "status", job["id"]).stdout
    assert job["id"] in table
    assert "partial" in table

    # results, to a file and to stdout
    out = tmp_path / "out.csv"
    written = knm_cli("jobs", "results", job["id"], "-o", str(out))
    assert written.stdout.strip() == f"wrote 6 result rows to {out}"
    content = out.read_bytes().decode("utf-8")
    # the same bytes on stdout (Result.stdout would turn CRLF into LF)
    assert knm_cli("jobs", "results", job["id"]).stdout_bytes == out.read_bytes()
    assert content.startswith(",".join(RESULT_HEADER) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(content, newline="")))
    assert [r["e164"] for r in rows] == [
        "+14155551000",
        "+14155551001",
        "+14155551002",
        "+14155551003",
        "+14155551004",
        "4155551000",
    ]
    assert [r["error"] for r in rows] == [
        "",
        "",
        "",
        "bad field(s) account_id",
        "",
        "duplicate of row 1 (+14155551000)",
    ]
    first = rows[0]
    assert (first["account_id"], first["account_name"]) == (owner, "Acme, Inc.")
    assert (first["state"], first["carrier_module"]) == ("in_service", "knm_inventory")
    assert first["cnam.outbound"] == "Acme"  # the CNAM feature was activated on import
    assert rows[3]["cnam.outbound"] == "'=HYPERLINK(evil)"  # escaped for spreadsheets
    assert "'+" not in content  # E.164 numbers are not

    # list
    listed = json.loads(knm_cli("jobs", "list", "--json").stdout)
    assert job["id"] in [j["id"] for j in listed]
    assert job["id"] in knm_cli("jobs", "list").stdout


def test_submit_a_listing_job_that_succeeds_exits_0(
    worker: Path, knm_cli: Run, tmp_path: Path
) -> None:
    owner = account_id("lister")
    knm_cli("accounts", "create", owner, "--name", "Lister", "--allow-additions")
    knm_cli("numbers", "create", "+14155552000", "+14155552001", "--account", owner)
    result = knm_cli(
        "jobs", "submit", "list", "--account", owner, "--wait", "--timeout", JOB_TIMEOUT
    )
    lines = result.stdout.strip().splitlines()
    job_id = lines[0]
    assert len(job_id) == 32
    assert lines[-1] == f"job {job_id} succeeded: 2 rows, 2 succeeded, 0 failed"
    rows = list(csv.DictReader(io.StringIO(knm_cli("jobs", "results", job_id).stdout)))
    assert [(r["e164"], r["state"]) for r in rows] == [
        ("+14155552000", "in_service"),
        ("+14155552001", "in_service"),
    ]


def test_submit_without_wait_prints_the_id_and_the_worker_finishes_it(
    worker: Path, knm_cli: Run, tmp_path: Path
) -> None:
    owner = account_id("nowait")
    knm_cli("accounts", "create", owner, "--name", "No Wait", "--allow-additions")
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155553000", "+14155553001")
    result = knm_cli("jobs", "submit", "import", str(source), "--account", owner)
    job_id = result.stdout.strip()
    assert len(job_id) == 32
    deadline = time.monotonic() + float(JOB_TIMEOUT)
    while True:
        job = json.loads(knm_cli("jobs", "status", job_id, "--json").stdout)
        if job["status"] in ("succeeded", "partial", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (job["status"], job["succeeded"]) == ("succeeded", 2)

    # --json without --wait: the job as stored, not finished yet or not
    again = json.loads(
        knm_cli("jobs", "submit", "release", str(source), "--account", owner, "--json").stdout
    )
    assert (again["action"], again["rows"]) == ("release", 2)
    assert again["status"] in ("pending", "running", "succeeded")


# ------------------------------------------------------------------------------ refusals
@pytest.fixture
def refusals(env: dict[str, str], tmp_path: Path, knm_cli: Run) -> tuple[Run, str, Path]:
    owner = account_id("refused")
    knm_cli("accounts", "create", owner, "--name", "Refused")
    return knm_cli, owner, tmp_path


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (
            ("import", "{file}"),
            b"number,cnam.outbound\n+14155554000,x\n",
            "missing mandatory column(s): e164 (the header has: number, cnam.outbound)",
        ),
        (("frobnicate", "{file}"), b"e164\n", "unknown action 'frobnicate': expected one of"),
        (("import", "{file}"), "e164\n+1415555400é\n".encode("latin-1"), "is not UTF-8 text"),
        (("import", "{file}"), b"\x89PNG\r\n\x1a\n\x00\x00", "in.csv is not a CSV file"),
        (("import", "{file}"), b"", "in.csv is empty: it has no header row"),
        (("import", "{file}"), b'e164\n"+1415\n', "in.csv is not a valid CSV file"),
        (("import",), None, "action import needs a CSV file"),
        (("import", "{missing}"), None, "no such file"),
        (("dump", "{file}"), b"e164\n", "action dump takes no CSV file"),
    ],
)
def test_refused_jobs_exit_2_with_one_line_and_leave_nothing(
    refusals: tuple[Run, str, Path],
    db: Any,
    env: dict[str, str],
    args: tuple[str, ...],
    content: bytes | None,
    message: str,
) -> None:
    run, owner, tmp_path = refusals
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_bytes(content)
    before = db.jobs.count_documents({}), db.job_rows.count_documents({})
    argv = [a.format(file=source, missing=tmp_path / "missing.csv") for a in args]
    result = run("jobs", "submit", *argv, "--account", owner, "--wait", code=2)
    assert message in one_line_error(result)
    assert result.stdout == ""
    assert (db.jobs.count_documents({}), db.job_rows.count_documents({})) == before


def test_bad_options_exit_2(refusals: tuple[Run, str, Path]) -> None:
    run, owner, tmp_path = refusals
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155554000")
    assert "--account" in one_line_error(run("jobs", "submit", "import", str(source), code=2))
    line = one_line_error(run("jobs", "submit", "import", str(source), "--account", "x", code=2))
    assert "account id must be 32" in line
    nobody = account_id("nobody")
    line = one_line_error(run("jobs", "submit", "import", str(source), "--account", nobody, code=2))
    assert line.endswith(f"account {nobody} does not exist")
    line = one_line_error(
        run("jobs", "submit", "import", str(source), "--account", owner, "--auth-by", "x", code=2)
    )
    assert "--auth-by must be 'system' or an account id" in line
    line = one_line_error(
        run(
            "jobs", "submit", "import", str(source), "--account", owner, "--chunk-size", "0", code=2
        )
    )
    assert "--chunk-size" in line


def test_unknown_jobs_exit_1(knm_cli: Run) -> None:
    for command in ("status", "results"):
        line = one_line_error(knm_cli("jobs", command, "0" * 32, code=1))
        assert line == f"knm: error: job {'0' * 32} does not exist"


@pytest.mark.timeout(90)  # a hang guard: the consumers are asked for one second
def test_wait_with_no_worker_says_so_at_once(
    env: dict[str, str], redis_url: str, tmp_path: Path, db: Any
) -> None:
    idle = _runner({**env, "KNM_BROKER_URL": _redis_db(redis_url, IDLE_BROKER_DB)})
    owner = account_id("nobody")
    idle("accounts", "create", owner, "--name", "Nobody", "--allow-additions")
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155555100")
    before = db.jobs.count_documents({})
    result = idle("jobs", "submit", "import", str(source), "--account", owner, "--wait", code=1)
    assert one_line_error(result) == (
        "knm: error: no worker consumes queue knm: start one with 'knm worker', then submit "
        "again (nothing was submitted)"
    )
    assert db.jobs.count_documents({}) == before
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{IDLE_BROKER_DB}")
    try:
        assert client.llen("knm") == 0
    finally:
        client.close()


def test_wait_with_no_worker_on_the_embedded_broker_says_so_at_once(
    env: dict[str, str], tmp_path: Path, db: Any
) -> None:
    embedded = _runner({**env, "KNM_BROKER_URL": None, "KNM_DATA_DIR": str(tmp_path / "data")})
    owner = account_id("nobodyfs")
    embedded("accounts", "create", owner, "--name", "Nobody", "--allow-additions")
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155555200")
    before = db.jobs.count_documents({})
    result = embedded("jobs", "submit", "import", str(source), "--account", owner, "--wait", code=1)
    assert "no worker consumes queue knm" in one_line_error(result)
    assert db.jobs.count_documents({}) == before


@pytest.mark.timeout(90)  # a hang guard: --wait gives up after its --timeout
def test_wait_gives_up_after_the_timeout_when_no_worker_runs(
    env: dict[str, str],
    redis_url: str,
    tmp_path: Path,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker that cannot tell its consumers (or a worker that never takes the job): --wait
    waits for --timeout, then says where the job stands."""
    from knm.cli import jobs as jobs_command

    monkeypatch.setattr(jobs_command, "_job_consumers", lambda: None)
    idle = _runner({**env, "KNM_BROKER_URL": _redis_db(redis_url, IDLE_BROKER_DB)})
    owner = account_id("idle")
    idle("accounts", "create", owner, "--name", "Idle", "--allow-additions")
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155555000")
    result = idle(
        "jobs",
        "submit",
        "import",
        str(source),
        "--account",
        owner,
        "--wait",
        "--timeout",
        "1",
        code=1,
    )
    job_id = result.stdout.strip()
    # rows stored, the bar as it stood, then the error
    stored, progress, line = result.stderr.strip().splitlines()
    assert stored.startswith("storing rows 1 ")
    assert "0/1 rows" in progress
    assert line.startswith(f"knm: error: job {job_id} not finished after 1 s: pending, 0 of 1")
    assert "start one with 'knm worker'" in line
    assert db.jobs.find_one({"_id": job_id})["status"] == "pending"  # it goes on
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{IDLE_BROKER_DB}")
    try:
        assert client.llen("knm") == 1  # its one chunk, waiting for a worker
    finally:
        client.close()


def test_an_unreachable_broker_leaves_no_job(
    env: dict[str, str], tmp_path: Path, db: Any, knm_cli: Run
) -> None:
    owner = account_id("nobroker")
    knm_cli("accounts", "create", owner, "--name", "No Broker", "--allow-additions")
    source = write_csv_file(tmp_path / "in.csv", "e164", "+14155556000")
    before = db.jobs.count_documents({})
    run = _runner({**env, "KNM_BROKER_URL": "redis://:secret@127.0.0.1:9/0"})
    line = one_line_error(run("jobs", "submit", "import", str(source), "--account", owner, code=1))
    assert line.startswith("knm: error: broker error at redis://:***@127.0.0.1:9/0")
    assert "secret" not in line
    assert db.jobs.count_documents({}) == before


# ------------------------------------------------------------------------------ embedded
def test_example_import_on_the_embedded_stack(tmp_path: Path) -> None:
    """No broker, no MongoDB configured: ``knm worker`` and ``knm jobs submit`` find each other."""
    data_dir = tmp_path / "knm-data"
    env = {**_clean_env(), "KNM_DATA_DIR": str(data_dir)}
    # the other commands in process (each ``python -m knm`` costs seconds of imports)
    local = _runner(
        {"KNM_DATA_DIR": str(data_dir), "KNM_BROKER_URL": None, "KNM_MONGODB_URL": None}
    )
    owner = "0123456789abcdef0123456789abcdef"
    log = tmp_path / "embedded-worker.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        local("accounts", "create", owner, "--name", "Acme", "--allow-additions")
        proc = _start_worker(env, log)
        _wait_ready(proc, log)
        started = time.monotonic()
        submit = ["jobs", "submit", "import", str(EXAMPLE), "--account", owner, "--wait"]
        done = subprocess.run(
            [sys.executable, "-m", "knm", *submit],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 1, (done.stdout, done.stderr)  # partial: two bad rows
        job_id, totals = done.stdout.strip().splitlines()
        assert totals == f"job {job_id} partial: 14 rows, 12 succeeded, 2 failed"
        assert "14/14 rows" in done.stderr
        assert "Traceback" not in done.stderr
        print(f"knm jobs submit import {EXAMPLE.name} --wait (embedded) took {elapsed:.1f} s")

        results = local("jobs", "results", job_id)
        rows = list(csv.DictReader(io.StringIO(results.stdout)))
        errors = {r["e164"]: r["error"] for r in rows if r["error"]}
        assert errors == {
            "4155550100": "duplicate of row 1 (+14155550100)",
            "+14155550109": "bad field(s) account_id",
        }
        imported = [r["e164"] for r in rows if not r["error"]]
        assert len(imported) == 12
        assert "+442071838751" in imported  # 011 44 ... normalized
        assert "+14155550101" in imported  # 10 digits normalized
        assert {r["account_name"] for r in rows if not r["error"]} == {"Acme"}
        listed = json.loads(local("jobs", "list", "--json").stdout)
        assert [j["id"] for j in listed] == [job_id]
    finally:
        if proc is not None:
            _stop(proc)
        embedded.stop_server(data_dir)
