"""Listing jobs (list, list_all, dump, dump_<state>): one result row per number, resumable."""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo import InsertOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from knm.domain.accounts import SYSTEM, AccountDirectory
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber, utcnow
from knm.services.facade import Knm
from knm.services.job_access import listing_refusal
from knm.services.job_store import (
    DEFAULT_CHUNK_SIZE,
    ChunkReport,
    Job,
    JobStatus,
    JobStore,
    RowStatus,
    error_text,
    finish_if_done,
)
from knm.services.listing import listing_row


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
    report.status = finish_if_done(store, Job.from_document(current))
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
    report.status = finish_if_done(store, Job.from_document(current))
    return report
