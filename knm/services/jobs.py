"""Running CSV jobs (KAZOO's ``kt_numbers`` tasks) through ``knm.services.dispatch``.

A job is created by ``job_creation`` (every row validated up front, rows stored in chunks). A
chunk reads its pending rows in one query and groups them by their numbers' carrier module, as
every dispatched piece of work is: rows on a local carrier (or on none) run at once where the
chunk was received, as batch operations (one read, one bulk write of numbers), with a result per
row in one bulk write; rows on a provider carrier are tagged with it and handed to its queue as
``knm.jobs.rows``, where the carrier's worker runs them behind its rate limit and breaker (an
open breaker re-queues them, a transient failure is retried with backoff, then dead-lettered).

The chunk's totals are added to the job once, by whichever part of it finishes last (the job
remembers which chunks it has counted), so the job finishes when every share has. A redelivered
chunk or share skips rows that already have a result, and numbers its first run already wrote
carry the chunk's request id, so nothing is applied twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pymongo import ReturnDocument, UpdateOne

from carriers.retry import CircuitOpenError
from config.settings import get_settings
from knm.domain.accounts import is_account_id
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber, utcnow
from knm.domain.options import Options
from knm.services import dispatch
from knm.services import numbers_requests as requests
from knm.services.csv_actions import ACTIONS, Action, public_fields
from knm.services.dispatch import Broker, Requeue
from knm.services.events import events_for
from knm.services.facade import InputError, Knm
from knm.services.job_creation import create_job
from knm.services.job_listings import run_listing
from knm.services.job_store import (
    CHUNK_MAX_BYTES,
    CHUNK_READ_BATCH,
    DEFAULT_CHUNK_SIZE,
    FINAL_STATUSES,
    INSERT_BATCH,
    INSERT_BATCH_BYTES,
    RESULTS_BATCH,
    ChunkReport,
    Job,
    JobStatus,
    JobStore,
    RowStatus,
    error_text,
    finish_if_done,
)
from knm.services.listing import RESULT_COLUMNS, listing_row
from knm.store import read_once

#: The task that runs one carrier's rows of a chunk, on ``carrier.<module>``.
JOB_ROWS_TASK: Final[str] = "knm.jobs.rows"
#: The operation a job's row events name, per action (``find`` changes nothing: no event).
EVENT_OPERATIONS: Final[dict[str, str]] = {
    "import": "create",
    "assign_to": "activate",
    "reserve": "reserve",
    "release": "release",
    "delete": "delete",
    "update_merge": "update",
    "update_overwrite": "update",
}
#: A dead letter of a job's rows names its operation ``jobs.<action>``.
JOB_OPERATION_PREFIX: Final[str] = "jobs."

Outcomes = dict[str, tuple[PhoneNumber | None, KnmError | None]]


# ================================================================================ running
@dataclass
class _Row:
    id: str
    row: int
    number: str
    input: dict[str, str]


def _rows(docs: Iterable[dict[str, Any]]) -> list[_Row]:
    return [
        _Row(d["_id"], d["row"], d["number"], d["input"])
        for d in docs
        if d["status"] == RowStatus.PENDING
    ]


def run_chunk(
    knm: Knm, job_id: str, chunk: int, broker: Broker | None = None, here: str | None = None
) -> ChunkReport:
    """Run one chunk of an input job (idempotent: a rerun skips rows that have a result).

    With a ``broker``, rows on a carrier that does not run ``here`` (the queue the chunk was
    received on) are handed to that carrier's queue; without one, every row runs here.
    """
    store = JobStore(knm)
    report = ChunkReport(job_id, chunk)
    job = store.get(job_id)
    if job is None:
        raise InputError(f"job {job_id} does not exist")
    action = ACTIONS[job.action]
    if not action.takes_input:
        return run_listing(knm, job)
    # without the listings a rerun's done rows carry: a chunk's inputs are bounded, not them
    docs = list(
        store.rows.find(
            {"job_id": job_id, "chunk": chunk}, {"listing": 0}, batch_size=job.chunk_size + 1
        )
    )
    pending = _rows(docs)
    report.skipped = len(docs) - len(pending)
    outcomes: Outcomes = {}
    away: dict[str | None, list[_Row]] = {}
    if pending:
        if job.started is None:
            store.jobs.update_one(
                {"_id": job_id, "started": None},
                {"$set": {"started": utcnow(), "status": JobStatus.RUNNING.value}},
            )
        with read_once.reuse_reads():
            before: dict[str, dict[str, Any]] = {}
            modules = _row_modules(knm, job, action, pending, before)
            here_rows: list[_Row] = []
            for row in pending:
                module = modules.get(row.number)
                if broker is None or dispatch.runs_here(knm, module, here):
                    here_rows.append(row)
                else:
                    away.setdefault(module, []).append(row)
            if here_rows:
                outcomes = _apply(knm, job, action, here_rows, request_id=f"{job_id}:{chunk}")
                _emit(broker, job, chunk, here_rows, outcomes, before, modules)
                _record(knm, store, here_rows, outcomes)
        report.processed = len(here_rows)
        pending = here_rows
    if away:
        assert broker is not None
        _hand_over(store, broker, job_id, chunk, away)
        report.waiting = sum(len(rows) for rows in away.values())
        report.status = JobStatus.RUNNING
        return report
    final = {d["_id"]: (d["status"], bool(d.get("precounted"))) for d in docs}
    for row in pending:
        _pn, error = outcomes[row.number]
        final[row.id] = (RowStatus.SUCCEEDED if error is None else RowStatus.FAILED, False)
    report.succeeded = sum(1 for st, _ in final.values() if st == RowStatus.SUCCEEDED)
    report.failed = sum(1 for st, _ in final.values() if st == RowStatus.FAILED)
    if any(st == RowStatus.PENDING for st, _ in final.values()):
        # rows a carrier's worker still has (a redelivered chunk): that share counts the chunk
        report.status = JobStatus.RUNNING
        return report
    report.counted, report.status = _count_chunk(store, job_id, chunk, list(final.values()))
    return report


def run_rows(
    knm: Knm,
    broker: Broker,
    job_id: str,
    chunk: int,
    module: str | None,
    *,
    transient_attempts: int = 0,
) -> ChunkReport | Requeue:
    """``knm.jobs.rows``: run a chunk's rows on ``module`` (on its carrier's queue).

    An open breaker re-queues the rows untouched; rows that failed with a provider's transient
    error are re-queued with backoff (the others get their result now), and fail for good with
    a dead letter once the retries are used up. The last share of a chunk to finish counts it.
    """
    store = JobStore(knm)
    job = store.get(job_id)
    if job is None:
        raise InputError(f"job {job_id} does not exist")
    action = ACTIONS[job.action]
    report = ChunkReport(job_id, chunk)
    query = {"job_id": job_id, "chunk": chunk, "carrier": module, "status": RowStatus.PENDING}
    rows = _rows(store.rows.find(query, {"listing": 0}, batch_size=job.chunk_size + 1))
    if rows:
        request_id = f"{job_id}:{chunk}"
        numbers = list(dict.fromkeys(r.number for r in rows))
        with read_once.reuse_reads():
            before = knm.store.find_numbers(numbers)  # for the events; handed to the operation
            read_once.remember("numbers", numbers, before)
            try:
                outcomes = _apply(knm, job, action, rows, request_id=request_id)
            except CircuitOpenError as exc:
                wait = max(exc.retry_in_s, dispatch.BREAKER_MIN_WAIT_S)
                return Requeue(wait, transient_attempts, breaker=True)
        retry = [r for r in rows if (e := outcomes[r.number][1]) is not None and e.retryable]
        carriers = dict.fromkeys(numbers, module)
        if retry and transient_attempts < get_settings().task_max_retries:
            later = {r.id for r in retry}
            done = [r for r in rows if r.id not in later]
            _emit(broker, job, chunk, done, outcomes, before, carriers)
            _record(knm, store, done, outcomes)
            return Requeue(dispatch.requeue_delay(transient_attempts), transient_attempts + 1)
        if retry:
            _dead_letter(knm, job, chunk, module, retry, outcomes, transient_attempts + 1)
        _emit(broker, job, chunk, rows, outcomes, before, carriers)
        _record(knm, store, rows, outcomes)
        report.processed = len(rows)
    report.counted, report.status = _count_if_complete(store, job_id, chunk)
    return report


def fail_rows(knm: Knm, job_id: str, chunk: int, module: str | None, reason: str) -> ChunkReport:
    """A carrier's share of a chunk that cannot run (its task failed for good): its pending
    rows fail with ``reason``, and the chunk is counted if that was its last share."""
    store = JobStore(knm)
    report = ChunkReport(job_id, chunk)
    if store.jobs.count_documents({"_id": job_id}, limit=1) == 0:
        return report
    store.rows.update_many(
        {"job_id": job_id, "chunk": chunk, "carrier": module, "status": RowStatus.PENDING.value},
        {"$set": {"status": RowStatus.FAILED.value, "error": f"applier crashed: {reason}"}},
    )
    report.counted, report.status = _count_if_complete(store, job_id, chunk)
    return report


def reopen_rows(knm: Knm, job_id: str, chunk: int, numbers: list[str]) -> int:
    """Put a chunk's dead-lettered rows (failed ``numbers``) back to pending, to run again.

    The chunk's totals come off the job (it is counted again, whole, when it finishes) and the
    job is running again. Returns how many rows were reopened; send ``knm.jobs.chunk`` next.
    """
    store = JobStore(knm)
    docs = list(
        store.rows.find(
            {"job_id": job_id, "chunk": chunk},
            {"status": 1, "precounted": 1, "number": 1},
            batch_size=CHUNK_READ_BATCH,
        )
    )
    wanted = set(numbers)
    reopen = [
        d
        for d in docs
        if d["number"] in wanted and d["status"] == RowStatus.FAILED and not d.get("precounted")
    ]
    if not reopen:
        return 0
    counted = [d["status"] for d in docs if not d.get("precounted")]
    succeeded = counted.count(RowStatus.SUCCEEDED)
    failed = counted.count(RowStatus.FAILED)
    store.jobs.update_one(
        {"_id": job_id, "chunks_done": chunk},
        {
            "$pull": {"chunks_done": chunk},
            "$inc": {"done": -(succeeded + failed), "succeeded": -succeeded, "failed": -failed},
        },
    )
    store.jobs.update_one(
        {"_id": job_id},
        {"$set": {"status": JobStatus.RUNNING.value}, "$unset": {"finished": "", "expires_at": ""}},
    )
    store.rows.bulk_write(
        [
            UpdateOne(
                {"_id": d["_id"], "status": RowStatus.FAILED.value},
                {"$set": {"status": RowStatus.PENDING.value, "error": None}},
            )
            for d in reopen
        ],
        ordered=False,
    )
    return len(reopen)


def _hand_over(
    store: JobStore, broker: Broker, job_id: str, chunk: int, away: dict[str | None, list[_Row]]
) -> None:
    """Tag rows with their carrier (one bulk write), then one share message per carrier."""
    store.rows.bulk_write(
        [
            UpdateOne({"_id": row.id}, {"$set": {"carrier": module}})
            for module, rows in away.items()
            for row in rows
        ],
        ordered=False,
    )
    for module in sorted(away, key=lambda m: m or ""):
        kwargs = {"job_id": job_id, "chunk": chunk, "module": module}
        broker.publish(JOB_ROWS_TASK, kwargs, dispatch.queue_of(module))


def _row_modules(
    knm: Knm, job: Job, action: Action, rows: list[_Row], docs_out: dict[str, dict[str, Any]]
) -> dict[str, str | None]:
    """The carrier module of each row's number: the stored one, else the one it will get (the
    search's carrier for a discovered number being assigned, the creation module for an
    import). What is read is remembered for the operation that runs next (``read_once``) and
    copied to ``docs_out`` (the documents before the rows run, for their events)."""
    numbers = list(dict.fromkeys(r.number for r in rows))
    docs = knm.store.find_numbers(numbers)
    read_once.remember("numbers", numbers, docs)
    docs_out.update({n: dict(d) for n, d in docs.items()})
    modules: dict[str, str | None] = {n: requests.stored_module(knm, d) for n, d in docs.items()}
    missing = [n for n in numbers if n not in docs]
    if missing and action.name == "assign_to":
        hits = knm.numbers.search_cache.discovered(missing)
        read_once.remember("discovered", missing, hits)
        modules.update({n: hit.carrier_module for n, hit in hits.items()})
    elif missing and action.name == "import":
        absent = set(missing)
        for row in rows:
            if row.number in absent:
                _account, module, state, ported = _import_key(knm, job, row)
                options = Options(module_name=module, ported_in=ported)
                if state is not None:
                    options = options.but(state=NumberState(state))
                modules[row.number] = knm.numbers.creation_module(options)
    return {n: m if m in knm.numbers.carriers else None for n, m in modules.items()}


def _emit(
    broker: Broker | None,
    job: Job,
    chunk: int,
    rows: list[_Row],
    outcomes: Outcomes,
    before: Mapping[str, Mapping[str, Any]],
    carriers: Mapping[str, str | None],
) -> None:
    """The rows' outcome events (``knm.events``, request id ``<job id>:<chunk>``), before their
    results are recorded: a crash in between publishes them again (at least once)."""
    operation = EVENT_OPERATIONS.get(job.action)
    if broker is None or operation is None or not rows:
        return
    result: dict[str, dict[str, Any]] = {"succeeded": {}, "failed": {}}
    for row in rows:
        pn, error = outcomes[row.number]
        if error is None and pn is not None:
            result["succeeded"][row.number] = pn.to_document()
        else:
            result["failed"][row.number] = (error or _internal()).to_json()
    broker.emit(events_for(f"{job.id}:{chunk}", operation, result, before, carriers), None)


def _record(knm: Knm, store: JobStore, rows: list[_Row], outcomes: Outcomes) -> None:
    """Each row's result, in one bulk write (only rows still pending: a rerun writes nothing)."""
    if not rows:
        return
    names = _account_names(knm, (outcomes[r.number] for r in rows))
    writes = []
    for row in rows:
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


