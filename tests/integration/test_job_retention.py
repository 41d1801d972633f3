"""Finished jobs clean up after themselves; ``knm jobs delete``; rows stored are reported.

Expiry is driven by a fake clock (``now``), never by waiting.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.database import Database
from typer.testing import CliRunner

from config.settings import Settings
from knm.cli.root import cli
from knm.services import jobs
from knm.services.facade import Knm
from knm.store import job_retention
from knm.store.numbers import Store
from tests.command_log import CommandLog

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
ACCOUNT = "f" * 32


def _knm(db: Database[Doc], **settings: Any) -> Knm:
    store = Store(db)
    store.ensure_indexes()
    knm = Knm(store, Settings(**settings))
    if knm.get_account(ACCOUNT) is None:
        knm.create_account(ACCOUNT, "Retention", allow_additions=True, reseller=True)
    return knm


def _csv(rows: int, start: int) -> io.BytesIO:
    lines = ["e164"] + [f"415{start + i:07d}" for i in range(rows)]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def _run(knm: Knm, rows: int, start: int) -> jobs.Job:
    job = jobs.create_job(knm, "import", _csv(rows, start), account_id=ACCOUNT, chunk_size=2)
    for chunk in range(job.chunks):
        jobs.run_chunk(knm, job.id, chunk)
    done = jobs.JobStore(knm).get(job.id)
    assert done is not None
    assert done.status == "succeeded"
    return done


def test_finished_jobs_expire_after_the_retention_with_their_rows(mongo_db: Database[Doc]) -> None:
    knm = _knm(mongo_db, job_retention_d=30)
    done = _run(knm, 3, 2_000_000)
    stored = mongo_db["jobs"].find_one({"_id": done.id})
    assert stored is not None
    assert done.finished is not None
    assert stored["expires_at"] == stored["finished"] + timedelta(days=30)
    ttl = {i["name"]: i for i in mongo_db["jobs"].list_indexes()}["ttl"]
    assert (dict(ttl["key"]), ttl["expireAfterSeconds"]) == ({"expires_at": 1}, 0)

    day_29 = done.finished + timedelta(days=29)
    assert job_retention.purge_expired(mongo_db, now=day_29) == {
        "jobs": 0,
        "rows": 0,
        "orphaned_jobs": 0,
    }
    assert mongo_db["job_rows"].count_documents({"job_id": done.id}) == 3

    day_31 = done.finished + timedelta(days=31)
    assert job_retention.purge_expired(mongo_db, now=day_31)["rows"] == 3
    assert mongo_db["jobs"].find_one({"_id": done.id}) is None
    assert mongo_db["job_rows"].count_documents({"job_id": done.id}) == 0
    assert mongo_db["numbers"].count_documents({}) == 3  # the numbers stay


def test_a_new_job_purges_expired_ones_and_rows_left_without_a_job(
    mongo_db: Database[Doc],
) -> None:
    knm = _knm(mongo_db)
    old = _run(knm, 2, 2_100_000)
    running = jobs.create_job(knm, "import", _csv(2, 2_200_000), account_id=ACCOUNT)
    orphan = _run(knm, 2, 2_300_000)
    assert old.finished is not None
    past = old.finished - timedelta(days=1)
    mongo_db["jobs"].update_one({"_id": old.id}, {"$set": {"expires_at": past}})
    mongo_db["jobs"].delete_one({"_id": orphan.id})  # as a MongoDB TTL monitor would

    jobs.create_job(knm, "import", _csv(1, 2_400_000), account_id=ACCOUNT)
    assert mongo_db["jobs"].find_one({"_id": old.id}) is None
    assert mongo_db["job_rows"].count_documents({"job_id": {"$in": [old.id, orphan.id]}}) == 0
    # an unfinished job has no expiry and keeps its rows
    assert mongo_db["job_rows"].count_documents({"job_id": running.id}) == 2


def test_create_job_reports_rows_as_they_are_stored(mongo_db: Database[Doc]) -> None:
    knm = _knm(mongo_db)
    seen: list[int] = []
    job = jobs.create_job(
        knm, "import", _csv(2_500, 3_000_000), account_id=ACCOUNT, on_stored=seen.append
    )
    assert job.rows == 2_500
    assert seen == [1000, 2000, 2500]


def test_jobs_delete_removes_the_job_and_its_rows(
    mongo_db: Database[Doc], mongo_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    knm = _knm(mongo_db)
    done = _run(knm, 3, 3_100_000)
    monkeypatch.setenv("KNM_MONGODB_URL", mongo_url)
    monkeypatch.setenv("KNM_MONGODB_DB", mongo_db.name)
    runner = CliRunner()
    result = runner.invoke(cli, ["jobs", "delete", done.id, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"id": done.id, "deleted": True, "rows_deleted": 3}
    assert mongo_db["jobs"].find_one({"_id": done.id}) is None
    assert mongo_db["job_rows"].count_documents({"job_id": done.id}) == 0
    again = runner.invoke(cli, ["jobs", "delete", done.id])
    assert again.exit_code == 1
    assert f"job {done.id} does not exist" in again.stderr


def test_jobs_delete_by_a_sibling_account_is_refused_and_deletes_nothing(
    mongo_db: Database[Doc], mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    knm = _knm(mongo_db)
    sibling = "e" * 32
    knm.create_account(sibling, "Sibling", allow_additions=True)
    done = _run(knm, 2, 3_400_000)
    monkeypatch.setenv("KNM_MONGODB_URL", mongo_url)
    monkeypatch.setenv("KNM_MONGODB_DB", mongo_db.name)
    runner = CliRunner()
    refused = runner.invoke(cli, ["jobs", "delete", done.id, "--auth-by", sibling])
    assert refused.exit_code == 1
    assert f"account '{sibling}' may not read job {done.id}" in refused.stderr
    assert mongo_db["jobs"].find_one({"_id": done.id}) is not None
    assert mongo_db["job_rows"].count_documents({"job_id": done.id}) == 2
    allowed = runner.invoke(cli, ["jobs", "delete", done.id, "--auth-by", ACCOUNT, "--json"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["deleted"] is True


def test_the_purge_scans_rows_only_when_some_have_no_job(
    mongo_db: Database[Doc], mongo_url: str
) -> None:
    """While every row belongs to a job still there (the rows are what the jobs count), a
    purge reads the jobs and the size of job_rows, never the rows themselves; once a job
    document is gone (a TTL monitor), the next purge finds and deletes its rows."""
    knm = _knm(mongo_db)
    kept = _run(knm, 3, 3_200_000)
    gone = _run(knm, 2, 3_300_000)
    listener = CommandLog()
    client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
        mongo_url, tz_aware=True, event_listeners=[listener]
    )
    try:
        db = client[mongo_db.name]
        assert job_retention.purge_expired(db)["orphaned_jobs"] == 0
        assert "distinct" not in listener.names
        assert listener.names.count("find") == 1  # the jobs: ids, row counts, expiry

        mongo_db["jobs"].delete_one({"_id": gone.id})  # as a MongoDB TTL monitor would
        listener.clear()
        assert job_retention.purge_expired(db) == {"jobs": 0, "rows": 2, "orphaned_jobs": 1}
        assert "distinct" in listener.names
    finally:
        client.close()
    assert mongo_db["job_rows"].count_documents({"job_id": kept.id}) == 3
    assert mongo_db["job_rows"].count_documents({"job_id": gone.id}) == 0
