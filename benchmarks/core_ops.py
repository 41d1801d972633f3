"""Issue 2 figures: MongoDB commands per batch operation, and operation-layer CPU per number.

For create, reserve, activate and release of 10, 100 and 500 numbers, counts the commands each
batch sends (pymongo command monitoring). Then, for a 500-number create, measures the CPU time
of this process spent outside the store's round trips (``time.thread_time`` around every Store
call is subtracted), per number. The store runs in its own process, so its CPU is not counted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.common import counted_client, mongo_server
from config.settings import Settings
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.store.numbers import CommitResult, Store

MASTER = "bench000000000000000000000000001"
RESELLER = "bench000000000000000000000000002"
CHILD = "bench000000000000000000000000003"
SIZES = (10, 100, 500)
#: The create whose operation-layer CPU is measured.
CPU_BATCH = 500


class TimedStore(Store):
    """A Store that records the CPU time spent inside its calls (the round trips)."""

    store_cpu = 0.0

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.store_cpu += time.thread_time() - start

    def find_numbers(self, numbers: Any) -> Any:
        return self._timed(super().find_numbers, numbers)

    def find_accounts(self, ids: Any) -> Any:
        return self._timed(super().find_accounts, ids)

    def commit(self, pns: Any) -> CommitResult:
        result: CommitResult = self._timed(super().commit, pns)
        return result

    def numbers_in_active_ports(self, numbers: Any) -> Any:
        return self._timed(super().numbers_in_active_ports, numbers)


STEPS: list[tuple[str, Callable[[Knm, list[str]], Any]]] = [
    ("create", lambda k, n: k.numbers.create(n, Options(auth_by=MASTER, assign_to=RESELLER))),
    ("reserve", lambda k, n: k.numbers.reserve(n, Options(auth_by=RESELLER, assign_to=CHILD))),
    ("activate", lambda k, n: k.numbers.move(n, CHILD, Options(auth_by=CHILD))),
    ("release", lambda k, n: k.numbers.release(n, Options(auth_by=CHILD))),
]


def numbers_for(size: int, block: int) -> list[str]:
    return [f"+1{415 + block}55{i:05d}" for i in range(size)]


def run() -> dict[str, Any]:
    report: dict[str, Any] = {"commands_per_operation": {}, "sizes": list(SIZES)}
    with mongo_server() as url:
        client, counter = counted_client(url)
        for block, size in enumerate(SIZES):
            db = client[f"knm_bench_{uuid.uuid4().hex[:8]}"]
            store = TimedStore(db)
            store.ensure_indexes()
            knm = Knm(store, Settings())
            knm.create_account(MASTER, "master", admin=True, allow_additions=True)
            knm.create_account(RESELLER, "reseller", parent=MASTER, allow_additions=True)
            knm.create_account(CHILD, "child", parent=RESELLER)
            nums = numbers_for(size, block)
            for name, step in STEPS:
                counter.reset()
                batch = step(knm, nums)
                if batch.failed:
                    raise RuntimeError(f"{name} x{size} failed: {list(batch.failed.items())[:3]}")
                report["commands_per_operation"].setdefault(name, {})[size] = {
                    "total": counter.total,
                    "by_command": dict(counter.counts),
                }
            client.drop_database(db.name)

        # CPU of the operation layer for a 500-number create, store round trips excluded.
        db = client[f"knm_bench_{uuid.uuid4().hex[:8]}"]
        store = TimedStore(db)
        store.ensure_indexes()
        knm = Knm(store, Settings())
        knm.create_account(MASTER, "master", admin=True, allow_additions=True)
        knm.create_account(RESELLER, "reseller", parent=MASTER, allow_additions=True)
        nums = numbers_for(CPU_BATCH, 9)
        store.store_cpu = 0.0
        start = time.thread_time()
        batch = knm.numbers.create(nums, Options(auth_by=MASTER, assign_to=RESELLER))
        total_cpu = time.thread_time() - start
        assert len(batch.succeeded) == CPU_BATCH, batch.failed
        op_cpu = total_cpu - store.store_cpu
        report["create_500_cpu"] = {
            "total_cpu_s": round(total_cpu, 4),
            "store_calls_cpu_s": round(store.store_cpu, 4),
            "operation_layer_cpu_s": round(op_cpu, 4),
            "operation_layer_cpu_us_per_number": round(op_cpu / CPU_BATCH * 1e6, 1),
        }
        client.drop_database(db.name)
        client.close()
    return report


def main() -> None:
    report = run()
    print(json.dumps(report, indent=2))
    print()
    print("MongoDB commands per batch operation (count must not grow with the batch size):")
    print(f"{'operation':<10}" + "".join(f"{s:>8}" for s in SIZES))
    for name, per_size in report["commands_per_operation"].items():
        print(f"{name:<10}" + "".join(f"{per_size[s]['total']:>8}" for s in SIZES))
    cpu = report["create_500_cpu"]
    print(
        f"\n500-number create: operation-layer CPU {cpu['operation_layer_cpu_s']} s "
        f"= {cpu['operation_layer_cpu_us_per_number']} us/number "
        f"(store round trips excluded: {cpu['store_calls_cpu_s']} s of {cpu['total_cpu_s']} s)"
    )


if __name__ == "__main__":
    main()
