"""Issue 3 figure: broker round trip of a knm task versus a no-op Celery task, same broker.

A real worker (one solo process) serves Redis; the producer is a plain Celery client. For
``knm.ping`` (no-op), ``knm.numbers.get`` (one number, runs where received) and
``knm.numbers.activate`` (one number already in service: routed to its carrier queue, so two
hops at HEAD of issue 15) and ``knm.numbers.update`` (a routed write on the local carrier that
really changes the document: a public field alternates), it times N round trips and takes the
median, and measures the worker's CPU per task against the no-op's. The operation's own time,
measured in process on the same store, is subtracted to give the overhead knm adds to the
broker's.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery
from pymongo import MongoClient

from benchmarks.common import mongo_server, redis_server, worker_argv
from config.settings import Settings
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.numbers_requests import NumbersRequest, Operation, execute
from knm.store.numbers import Store

ROUNDS = 60
#: Tasks per CPU measurement: the kernel counts CPU in 10 ms ticks, so many make it precise.
CPU_ROUNDS = 300
#: Tasks of one kind in a row while CPU is measured: the kinds take turns in batches this size,
#: so a change in the machine's load (it is shared) weighs on each kind alike.
CPU_BATCH = 20
ACCOUNT = "bench0000000000000000000000000e1"
NUMBER = "+14155550999"


def _median_ms(fn: Callable[[], Any], rounds: int | None = None) -> float:
    rounds = rounds or ROUNDS
    fn()  # warm up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _interleaved_cpu_ms(pid: int, calls: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """The worker's CPU per call of each of ``calls``, the kinds taking turns in batches of
    ``CPU_BATCH`` (measured one kind after the other, a change in load between them skewed
    their ratio by half)."""
    rounds = min(CPU_ROUNDS, 5 * ROUNDS)
    batch = min(CPU_BATCH, rounds)
    batches = max(1, rounds // batch)
    for fn in calls.values():
        fn()
    spent = dict.fromkeys(calls, 0.0)
    for _ in range(batches):
        for name, fn in calls.items():
            before = _cpu_s(pid)
            for _ in range(batch):
                fn()
            spent[name] += _cpu_s(pid) - before
    return {name: cpu / (batches * batch) * 1000 for name, cpu in spent.items()}


def _wait_ready(client: Celery, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if client.send_task("knm.ping", queue="knm").get(timeout=2) == "pong":
                return
        except Exception:  # not ready yet
            continue
    raise RuntimeError("the benchmark worker did not start")


def run() -> dict[str, Any]:
    """The run, on a private redis-server started for it (never the machine's Redis)."""
    with redis_server() as broker:
        return _run(broker)


def _run(BROKER: str) -> dict[str, Any]:  # noqa: N803
    with mongo_server() as url, tempfile.TemporaryDirectory(prefix="knm-bench-") as data_dir:
        db_name = f"knm_bench_{uuid.uuid4().hex[:8]}"
        settings = Settings(mongodb_url=url, mongodb_db=db_name)
        mongo: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
        store = Store(mongo[db_name])
        store.ensure_indexes()
        knm = Knm(store, settings)
        knm.create_account(ACCOUNT, "bench", admin=True, allow_additions=True)
        knm.numbers.create([NUMBER], Options(assign_to=ACCOUNT))
        env = {
            **os.environ,
            "KNM_BROKER_URL": BROKER,
            "KNM_MONGODB_URL": url,
            "KNM_MONGODB_DB": db_name,
            "KNM_DATA_DIR": data_dir,
        }
        worker = subprocess.Popen(
            worker_argv(
                # the plain worker users run: this benchmark counts no commands, and pymongo's
                # command monitoring would add its cost to every task that reads the store
                "celery",
                "bench",
                "solo",
                loglevel=os.environ.get("KNM_BENCH_WORKER_LOGLEVEL", "WARNING"),
            ),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("KNM_BENCH_WORKER_LOGLEVEL") else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            client = Celery(broker=BROKER, backend=BROKER)
            _wait_ready(client)
            get_kwargs = {"numbers": [NUMBER]}
            act_kwargs = {"numbers": [NUMBER], "account": ACCOUNT}
            noop = _median_ms(lambda: client.send_task("knm.ping", queue="knm").get(timeout=30))
            get = _median_ms(
                lambda: client.send_task("knm.numbers.get", kwargs=get_kwargs).get(timeout=30)
            )
            activate = _median_ms(
                lambda: client.send_task("knm.numbers.activate", kwargs=act_kwargs).get(timeout=30)
            )
            ping_call = lambda: client.send_task("knm.ping", queue="knm").get(timeout=30)  # noqa: E731
            get_call = lambda: client.send_task("knm.numbers.get", kwargs=get_kwargs).get(  # noqa: E731
                timeout=30
            )
            act_call = lambda: client.send_task(  # noqa: E731
                "knm.numbers.activate", kwargs=act_kwargs
            ).get(timeout=30)
            flips = iter(range(10**9))

            def write_call() -> Any:
                kwargs = {"numbers": [NUMBER], "public_fields": {"bench": next(flips) % 2}}
                return client.send_task("knm.numbers.update", kwargs=kwargs).get(timeout=30)

            written = write_call()
            assert NUMBER in written["succeeded"], written
            cpu = _interleaved_cpu_ms(
                worker.pid,
                {
                    "noop": ping_call,
                    "get": get_call,
                    "activate": act_call,
                    "routed_write": write_call,
                },
            )
            get_op = _median_ms(
                lambda: execute(knm, Operation.GET, NumbersRequest(numbers=[NUMBER]))
            )
            act_op = _median_ms(
                lambda: execute(
                    knm, Operation.ACTIVATE, NumbersRequest(numbers=[NUMBER], account=ACCOUNT)
                )
            )
        finally:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
            mongo.drop_database(db_name)
            mongo.close()
    return {
        "worker_cpu_ms_per_task": {k: round(v, 2) for k, v in cpu.items()},
        "broker": BROKER,
        "rounds": ROUNDS,
        "median_ms": {
            "noop_round_trip": round(noop, 2),
            "get_round_trip": round(get, 2),
            "activate_round_trip": round(activate, 2),
            "get_operation_in_process": round(get_op, 2),
            "activate_operation_in_process": round(act_op, 2),
        },
        "ratios": {
            "get_round_trip_vs_noop": round(get / noop, 2),
            "get_broker_overhead_vs_noop": round((get - get_op) / noop, 2),
            "activate_round_trip_vs_noop": round(activate / noop, 2),
            "activate_broker_overhead_vs_noop": round((activate - act_op) / noop, 2),
            # None when the no-op's CPU is below the clock tick (a tiny run)
            "get_worker_cpu_vs_noop": round(cpu["get"] / cpu["noop"], 2) if cpu["noop"] else None,
            "activate_worker_cpu_vs_noop": (
                round(cpu["activate"] / cpu["noop"], 2) if cpu["noop"] else None
            ),
            "routed_write_worker_cpu_vs_noop": (
                round(cpu["routed_write"] / cpu["noop"], 2) if cpu["noop"] else None
            ),
        },
    }


def main() -> None:
    report = run()
    print(json.dumps(report, indent=2))
    r = report["ratios"]
    print(
        f"\nknm.numbers.get: {r['get_round_trip_vs_noop']}x a no-op round trip; broker overhead "
        f"(operation time excluded) {r['get_broker_overhead_vs_noop']}x"
    )
    print(
        f"knm.numbers.activate (routed to carrier.knm_local, two hops): "
        f"{r['activate_round_trip_vs_noop']}x; overhead {r['activate_broker_overhead_vs_noop']}x"
    )
    cpu = report["worker_cpu_ms_per_task"]
    print(
        f"worker CPU per task (ms): no-op {cpu['noop']}, get {cpu['get']}, activate "
        f"{cpu['activate']}, routed local write (update) {cpu['routed_write']}: "
        f"get {r['get_worker_cpu_vs_noop']}x, activate {r['activate_worker_cpu_vs_noop']}x, "
        f"routed write {r['routed_write_worker_cpu_vs_noop']}x a no-op"
    )


if __name__ == "__main__":
    main()