def _dead_letter(
    knm: Knm,
    job: Job,
    chunk: int,
    module: str | None,
    rows: list[_Row],
    outcomes: Outcomes,
    attempts: int,
) -> None:
    """Rows still failing transiently after every retry: recorded for the operator."""
    failed = {r.number: error_text(e) for r in rows if (e := outcomes[r.number][1]) is not None}
    knm.dead_letters.put(
        f"{job.id}:{chunk}",
        module or "-",
        f"{JOB_OPERATION_PREFIX}{job.action}",
        module,
        {"job_id": job.id, "chunk": chunk, "module": module},
        {"succeeded": {}, "failed": failed},
        f"{len(rows)} rows still failing transiently: {', '.join(sorted(failed))}",
        attempts,
    )


def _count_if_complete(store: JobStore, job_id: str, chunk: int) -> tuple[bool, JobStatus]:
    """Count the chunk if none of its rows is pending any more (whoever finishes last)."""
    docs = store.rows.find(
        {"job_id": job_id, "chunk": chunk},
        {"status": 1, "precounted": 1},
        batch_size=CHUNK_READ_BATCH,
    )
    rows = [(d["status"], bool(d.get("precounted"))) for d in docs]
    if any(st == RowStatus.PENDING for st, _ in rows):
        return False, JobStatus.RUNNING
    return _count_chunk(store, job_id, chunk, rows)


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
    return counted is not None, finish_if_done(store, Job.from_document(current))


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
    docs = list(
        store.rows.find(
            {"job_id": job_id, "chunk": chunk},
            {"status": 1, "precounted": 1},
            batch_size=CHUNK_READ_BATCH,
        )
    )
    rows = [(d["status"], bool(d.get("precounted"))) for d in docs]
    report.failed = sum(1 for st, _ in rows if st == RowStatus.FAILED)
    report.succeeded = len(rows) - report.failed
    report.counted, report.status = _count_chunk(store, job_id, chunk, rows)
    return report


