"""Bulk CSV jobs (KAZOO's ``kt_numbers`` tasks).

A job is created by validating the header and every row up front: a missing mandatory column
refuses the job; a bad cell, an unreconcilable number or a duplicate fails only its row. Rows are
stored in ``job_rows`` and split into chunks. A chunk reads its pending rows in one query, runs
the action on all of them as batch operations (one read, one bulk write of numbers), records a
result per row in one bulk write, and adds its totals to the job once (the job remembers which
chunks it has counted). A redelivered chunk skips rows that already have a result, and numbers
its first run already wrote carry the chunk's request id, so nothing is applied twice.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final

from pydantic import BaseModel, Field
from pymongo import InsertOne, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from knm.domain import convert
from knm.domain.accounts import SYSTEM, AccountDirectory, bad_account_id, is_account_id
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber, utcnow
from knm.domain.options import Options
from knm.services.csv_actions import ACTIONS, Action, public_fields, row_error
from knm.services.csv_files import CsvInputError, CsvReader, row_bytes
from knm.services.facade import InputError, Knm
from knm.services.job_access import listing_refusal, readable_jobs
from knm.services.listing import RESULT_COLUMNS, listing_row
from knm.store import job_retention

DEFAULT_CHUNK_SIZE: Final[int] = 1000
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


# ================================================================================ creating
def _admin(knm: Knm, auth_by: str) -> bool:
    if auth_by == SYSTEM:
        return True
    return AccountDirectory(knm.store.find_accounts([auth_by])).is_admin(auth_by)


def create_job(
    knm: Knm,
    action_name: str,
    source: Path | IO[bytes] | None,
    *,
    account_id: str,
    auth_by: str = SYSTEM,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> Job:
    """Validate and store a job; raise ``InputError`` (one line) when it cannot be taken.

    ``on_stored`` is called with the number of rows stored so far after each insert batch.
    """
    action = ACTIONS.get(action_name)
    if action is None:
        raise InputError(f"unknown action {action_name!r}: expected one of {', '.join(ACTIONS)}")
    if not is_account_id(account_id):
        raise InputError(bad_account_id(account_id))
    if auth_by != SYSTEM and not is_account_id(auth_by):
        raise InputError(f"--auth-by must be 'system' or an account id: {auth_by!r}")
    if action.takes_input and source is None:
        raise InputError(f"action {action.name} needs a CSV file")
    if not action.takes_input and source is not None:
        raise InputError(f"action {action.name} takes no CSV file")
    store = JobStore(knm)
    job_retention.purge_expired(knm.store.db)  # finished jobs past their retention go first
    job = Job(
        id=uuid.uuid4().hex,
        action=action.name,
        account_id=account_id,
        auth_account_id=auth_by,
        status=JobStatus.CREATING,
        chunk_size=chunk_size,
        source=source_name or (source.name if isinstance(source, Path) else None),
        auth_is_admin=_admin(knm, auth_by),
    )
    store.jobs.insert_one({"_id": job.id, **job.model_dump(exclude={"id"})})
    try:
        if action.takes_input:
            assert source is not None
            with CsvReader(source, name=job.source) as reader:
                missing = [c for c in action.mandatory if c not in reader.header]
                if missing:
                    raise InputError(
                        f"missing mandatory column(s): {', '.join(missing)} "
                        f"(the header has: {', '.join(reader.header) or 'nothing'})"
                    )
                total, failed, chunks = _store_rows(knm, store, job, action, reader, on_stored)
        else:
            total, failed, chunks = 0, 0, 1
    except (InputError, CsvInputError) as exc:
        store.rows.delete_many({"job_id": job.id})
        store.jobs.delete_one({"_id": job.id})
        raise InputError(str(exc)) from None
    except BaseException:  # the store failed, Ctrl-C...: leave no half-stored job behind
        with contextlib.suppress(PyMongoError):
            store.rows.delete_many({"job_id": job.id})
            store.jobs.delete_one({"_id": job.id})
        raise
    doc = store.jobs.find_one_and_update(
        {"_id": job.id},
        {
            "$set": {
                "status": JobStatus.PENDING.value,
                "rows": total,
                "done": failed,
                "failed": failed,
                "chunks": chunks,
            }
        },
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None
    created = Job.from_document(doc)
    if created.chunks == 0:  # a header and no rows: nothing to run
        created.status = _finish_if_done(store, created)
    return created


def _store_rows(
    knm: Knm,
    store: JobStore,
    job: Job,
    action: Action,
    reader: CsvReader,
    on_stored: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """Validate every row and insert them in batches; returns (rows, rows failed already,
    chunks). A chunk has at most ``job.chunk_size`` rows and ``CHUNK_MAX_BYTES`` of input.
    ``on_stored`` hears the running count of rows stored (progress)."""
    settings = knm.settings
    seen: dict[str, int] = {}
    batch: list[InsertOne[dict[str, Any]]] = []
    batch_bytes = 0
    total = failed = 0
    chunk = chunk_rows = chunk_bytes = 0
    for number, row, problem in reader.rows():
        total += 1
        size = row_bytes(row)
        if chunk_rows and (chunk_rows >= job.chunk_size or chunk_bytes + size > CHUNK_MAX_BYTES):
            chunk, chunk_rows, chunk_bytes = chunk + 1, 0, 0
        chunk_rows += 1
        chunk_bytes += size
        raw = row.get("e164", "").strip()
        error: str | None = problem
        normalized: str | None = None
        if error is None:
            error = row_error(action, row)
        if error is None:
            if not convert.is_reconcilable(raw, settings.reconcile_regex, settings.e164_converters):
                error = "not_reconcilable"
            else:
                normalized = convert.normalize(raw, settings.e164_converters)
                first = seen.setdefault(normalized, number)
                if first != number:
                    error = f"duplicate of row {first} ({normalized})"
        if error is not None:
            failed += 1
        batch.append(
            InsertOne(
                {
                    "_id": f"{job.id}:{number:09d}",
                    "job_id": job.id,
                    "row": number,
                    "chunk": chunk,
                    "number": normalized,
                    "input": row,
                    "status": (RowStatus.FAILED if error else RowStatus.PENDING).value,
                    "precounted": error is not None,
                    "error": error,
                }
            )
        )
        batch_bytes += size
        if len(batch) >= INSERT_BATCH or batch_bytes >= INSERT_BATCH_BYTES:
            store.rows.bulk_write(batch, ordered=False)
            batch, batch_bytes = [], 0
            if on_stored is not None:
                on_stored(total)
    if batch:
        store.rows.bulk_write(batch, ordered=False)
    if on_stored is not None:
        on_stored(total)
    return total, failed, (chunk + 1 if total else 0)


# ================================================================================ running
@dataclass
class _Row:
    id: str
    row: int
    number: str
    input: dict[str, str]


def run_chunk(knm: Knm, job_id: str, chunk: int) -> ChunkReport:
    """Run one chunk of an input job (idempotent: a rerun skips rows that have a result)."""
    store = JobStore(knm)
    report = ChunkReport(job_id, chunk)
    job = store.get(job_id)
    if job is None:
        raise InputError(f"job {job_id} does not exist")
    action = ACTIONS[job.action]
    if not action.takes_input:
        return run_listing(knm, job)
    # without the listings a rerun's done rows carry: a chunk's inputs are bounded, not them
    docs = list(store.rows.find({"job_id": job_id, "chunk": chunk}, {"listing": 0}))
    pending = [
        _Row(d["_id"], d["row"], d["number"], d["input"])
        for d in docs
        if d["status"] == RowStatus.PENDING
    ]
    report.skipped = len(docs) - len(pending)
    outcomes: dict[str, tuple[PhoneNumber | None, KnmError | None]] = {}
    if pending:
        if job.started is None:
            store.jobs.update_one(
                {"_id": job_id, "started": None},
                {"$set": {"started": utcnow(), "status": JobStatus.RUNNING.value}},
            )
        outcomes = _apply(knm, job, action, pending, request_id=f"{job_id}:{chunk}")
        names = _account_names(knm, outcomes.values())
        writes = []
        for row in pending:
            pn, error = outcomes[row.number]
            if error is None and pn is not None:
                update = {
                    "status": RowStatus.SUCCEEDED.value,
                    "error": None,
                    "listing": listing_row(pn, names, knm.settings.default_force_outbound),
                }
            else:
                update = {
                    "status": RowStatus.FAILED.value,
                    "error": error_text(error) if error else "internal_error",
                }
            writes.append(
                UpdateOne({"_id": row.id, "status": RowStatus.PENDING.value}, {"$set": update})
            )
        store.rows.bulk_write(writes, ordered=False)
        report.processed = len(pending)

    final = {d["_id"]: (d["status"], bool(d.get("precounted"))) for d in docs}
    for row in pending:
        _pn, error = outcomes[row.number]
        final[row.id] = (RowStatus.SUCCEEDED if error is None else RowStatus.FAILED, False)
    report.succeeded = sum(1 for st, _ in final.values() if st == RowStatus.SUCCEEDED)
    report.failed = sum(1 for st, _ in final.values() if st == RowStatus.FAILED)
    report.counted, report.status = _count_chunk(store, job_id, chunk, list(final.values()))
    return report


def _count_chunk(
    store: JobStore, job_id: str, chunk: int, rows: list[tuple[str, bool]]
) -> tuple[bool, JobStatus]:
    """Add a chunk's totals to its job exactly once, then finish the job if it was the last.

    ``rows`` are (status, precounted) pairs; rows refused at creation were counted then.
    """
    succeeded = sum(1 for st, pre in rows if st == RowStatus.SUCCEEDED and not pre)
    failed = sum(1 for st, pre in rows if st == RowStatus.FAILED and not pre)
    counted = store.jobs.find_one_and_update(
        {"_id": job_id, "chunks_done": {"$ne": chunk}},
        {
            "$inc": {"done": succeeded + failed, "succeeded": succeeded, "failed": failed},
            "$addToSet": {"chunks_done": chunk},
        },
        return_document=ReturnDocument.AFTER,
    )
    current = counted or store.jobs.find_one({"_id": job_id})
    assert current is not None
    return counted is not None, _finish_if_done(store, Job.from_document(current))


def fail_chunk(knm: Knm, job_id: str, chunk: int, reason: str) -> ChunkReport:
    """A chunk that cannot run (its task failed for good): its pending rows fail with ``reason``.

    KAZOO stops a whole task when a row's handler crashes ("applier crashed"); here only the
    chunk's unfinished rows fail, and the job still finishes.
    """
    store = JobStore(knm)
    report = ChunkReport(job_id, chunk)
    if store.jobs.count_documents({"_id": job_id}, limit=1) == 0:
        return report
    store.rows.update_many(
        {"job_id": job_id, "chunk": chunk, "status": RowStatus.PENDING.value},
        {"$set": {"status": RowStatus.FAILED.value, "error": f"applier crashed: {reason}"}},
    )
    docs = list(store.rows.find({"job_id": job_id, "chunk": chunk}, {"status": 1, "precounted": 1}))
    rows = [(d["status"], bool(d.get("precounted"))) for d in docs]
    report.failed = sum(1 for st, _ in rows if st == RowStatus.FAILED)
    report.succeeded = len(rows) - report.failed
    report.counted, report.status = _count_chunk(store, job_id, chunk, rows)
    return report


def _finish_if_done(store: JobStore, job: Job) -> JobStatus:
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


def _account_names(
    knm: Knm, outcomes: Iterable[tuple[PhoneNumber | None, KnmError | None]]
) -> dict[str, str]:
    ids = {pn.assigned_to for pn, _ in outcomes if pn is not None and pn.assigned_to}
    return {a.id: a.name for a in knm.store.find_accounts(ids)} if ids else {}


def _apply(
    knm: Knm, job: Job, action: Action, rows: list[_Row], request_id: str
) -> dict[str, tuple[PhoneNumber | None, KnmError | None]]:
    """Run ``action`` for every row as batch operations, grouped by identical options."""
    settings = knm.settings
    manager = knm.numbers
    base = {"auth_by": job.auth_account_id, "batch_run": True, "request_id": request_id}

    def row_account(row: _Row) -> str:
        cell = row.input.get("account_id", "").strip()
        return cell if is_account_id(cell) else job.account_id

    groups: dict[tuple[Any, ...], list[_Row]] = defaultdict(list)
    for row in rows:
        key: tuple[Any, ...]
        match action.name:
            case "import":
                module = settings.import_defaults_to_carrier
                state = None
                if job.auth_is_admin:
                    module = row.input.get("carrier_module", "").strip() or module
                    state = row.input.get("state", "").strip() or None
                ported = row.input.get("ported_in", "").strip() == "true"
                key = (row_account(row), module, state, ported)
            case "assign_to" | "reserve":
                key = (row_account(row),)
            case _:
                key = ()
        groups[key].append(row)

    outcomes: dict[str, tuple[PhoneNumber | None, KnmError | None]] = {}
    for key, group in groups.items():
        numbers = [r.number for r in group]
        batch: Batch
        match action.name:
            case "import":
                assign_to, module, state, ported = key
                opts: dict[str, Any] = {
                    **base,
                    "assign_to": assign_to,
                    "module_name": module,
                    "ported_in": ported,
                }
                if state is not None:
                    opts["state"] = NumberState(state)
                publics = {r.number: public_fields(r.input) for r in group}
                batch = manager.create(numbers, Options(**opts), public_by_number=publics)
            case "assign_to":
                batch = manager.move(numbers, key[0], Options(**base))
            case "reserve":
                batch = manager.reserve(numbers, Options(**base, assign_to=key[0]))
            case "release":
                batch = manager.release(numbers, Options(**base))
            case "delete":
                batch = manager.delete(numbers, Options(**base))
            case "find":
                batch = manager.get(numbers, Options(**base))
            case "update_merge" | "update_overwrite":
                publics = {r.number: public_fields(r.input) for r in group}
                merge = action.name == "update_merge"

                def setter(
                    pn: PhoneNumber, publics: dict[str, Any] = publics, merge: bool = merge
                ) -> None:
                    fields = publics.get(pn.number, {})
                    if merge:
                        pn.update_public(fields)
                    else:
                        pn.reset_public(fields)

                batch = manager.update(numbers, [setter], Options(**base))
            case _:
                raise InputError(f"action {action.name} does not take rows")
        for number in numbers:
            if number in batch.succeeded:
                outcomes[number] = (batch.succeeded[number], None)
            else:
                outcomes[number] = (None, batch.failed.get(number) or _internal())
    return outcomes


def _internal() -> KnmError:
    return KnmError("internal_error", 500, "internal_error")


# ================================================================================ listings
def _listing_query(knm: Knm, job: Job) -> dict[str, Any]:
    """The numbers a listing action covers (the requester was authorized first)."""
    name = job.action
    if name == "list":
        return {"pvt_assigned_to": job.account_id}
    if name == "list_all":
        descendants = [
            d["_id"] for d in knm.store.accounts.find({"pvt_tree": job.account_id}, {"_id": 1})
        ]
        return {"pvt_assigned_to": {"$in": [job.account_id, *descendants]}}
    if name == "dump":
        return {}
    return {"pvt_state": name.removeprefix("dump_")}


def run_listing(knm: Knm, job: Job) -> ChunkReport:
    """list / list_all / dump*: page through the numbers and store one result row each.

    Resumable: a rerun continues after the last number already written.
    """
    store = JobStore(knm)
    report = ChunkReport(job.id, 0)
    if job.started is None:
        store.jobs.update_one(
            {"_id": job.id, "started": None},
            {"$set": {"started": utcnow(), "status": JobStatus.RUNNING.value}},
        )
    refusal = listing_refusal(knm, job)
    if refusal is not None:
        return _refuse_listing(store, job, refusal)
    query = _listing_query(knm, job)
    last = store.rows.find_one({"job_id": job.id}, sort=[("row", -1)])
    row_no = last["row"] if last else 0
    after = last["number"] if last else None
    page_size = DEFAULT_CHUNK_SIZE
    settings = knm.settings
    auth = job.auth_account_id
    while True:
        page_query = dict(query)
        if after is not None:
            page_query["_id"] = {"$gt": after}
        docs = list(knm.store.numbers.find(page_query).sort("_id", 1).limit(page_size))
        if not docs:
            break
        pns = [PhoneNumber.from_document(d, knm.numbers.modules) for d in docs]
        if job.action == "list" and auth != SYSTEM:
            accounts = AccountDirectory(
                knm.store.find_accounts({auth, *(p.assigned_to for p in pns)})
            )
            pns = [p for p in pns if accounts.is_visible(p, auth, None)]
        names = {
            a.id: a.name
            for a in knm.store.find_accounts({p.assigned_to for p in pns if p.assigned_to})
        }
        writes = []
        for pn in pns:
            row_no += 1
            writes.append(
                InsertOne(
                    {
                        "_id": f"{job.id}:{row_no:09d}",
                        "job_id": job.id,
                        "row": row_no,
                        "chunk": 0,
                        "number": pn.number,
                        "input": {"e164": pn.number},
                        "status": RowStatus.SUCCEEDED.value,
                        "error": None,
                        "listing": listing_row(pn, names, settings.default_force_outbound),
                    }
                )
            )
        if writes:
            with contextlib.suppress(BulkWriteError):  # a concurrent rerun wrote the same rows
                store.rows.bulk_write(writes, ordered=False)
        after = docs[-1]["_id"]
        report.processed += len(writes)
    total = store.rows.count_documents({"job_id": job.id})
    store.jobs.update_one(
        {"_id": job.id, "chunks_done": {"$ne": 0}},
        {
            "$set": {"rows": total, "done": total, "succeeded": total, "failed": 0},
            "$addToSet": {"chunks_done": 0},
        },
    )
    current = store.jobs.find_one({"_id": job.id})
    assert current is not None
    report.succeeded = total
    report.counted = True
    report.status = _finish_if_done(store, Job.from_document(current))
    return report


def _refuse_listing(store: JobStore, job: Job, refusal: KnmError) -> ChunkReport:
    """A listing the requester may not run: one failed row saying why, and no number."""
    with contextlib.suppress(DuplicateKeyError):  # a rerun wrote it already
        store.rows.insert_one(
            {
                "_id": f"{job.id}:{1:09d}",
                "job_id": job.id,
                "row": 1,
                "chunk": 0,
                "number": None,
                "input": {},
                "status": RowStatus.FAILED.value,
                "error": error_text(refusal),
            }
        )
    store.jobs.update_one(
        {"_id": job.id, "chunks_done": {"$ne": 0}},
        {
            "$set": {"rows": 1, "done": 1, "succeeded": 0, "failed": 1},
            "$addToSet": {"chunks_done": 0},
        },
    )
    current = store.jobs.find_one({"_id": job.id})
    assert current is not None
    report = ChunkReport(job.id, 0, failed=1, counted=True)
    report.status = _finish_if_done(store, Job.from_document(current))
    return report


RESULT_HEADER: Final[tuple[str, ...]] = RESULT_COLUMNS
