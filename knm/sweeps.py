"""Scheduled sweeps (KAZOO's number crawler, spec §5, fixed per DECISIONS 8 / gap 26).

* ``age``: ``aging`` numbers whose ``pvt_modified`` is older than ``aging_expiry_d`` become
  ``available``;
* ``purge_discovery``: stored ``discovery`` documents older than ``discovery_expiry_d`` are
  deleted, with the search-cache entries that offer them;
* ``purge_deleted``: stored ``deleted`` documents are deleted.

Unlike KAZOO's crawler, which loaded every document of every number database, a sweep pages
through the ``(pvt_state, pvt_modified)`` index in bounded batches: one ``find`` and one bulk
write per batch, so its cost follows the number of due documents, not the collection. Every write
re-checks state, age and revision in its filter, so a number changed while the sweep runs keeps
its new state. A lock (with an expiry renewed per batch) keeps two sweeps from overlapping; a
sweep whose worker died leaves a lock that expires, and the next sweep finishes the work.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pymongo import DeleteOne, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from knm.app import Knm
from knm.model import NumberState, utcnow

BATCH_SIZE: Final[int] = 1000
LOCK_ID: Final[str] = "sweeps"


class SweepKind(StrEnum):
    AGE = "age"
    PURGE_DISCOVERY = "purge_discovery"
    PURGE_DELETED = "purge_deleted"


#: The JSON counter each sweep reports (``knm sweep --json``).
COUNTER: Final[dict[SweepKind, str]] = {
    SweepKind.AGE: "aged",
    SweepKind.PURGE_DISCOVERY: "purged_discovery",
    SweepKind.PURGE_DELETED: "purged_deleted",
}


class SweepLockedError(RuntimeError):
    """Another sweep holds the lock; this one did nothing."""

    def __init__(self, holder: dict[str, Any]) -> None:
        since = holder.get("acquired")
        super().__init__(
            f"another sweep is running ({holder.get('owner', '?')}, since "
            f"{since.isoformat() if isinstance(since, datetime) else since}); nothing done"
        )
        self.holder = holder


@dataclass
class SweepReport:
    """What a run did: counts per transition, errors, and when."""

    id: str
    kinds: list[SweepKind]
    as_of: datetime
    dry_run: bool
    started: datetime = field(default_factory=utcnow)
    finished: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kinds": [k.value for k in self.kinds],
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat() if self.finished else None,
            **{COUNTER[k]: self.counts.get(COUNTER[k], 0) for k in SweepKind},
            "batches": self.batches,
            "errors": self.errors,
        }


class Sweeper:
    """Runs sweeps against one store, holding the shared lock while it works."""

    def __init__(self, knm: Knm, *, lock_ttl_s: int = 300, batch_size: int = BATCH_SIZE) -> None:
        self.knm = knm
        db = knm.store.db
        self.numbers = knm.store.numbers
        self.locks = db["locks"]
        self.runs = db["sweep_runs"]
        self.lock_ttl = timedelta(seconds=lock_ttl_s)
        self.batch_size = batch_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------------------- lock
    def _acquire(self) -> None:
        now = utcnow()
        lock = {"owner": self.owner, "acquired": now, "expires_at": now + self.lock_ttl}
        try:
            self.locks.insert_one({"_id": LOCK_ID, **lock})
            return
        except DuplicateKeyError:
            pass
        taken = self.locks.find_one_and_update(
            {"_id": LOCK_ID, "expires_at": {"$lt": now}}, {"$set": lock}
        )
        if taken is None:
            holder = self.locks.find_one({"_id": LOCK_ID}) or {}
            raise SweepLockedError(holder)

    def _renew(self) -> None:
        result = self.locks.update_one(
            {"_id": LOCK_ID, "owner": self.owner},
            {"$set": {"expires_at": utcnow() + self.lock_ttl}},
        )
        if result.matched_count == 0:
            raise SweepLockedError(self.locks.find_one({"_id": LOCK_ID}) or {})

    def _release(self) -> None:
        self.locks.delete_one({"_id": LOCK_ID, "owner": self.owner})

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the sweep lock for the duration of the block."""
        self._acquire()
        try:
            yield
        finally:
            self._release()

    # ------------------------------------------------------------------------------- runs
    def run(
        self, kinds: list[SweepKind], *, now: datetime | None = None, dry_run: bool = False
    ) -> SweepReport:
        """Run ``kinds`` as of ``now`` (default: the real now); raise if another sweep runs."""
        as_of = now or utcnow()
        report = SweepReport(uuid.uuid4().hex, kinds, as_of, dry_run)
        with self.locked():
            self.runs.insert_one({"_id": report.id, "status": "running", **_doc(report)})
            try:
                for kind in kinds:
                    report.counts[COUNTER[kind]] = self._sweep(kind, as_of, dry_run, report)
            except PyMongoError as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                report.finished = utcnow()
                status = "failed" if report.errors else "finished"
                self.runs.update_one(
                    {"_id": report.id}, {"$set": {"status": status, **_doc(report)}}
                )
        return report

    def _sweep(self, kind: SweepKind, as_of: datetime, dry_run: bool, report: SweepReport) -> int:
        settings = self.knm.settings
        if kind == SweepKind.AGE:
            state, cutoff = NumberState.AGING, as_of - timedelta(days=settings.aging_expiry_d)
        elif kind == SweepKind.PURGE_DISCOVERY:
            state = NumberState.DISCOVERY
            cutoff = as_of - timedelta(days=settings.discovery_expiry_d)
        else:
            state, cutoff = NumberState.DELETED, None
        return self._page(kind, state, cutoff, as_of, dry_run, report)

    def _page(
        self,
        kind: SweepKind,
        state: NumberState,
        cutoff: datetime | None,
        as_of: datetime,
        dry_run: bool,
        report: SweepReport,
    ) -> int:
        """Batches of due documents through the (pvt_state, pvt_modified) index."""
        done = 0
        after: tuple[datetime, str] | None = None
        while True:
            query: dict[str, Any] = {"pvt_state": state.value}
            if cutoff is not None:
                query["pvt_modified"] = {"$lt": cutoff}
            if after is not None:
                modified, last_id = after
                query["$or"] = [
                    {"pvt_modified": {"$gt": modified}},
                    {"pvt_modified": modified, "_id": {"$gt": last_id}},
                ]
            docs = list(
                self.numbers.find(query, {"_id": 1, "pvt_modified": 1, "pvt_rev": 1})
                .sort([("pvt_state", 1), ("pvt_modified", 1), ("_id", 1)])
                .limit(self.batch_size)
            )
            if not docs:
                return done
            report.batches += 1
            last = docs[-1]
            after = (last.get("pvt_modified") or as_of, last["_id"])
            if dry_run:
                done += len(docs)
                continue
            done += self._apply(kind, state, cutoff, as_of, docs)
            self._renew()

    def _apply(
        self,
        kind: SweepKind,
        state: NumberState,
        cutoff: datetime | None,
        as_of: datetime,
        docs: list[dict[str, Any]],
    ) -> int:
        """One bulk write whose filters re-check state, age and revision of every document."""
        ops: list[UpdateOne | DeleteOne] = []
        for doc in docs:
            guard: dict[str, Any] = {"_id": doc["_id"], "pvt_state": state.value}
            if "pvt_rev" in doc:
                guard["pvt_rev"] = doc["pvt_rev"]
            if cutoff is not None:
                guard["pvt_modified"] = {"$lt": cutoff}
            if kind == SweepKind.AGE:
                ops.append(
                    UpdateOne(
                        guard,
                        {
                            "$set": {
                                "pvt_state": NumberState.AVAILABLE.value,
                                "pvt_modified": as_of,
                            },
                            "$inc": {"pvt_rev": 1},
                        },
                    )
                )
            else:
                ops.append(DeleteOne(guard))
        result = self.numbers.bulk_write(ops, ordered=False)
        if kind == SweepKind.PURGE_DISCOVERY:
            self.knm.numbers.search_cache.forget_numbers(d["_id"] for d in docs)
        return result.modified_count if kind == SweepKind.AGE else result.deleted_count

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return list(self.runs.find().sort("started", -1).limit(limit))


def _doc(report: SweepReport) -> dict[str, Any]:
    return {
        "kinds": [k.value for k in report.kinds],
        "as_of": report.as_of,
        "dry_run": report.dry_run,
        "started": report.started,
        "finished": report.finished,
        "counts": report.counts,
        "batches": report.batches,
        "errors": report.errors,
    }
