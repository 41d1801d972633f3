"""Creating a CSV job: the header and every row are validated up front, rows stored in chunks.

A missing mandatory column refuses the job; a bad cell, an unreconcilable number or a
duplicate fails only its row. Rows are inserted in batches while the file streams.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pymongo import InsertOne, ReturnDocument
from pymongo.errors import PyMongoError

from knm.domain import convert
from knm.domain.accounts import SYSTEM, AccountDirectory, bad_account_id, is_account_id
from knm.services.csv_actions import ACTIONS, Action, row_error
from knm.services.csv_files import CsvInputError, CsvReader, row_bytes
from knm.services.facade import InputError, Knm
from knm.services.first_rows import FirstRows
from knm.services.job_store import (
    CHUNK_MAX_BYTES,
    DEFAULT_CHUNK_SIZE,
    INSERT_BATCH,
    INSERT_BATCH_BYTES,
    Job,
    JobStatus,
    JobStore,
    RowStatus,
    finish_if_done,
)
from knm.store import job_retention


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
        created.status = finish_if_done(store, created)
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
    with FirstRows() as seen:
        return _store_checked_rows(knm, store, job, action, reader, seen, on_stored)


def _store_checked_rows(
    knm: Knm,
    store: JobStore,
    job: Job,
    action: Action,
    reader: CsvReader,
    seen: FirstRows,
    on_stored: Callable[[int], None] | None,
) -> tuple[int, int, int]:
    settings = knm.settings
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
                first = seen.first(normalized, number)
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
