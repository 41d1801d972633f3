"""Finished CSV jobs clean up after themselves: their rows and results expire, or are deleted.

A job that reaches a final status gets ``expires_at`` (its finish time plus
``KNM_JOB_RETENTION_D`` days). ``jobs`` has a TTL index on it, so a MongoDB server removes the
job document by itself; the rows (one document per input row, so many) are deleted by
:func:`purge_expired`, which every new job runs before it stores its own rows, with the job
documents themselves (the embedded store removes expired documents only when the collection is
read, so knm does not rely on a TTL monitor). ``knm jobs delete JOB`` removes one job at once.

Rows whose job document is gone (a MongoDB TTL monitor got there first) are deleted too. Every
job records how many rows it has (``rows``), so the purge first compares the size of
``job_rows`` (``estimated_document_count``: collection metadata, no scan) with what the jobs
still there account for; only when there are more rows than that does it look for the job ids
of rows that no longer have a job (``distinct``, a scan of the rows' job ids). A job being
created or listed has rows before its count: that costs a scan that finds nothing, never a
wrong deletion.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from knm.domain.number import utcnow

JOBS: Final[str] = "jobs"
ROWS: Final[str] = "job_rows"
#: Jobs read per batch by the purge (their ids, row counts and expiry only).
JOBS_BATCH: Final[int] = 10_000

Doc = dict[str, Any]


def ensure_indexes(db: Database[Doc]) -> None:
    """The TTL index on finished jobs (MongoDB deletes them itself)."""
    db[JOBS].create_index([("expires_at", ASCENDING)], expireAfterSeconds=0, name="ttl")


def expiry(finished: datetime, retention_d: float) -> datetime:
    return finished + timedelta(days=retention_d)


def delete_job(db: Database[Doc], job_id: str) -> tuple[bool, int]:
    """Delete a job and its rows; (whether the job existed, rows deleted)."""
    rows = db[ROWS].delete_many({"job_id": job_id}).deleted_count
    existed = db[JOBS].delete_one({"_id": job_id}).deleted_count == 1
    return existed, rows


def purge_expired(db: Database[Doc], now: datetime | None = None) -> dict[str, int]:
    """Delete finished jobs past their ``expires_at`` and their rows, and rows left without a job.

    ``now`` defaults to the current time (tests pass a fake clock).
    """
    now = now or utcnow()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    jobs: Collection[Doc] = db[JOBS]
    listed = list(jobs.find({}, {"_id": 1, "rows": 1, "expires_at": 1}, batch_size=JOBS_BATCH))
    expired = [d["_id"] for d in listed if _expired(d.get("expires_at"), now)]
    rows = 0
    for job_id in expired:
        rows += db[ROWS].delete_many({"job_id": job_id}).deleted_count
        jobs.delete_one({"_id": job_id, "expires_at": {"$lte": now}})
    kept = {d["_id"]: int(d.get("rows") or 0) for d in listed if d["_id"] not in set(expired)}
    orphans: set[str] = set()
    if db[ROWS].estimated_document_count() > sum(kept.values()):
        orphans = set(db[ROWS].distinct("job_id")) - set(kept)
    for job_id in orphans:
        rows += db[ROWS].delete_many({"job_id": job_id}).deleted_count
    return {"jobs": len(expired), "rows": rows, "orphaned_jobs": len(orphans)}


def _expired(expires_at: object, now: datetime) -> bool:
    if not isinstance(expires_at, datetime):
        return False
    if expires_at.tzinfo is None:  # a client without tz_aware reads naive UTC
        expires_at = expires_at.replace(tzinfo=UTC)
    return expires_at <= now
