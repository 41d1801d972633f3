"""Issue 5 figures: MongoDB commands of the aging sweep, and how they grow.

Counts every command a sweep sends (pymongo command monitoring: lock, finds, bulk writes, run
report, unlock) while it ages ``due`` numbers among ``not due`` ones. Not-due documents are
half ``aging`` but recent (the same index prefix as the due ones) and half in other states
(``in_service``/``available``, as old as the due ones), so neither the state nor the age alone
picks the due numbers.

1. Independence: 1,000 due among 0 / 2,000 / 9,000 not due (the count must not change).
2. Growth with 10x as many not due: 1,000 among 10,000 and ``KNM_BENCH_SWEEP_MAX_DUE`` (default
   10,000) among 10x that, in batches of 1,000.
3. 100,000 due among 1,000,000 is out of reach of the test MongoDB (mongoeco keeps everything
   in memory and scans the collection on every ``find``), so that row is emulated: the largest
   collection swept in batches of 100 makes as many batches as 10x the due numbers would in
   batches of 1,000, and a batch's commands do not depend on its size.

Seeding: mongoeco's wire ``insert`` checks every existing ``_id`` per document (quadratic:
148 s for 8,000 documents), so against the in-memory server the documents are handed to its
engine in bulk; with ``KNM_BENCH_MONGODB_URL`` (a real MongoDB) they are inserted normally. The
sweep itself always talks to the server through pymongo, over the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from pymongo.database import Database

from benchmarks.common import CommandCounter, counted_client, engine_name, mongo_server
from config.settings import Settings
from knm.domain.number import utcnow
from knm.services.facade import Knm
from knm.services.sweeps import Sweeper, SweepKind
from knm.store import embedded
from knm.store.numbers import Store

Doc = dict[str, Any]
MODULE = "knm_telnyx"
ACCOUNT = "bench00000000000000000000000005a"
MAX_DUE = int(os.environ.get("KNM_BENCH_SWEEP_MAX_DUE", "10000"))
SEED_CHUNK = 5000
#: Due numbers of the independence runs, and the not-due counts beside them.
BASE_DUE = 1000
NOT_DUE = (0, 2000, 9000)


class _Server(embedded.WireServerThread):
    """The in-memory wire server, keeping its engine so the benchmark can seed in bulk."""

    engine: Any = None

    def _engine(self) -> Any:
        self.engine = super()._engine()
        return self.engine

    def insert(self, db: str, collection: str, docs: list[Doc]) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self.engine.insert_documents(db, collection, docs), self._loop
        )
        future.result()


@contextmanager
def _mongo() -> Iterator[tuple[str, _Server | None]]:
    """The embedded default (seeded with ``insert_many``: its inserts are linear), a MongoDB
    server (``KNM_BENCH_MONGODB_URL``), or the in-memory engine (``KNM_BENCH_ENGINE=memory``,
    seeded through its engine in bulk: its wire inserts scan the collection)."""
    if engine_name() != "memory":
        with mongo_server() as url:
            yield url, None
        return
    server = _Server()
    try:
        yield server.start(), server
    finally:
        server.stop()


class Bench:
    """One database, grown step by step; ``sweep`` measures one aging sweep and undoes it."""

    def __init__(self, db: Database[Doc], server: _Server | None, counter: CommandCounter):
        self.db = db
        self.server = server
        self.counter = counter
        store = Store(db)
        store.ensure_indexes()
        self.knm = Knm(store, Settings())
        self.now = utcnow()
        self.due = 0
        self.not_due = 0

    def _doc(self, number: str, state: str, modified: datetime) -> Doc:
        doc: Doc = {
            "_id": number,
            "pvt_type": "number",
            "pvt_state": state,
            "pvt_carrier_module": MODULE,
            "pvt_ported_in": False,
            "pvt_features": {},
            "pvt_created": modified,
            "pvt_modified": modified,
            "pvt_rev": 1,
        }
        if state == "in_service":
            doc["pvt_assigned_to"] = ACCOUNT
        return doc

    def _seed(self, docs: list[Doc]) -> float:
        start = time.monotonic()
        for i in range(0, len(docs), SEED_CHUNK):
            chunk = docs[i : i + SEED_CHUNK]
            if self.server is not None:
                self.server.insert(self.db.name, "numbers", chunk)
            else:
                self.db["numbers"].insert_many(chunk, ordered=False)
        return time.monotonic() - start

    def grow(self, due: int, not_due: int) -> float:
        """Add documents until ``due`` are due and ``not_due`` are not; returns seconds."""
        old = self.now - timedelta(days=100)
        recent = self.now - timedelta(days=10)
        docs = [self._doc(f"+1200{n:08d}", "aging", old) for n in range(self.due, due)]
        for n in range(self.not_due, not_due):
            if n % 2:
                docs.append(self._doc(f"+1300{n:08d}", "aging", recent))
            else:
                docs.append(self._doc(f"+1300{n:08d}", "in_service" if n % 4 else "available", old))
        self.due, self.not_due = due, not_due
        return self._seed(docs)

    def sweep(self, batch_size: int = 1000) -> dict[str, Any]:
        sweeper = Sweeper(self.knm, batch_size=batch_size)
        self.counter.reset()
        start = time.monotonic()
        report = sweeper.run([SweepKind.AGE], now=self.now)
        seconds = time.monotonic() - start
        commands = dict(self.counter.counts)
        if report.counts != {"aged": self.due} or report.errors:
            raise RuntimeError(f"expected {self.due} aged: {report.to_json()}")
        total = sum(commands.values())
        row = {
            "due": self.due,
            "not_due": self.not_due,
            "batch_size": batch_size,
            "batches": report.batches,
            "commands": total,
            "by_command": commands,
            "per_1000_aged": round(total / (self.due / 1000), 2),
            "sweep_s": round(seconds, 2),
        }
        # undo: the due numbers age again (not counted)
        self.db["numbers"].update_many(
            {"_id": {"$gte": "+1200", "$lt": "+1201"}},
            {"$set": {"pvt_state": "aging", "pvt_modified": self.now - timedelta(days=100)}},
        )
        return row


def run() -> dict[str, Any]:
    report: dict[str, Any] = {"max_due": MAX_DUE}
    with _mongo() as (url, server):
        client, counter = counted_client(url)
        db = client[f"knm_bench_{uuid.uuid4().hex[:8]}"]
        bench = Bench(db, server, counter)
        seeding: dict[str, float] = {}
        try:
            independence = []
            for not_due in NOT_DUE:
                seeding[f"{BASE_DUE}+{not_due}"] = round(bench.grow(BASE_DUE, not_due), 1)
                independence.append(bench.sweep())
            report["independence"] = independence

            growth = []
            seeding[f"{BASE_DUE}+{10 * BASE_DUE}"] = round(bench.grow(BASE_DUE, 10 * BASE_DUE), 1)
            growth.append(bench.sweep())
            if MAX_DUE > BASE_DUE:
                seeding[f"{MAX_DUE}+{10 * MAX_DUE}"] = round(bench.grow(MAX_DUE, 10 * MAX_DUE), 1)
                growth.append(bench.sweep())
                emulated = bench.sweep(batch_size=100)
                emulated["emulates"] = {"due": 10 * MAX_DUE, "batch_size": 1000}
                emulated["per_1000_aged"] = round(emulated["commands"] / (10 * MAX_DUE / 1000), 2)
                growth.append(emulated)
            report["growth"] = growth
            report["seeding_s"] = seeding
        finally:
            client.drop_database(db.name)
            client.close()
    return report


def _line(row: dict[str, Any]) -> str:
    due = f"{row['due']:,}"
    if "emulates" in row:
        due = f"{row['emulates']['due']:,}*"
    return (
        f"{due:>9} {row['not_due']:>10,} {row['batch_size']:>6} {row['batches']:>8} "
        f"{row['commands']:>9} {row['per_1000_aged']:>9} {row['sweep_s']:>9}"
    )


def main() -> None:
    report = run()
    print(json.dumps(report, indent=2))
    head = (
        f"{'due':>9} {'not due':>10} {'batch':>6} {'batches':>8} {'commands':>9} "
        f"{'per 1,000':>9} {'sweep s':>9}"
    )
    print("\nAging sweep: MongoDB commands (lock + finds + bulk writes + run report + unlock)")
    print("1. the not-due count does not matter:")
    print(head)
    for row in report["independence"]:
        print(_line(row))
    print("2. growth with 10x as many not due:")
    print(head)
    for row in report["growth"]:
        print(_line(row))
    if any("emulates" in row for row in report["growth"]):
        row = next(r for r in report["growth"] if "emulates" in r)
        print(
            f"   * emulated: {row['due']:,} due among {row['not_due']:,} in batches of 100 make "
            f"the batches and commands of {row['emulates']['due']:,} due in batches of 1,000 "
            "(per 1,000 of those)"
        )
    print("   (the embedded store, like MongoDB, reads each batch from the (pvt_state,")
    print("   pvt_modified) index range: its seconds follow the numbers aged, not the collection;")
    print("   mongoeco's in-memory engine, KNM_BENCH_ENGINE=memory, scans it on every find)")


if __name__ == "__main__":
    main()