def _account_names(
    knm: Knm, outcomes: Iterable[tuple[PhoneNumber | None, KnmError | None]]
) -> dict[str, str]:
    ids = {pn.assigned_to for pn, _ in outcomes if pn is not None and pn.assigned_to}
    return {a.id: a.name for a in knm.store.find_accounts(ids)} if ids else {}


def _row_account(job: Job, row: _Row) -> str:
    cell = row.input.get("account_id", "").strip()
    return cell if is_account_id(cell) else job.account_id


def _import_key(knm: Knm, job: Job, row: _Row) -> tuple[str, str, str | None, bool]:
    """An imported row's (account, carrier module, state, ported_in): admins may name the
    module and state in the row, others get ``import_defaults_to_carrier``."""
    module = knm.settings.import_defaults_to_carrier
    state = None
    if job.auth_is_admin:
        module = row.input.get("carrier_module", "").strip() or module
        state = row.input.get("state", "").strip() or None
    ported = row.input.get("ported_in", "").strip() == "true"
    return _row_account(job, row), module, state, ported


def _apply(knm: Knm, job: Job, action: Action, rows: list[_Row], request_id: str) -> Outcomes:
    """Run ``action`` for every row as batch operations, grouped by identical options."""
    manager = knm.numbers
    base = {"auth_by": job.auth_account_id, "batch_run": True, "request_id": request_id}
    groups: dict[tuple[Any, ...], list[_Row]] = defaultdict(list)
    for row in rows:
        key: tuple[Any, ...]
        match action.name:
            case "import":
                key = _import_key(knm, job, row)
            case "assign_to" | "reserve":
                key = (_row_account(job, row),)
            case _:
                key = ()
        groups[key].append(row)

    outcomes: Outcomes = {}
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


RESULT_HEADER: Final[tuple[str, ...]] = RESULT_COLUMNS

__all__ = [
    "CHUNK_MAX_BYTES",
    "DEFAULT_CHUNK_SIZE",
    "FINAL_STATUSES",
    "INSERT_BATCH",
    "INSERT_BATCH_BYTES",
    "JOB_ROWS_TASK",
    "RESULTS_BATCH",
    "RESULT_HEADER",
    "ChunkReport",
    "Job",
    "JobStatus",
    "JobStore",
    "RowStatus",
    "create_job",
    "error_text",
    "fail_chunk",
    "fail_rows",
    "reopen_rows",
    "run_chunk",
    "run_listing",
    "run_rows",
]
