"""Scheduled sweeps (KAZOO's number crawler, fixed: see docs/kazoo.md).

* ``age``: ``aging`` numbers whose ``pvt_modified`` is older than ``aging_expiry_d`` become
  ``available`` (the state table's ``AGE_OUT`` row gives the states and the fields written);
* ``purge_discovery``: stored ``discovery`` documents older than ``discovery_expiry_d`` are
  deleted, with the search-cache entries that offer them;
* ``purge_deleted``: stored ``deleted`` documents are deleted.

Unlike KAZOO's crawler, which loaded every document of every number database, a sweep pages
through the ``(pvt_state, pvt_modified)`` index in bounded batches: one ``find`` and one bulk
write per batch, so its cost follows the number of due documents, not the collection. A written
document leaves the query (its state changes or it is gone), so each ``find`` starts again at the
head of the index range and nothing is skipped. Every write re-checks state, age and revision in
its filter, so a number changed while the sweep runs keeps its new state.

Each kind has its own lock (``locks``: ``sweeps.<kind>``, with an expiry renewed while the sweep
runs), so a kind never overlaps with itself while beat's three sweeps, which fire together, all
run. A sweep whose worker died leaves a lock that expires: the next sweep takes it over, records
the dead run as ``abandoned`` in ``sweep_runs`` and finishes the work. A finished run is recorded
there too (started, finished, counts per transition, errors).
"""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from pymongo import DeleteOne, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from knm.domain import states
from knm.domain.number import NumberState, utcnow
from knm.services.facade import Knm
from knm.store.numbers import find_in

BATCH_SIZE: Final[int] = 1000
LOCK_PREFIX: Final[str] = "sweeps."
#: Batches in a row in which every write lost its re-check before a sweep gives up (the same
#: documents keep changing under it); the next sweep picks them up.
MAX_STALLED_BATCHES: Final[int] = 3
#: The state table's row the ``age`` sweep applies to ``aging`` numbers: its guard (due after
#: ``aging_expiry_d``) and its effects (written by one bulk write per batch).
AGE_OUT: Final[states.Transition] = states.find(states.Event.AGE_OUT, NumberState.AGING)


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


