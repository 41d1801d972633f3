"""CSV jobs' records: the ``jobs`` and ``job_rows`` collections and the job's public state.

A job is stored with one document in ``jobs`` and one per input row in ``job_rows``; a chunk's
totals are added to the job once (the job remembers which chunks it has counted) and the job's
final status is set once every chunk is counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, Field
from pymongo.collection import Collection

from knm.domain.accounts import SYSTEM
from knm.domain.errors import KnmError
from knm.domain.number import utcnow
from knm.services.facade import Knm
from knm.services.job_access import readable_jobs
from knm.store import job_retention

DEFAULT_CHUNK_SIZE: Final[int] = 1000
#: Reads of one chunk's rows ask for them in one reply (MongoDB sends 101 first, then getMore).
CHUNK_READ_BATCH: Final[int] = DEFAULT_CHUNK_SIZE + 1
INSERT_BATCH: Final[int] = 1000
#: Rows are inserted in batches of at most this many bytes of input too (streaming).
INSERT_BATCH_BYTES: Final[int] = 1024 * 1024
#: A chunk holds at most this many bytes of input (one read of it stays far below what a
#: MongoDB reply may carry, whatever the rows' size); a chunk is cut early to stay under it.
CHUNK_MAX_BYTES: Final[int] = 8 * 1024 * 1024
#: Result rows read per batch: each is at most a row's input (256 KiB) and its listing (less
#: than a number's 64 KiB of public fields), so a batch stays under the 48 MB of one reply.
RESULTS_BATCH: Final[int] = 100


class JobStatus(StrEnum):
    CREATING = "creating"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


FINAL_STATUSES: Final[frozenset[JobStatus]] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.PARTIAL, JobStatus.FAILED}
)


class RowStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Job(BaseModel):
    """A job's public state: what ``knm jobs status --json`` prints."""

    id: str
    action: str
    account_id: str
    auth_account_id: str
    status: JobStatus
    rows: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    chunks: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunks_done: list[int] = Field(default_factory=list)
    source: str | None = None
    created: datetime = Field(default_factory=utcnow)
    started: datetime | None = None
    finished: datetime | None = None
    auth_is_admin: bool = False

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"chunks_done", "auth_is_admin"})
        data["chunks_done"] = len(self.chunks_done)
        return data

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Job:
        return cls.model_validate({**doc, "id": doc["_id"]})


def error_text(error: KnmError) -> str:
    """KAZOO's result-file error: the message, else the error name (plain reasons too), and the
    cause when it says more (why a 403 was refused: the rule, the list, the relation)."""
    text = error.message or error.error
    cause = error.cause
    if isinstance(cause, str) and cause and cause not in text:
        text = f"{text}: {cause}"
    return text


@dataclass
class ChunkReport:
    """What one chunk run did (for tests, logs and the task result)."""

    job_id: str
    chunk: int
    processed: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    counted: bool = False
    status: JobStatus | None = None
    #: Rows handed to their carriers' queues (``knm.jobs.rows``), not done yet.
    waiting: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "chunk": self.chunk,
            "processed": self.processed,
            "skipped": self.skipped,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "counted": self.counted,
            "status": self.status.value if self.status else None,
            "waiting": self.waiting,
        }


class JobStore:
    """The ``jobs`` and ``job_rows`` collections."""

    def __init__(self, knm: Knm) -> None:
        self.knm = knm
        db = knm.store.db
        self.jobs: Collection[dict[str, Any]] = db["jobs"]
        self.rows: Collection[dict[str, Any]] = db["job_rows"]

    # ------------------------------------------------------------------------------- reading
    def get(self, job_id: str) -> Job | None:
        doc = self.jobs.find_one({"_id": job_id})
        return Job.from_document(doc) if doc else None

    def list(self, limit: int = 50, auth_by: str = SYSTEM) -> list[Job]:
        """The latest jobs ``auth_by`` may read (``job_access.job_refusal``), newest first."""
        found = self.jobs.find(readable_jobs(self.knm, auth_by)).sort("created", -1).limit(limit)
        return [Job.from_document(d) for d in found]

    def result_rows(self, job_id: str) -> Iterator[dict[str, str]]:
        """Per-row results in row order: the listing for successes, the input for failures.

        Read in small batches: a job's rows together may be far more than one reply carries.
        """
        rows = self.rows.find({"job_id": job_id}, batch_size=RESULTS_BATCH)
        for doc in rows.sort([("job_id", 1), ("row", 1)]):
            if doc["status"] == RowStatus.SUCCEEDED:
                yield {**doc.get("listing", {}), "error": ""}
            else:
                yield {**doc.get("input", {}), "error": doc.get("error") or "pending"}


def finish_if_done(store: JobStore, job: Job) -> JobStatus:
    """Set the final status once every chunk is counted."""
    if job.status in FINAL_STATUSES or len(job.chunks_done) < job.chunks:
        return job.status
    if job.failed == 0:
        status = JobStatus.SUCCEEDED
    elif job.succeeded == 0:
        status = JobStatus.FAILED
    else:
        status = JobStatus.PARTIAL
    finished = utcnow()
    expires = job_retention.expiry(finished, store.knm.settings.job_retention_d)
    store.jobs.update_one(
        {"_id": job.id, "status": {"$nin": [s.value for s in FINAL_STATUSES]}},
        {"$set": {"status": status.value, "finished": finished, "expires_at": expires}},
    )
    return status