def lock_id(kind: SweepKind) -> str:
    """The ``locks`` document of a kind of sweep (``sweeps.age``)."""
    return f"{LOCK_PREFIX}{kind.value}"


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive time is taken as UTC (``--now 2030-01-01T00:00``)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class SweepLockedError(RuntimeError):
    """Another sweep holds the lock: this one did nothing (or, ``lost``, stopped early)."""

    def __init__(self, holder: dict[str, Any], *, lost: bool = False) -> None:
        since = holder.get("acquired")
        kind = str(holder.get("_id", "")).removeprefix(LOCK_PREFIX) or "?"
        who = (
            f"{holder.get('owner', '?')}, since "
            f"{since.isoformat() if isinstance(since, datetime) else since}"
        )
        if lost:
            message = f"another {kind} sweep took over the expired lock ({who}); stopped early"
        else:
            message = f"another {kind} sweep is running ({who}); nothing done"
        super().__init__(message)
        self.holder = holder
        self.lost = lost


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
    """Runs sweeps against one store, holding the lock of each kind while it works."""

    def __init__(self, knm: Knm, *, lock_ttl_s: int = 300, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.knm = knm
        db = knm.store.db
        self.numbers = knm.store.numbers
        self.locks = db["locks"]
        self.runs = db["sweep_runs"]
        self.lock_ttl = timedelta(seconds=lock_ttl_s)
        self.batch_size = batch_size
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: list[str] = []
        self._renewed = utcnow()

    # ------------------------------------------------------------------------------- lock
    def _acquire(self, kinds: list[SweepKind], report: SweepReport) -> None:
        """Take the lock of every kind, or none of them."""
        now = utcnow()
        lock = {
            "owner": self.owner,
            "acquired": now,
            "expires_at": now + self.lock_ttl,
            "run": _doc(report),
        }
        try:
            for kind in kinds:
                self._acquire_one(lock_id(kind), lock, now)
        except BaseException:
            self._release()
            raise
        self._renewed = now

    def _acquire_one(self, name: str, lock: dict[str, Any], now: datetime) -> None:
        try:
            self.locks.insert_one({"_id": name, **lock})
        except DuplicateKeyError:
            previous = self.locks.find_one_and_update(
                {"_id": name, "expires_at": {"$lt": now}}, {"$set": lock}
            )
            if previous is None:
                raise SweepLockedError(
                    self.locks.find_one({"_id": name}) or {"_id": name}
                ) from None
            self._held.append(name)
            self._abandoned(previous)
            return
        self._held.append(name)

    def _abandoned(self, previous: dict[str, Any]) -> None:
        """Record the run whose lock expired (its worker died) as ``abandoned``."""
        run = previous.get("run")
        if not isinstance(run, dict) or not run.get("id"):
            return
        self.runs.update_one(
            {"_id": run["id"]},
            {
                "$setOnInsert": {
                    **{k: v for k, v in run.items() if k != "id"},
                    "status": "abandoned",
                    "owner": previous.get("owner"),
                    "abandoned_at": utcnow(),
                    "taken_over_by": self.owner,
                }
            },
            upsert=True,
        )

    def _renew(self, report: SweepReport) -> None:
        """Push the locks' expiry forward (once half their lifetime has passed), with progress."""
        now = utcnow()
        if now - self._renewed < self.lock_ttl / 2:
            return
        result = self.locks.update_many(
            {"_id": {"$in": self._held}, "owner": self.owner},
            {"$set": {"expires_at": now + self.lock_ttl, "run": _doc(report)}},
        )
        if result.matched_count < len(self._held):
            taken = self.locks.find_one({"_id": {"$in": self._held}, "owner": {"$ne": self.owner}})
            raise SweepLockedError(taken or {}, lost=True)
        self._renewed = now

    def _release(self) -> None:
        if self._held:
            self.locks.delete_many({"_id": {"$in": self._held}, "owner": self.owner})
            self._held = []

    # ------------------------------------------------------------------------------- runs
    def run(
        self, kinds: list[SweepKind], *, now: datetime | None = None, dry_run: bool = False
    ) -> SweepReport:
        """Run ``kinds`` as of ``now`` (default: the real now); raise if another sweep runs.

        A dry run only counts what is due (one query per kind): it takes no lock and records
        no run.
        """
        as_of = as_utc(now) if now is not None else utcnow()
        report = SweepReport(uuid.uuid4().hex, list(kinds), as_of, dry_run)
        if dry_run:
            for kind in kinds:
                report.counts[COUNTER[kind]] = self.numbers.count_documents(self._due(kind, as_of))
            report.finished = utcnow()
            return report
        self._acquire(report.kinds, report)
        try:
            try:
                for kind in report.kinds:
                    self._sweep(kind, as_of, report)
            except BaseException as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
                report.finished = utcnow()
                with suppress(PyMongoError):  # the store may be what failed
                    self._record(report, "failed")
                raise
            report.finished = utcnow()
            self._record(report, "finished")
        finally:
            with suppress(PyMongoError):  # an unreleased lock expires on its own
                self._release()
        return report

    def _record(self, report: SweepReport, status: str) -> None:
        self.runs.insert_one(
            {"_id": report.id, "status": status, "owner": self.owner, **_doc(report)}
        )

    def _cutoff(self, kind: SweepKind, as_of: datetime) -> tuple[NumberState, datetime | None]:
        settings = self.knm.settings
        if kind == SweepKind.AGE:
            cutoff = as_of - timedelta(days=settings.aging_expiry_d)
            return NumberState.AGING, cutoff if states.Guard.DUE in AGE_OUT.guards else None
        if kind == SweepKind.PURGE_DISCOVERY:
            return NumberState.DISCOVERY, as_of - timedelta(days=settings.discovery_expiry_d)
        return NumberState.DELETED, None

    def _due(self, kind: SweepKind, as_of: datetime) -> dict[str, Any]:
        state, cutoff = self._cutoff(kind, as_of)
        query: dict[str, Any] = {"pvt_state": state.value}
        if cutoff is not None:
            query["pvt_modified"] = {"$lt": cutoff}
        return query

    def _sweep(self, kind: SweepKind, as_of: datetime, report: SweepReport) -> None:
        """Batches of due documents from the head of the (pvt_state, pvt_modified) index.

        Written documents leave the query, so the next ``find`` starts at the head again. Each
        ``find`` reads one document past the batch to learn whether another batch follows; a
        batch whose writes all landed and had nothing after it was the last one.
        """
        state, cutoff = self._cutoff(kind, as_of)
        query = self._due(kind, as_of)
        counter = COUNTER[kind]
        report.counts.setdefault(counter, 0)
        stalled = 0
        while True:
            docs = list(
                self.numbers.find(query, {"_id": 1, "pvt_rev": 1})
                .sort([("pvt_state", 1), ("pvt_modified", 1)])
                .limit(self.batch_size + 1)
                .batch_size(self.batch_size + 1)  # the whole batch in the find's reply
            )
            if not docs:
                return
            more = len(docs) > self.batch_size
            docs = docs[: self.batch_size]
            report.batches += 1
            done = self._apply(kind, state, cutoff, as_of, docs)
            report.counts[counter] += done
            self._renew(report)
            if not more and done == len(docs):
                return
            # a write that lost its re-check may still be due (a new revision alone): read again
            stalled = 0 if done else stalled + 1
            if stalled >= MAX_STALLED_BATCHES:
                report.errors.append(
                    f"{kind.value}: {len(docs)} documents changed under the sweep "
                    f"{stalled} times in a row; left for the next sweep"
                )
                return

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
            guard: dict[str, Any] = {
                "_id": doc["_id"],
                "pvt_state": state.value,
                "pvt_rev": doc.get("pvt_rev", {"$exists": False}),
            }
            if cutoff is not None:
                guard["pvt_modified"] = {"$lt": cutoff}
            if kind == SweepKind.AGE:
                changes = states.stored_changes(AGE_OUT, as_of)
                ops.append(UpdateOne(guard, {"$set": changes, "$inc": {"pvt_rev": 1}}))
            else:
                ops.append(DeleteOne(guard))
        result = self.numbers.bulk_write(ops, ordered=False)
        if kind == SweepKind.AGE:
            return result.modified_count
        if kind == SweepKind.PURGE_DISCOVERY and result.deleted_count:
            self._forget(docs, result.deleted_count)
        return result.deleted_count

    def _forget(self, docs: list[dict[str, Any]], deleted: int) -> None:
        """Drop the search-cache entries offering the purged numbers (not the ones kept)."""
        ids = [d["_id"] for d in docs]
        if deleted < len(ids):
            store = self.knm.store
            kept = {
                d["_id"] for d in find_in(self.numbers, "_id", ids, store.max_in, None, {"_id": 1})
            }
            ids = [i for i in ids if i not in kept]
        self.knm.numbers.search_cache.forget_numbers(ids)

    def last_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        return list(self.runs.find().sort("started", -1).limit(limit))


def _doc(report: SweepReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "kinds": [k.value for k in report.kinds],
        "as_of": report.as_of,
        "dry_run": report.dry_run,
        "started": report.started,
        "finished": report.finished,
        "counts": dict(report.counts),
        "batches": report.batches,
        "errors": list(report.errors),
    }
