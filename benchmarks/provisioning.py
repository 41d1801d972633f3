"""Background provisioning throughput: many purchases through real workers and the sandbox.

``N`` numbers (default 500) are discovered, then bought with one ``knm.numbers.activate`` task
each, as another service would send them. The sandbox answers every provider request after
``--latency`` ms (default 200). One worker routes (``knm`` queue, threads pool), one worker buys
(``carrier.knm_telnyx``, threads pool of ``--concurrency``, default 50). The wall time from the
first publish to the last result is compared with the latency-bound limit N x latency /
concurrency (500 x 0.2 s / 50 = 2 s; target under 2x). KAZOO makes these calls one at a time:
N x latency (100 s). Also counted: sandbox order requests and purchases per number (1 each),
and each worker process's CPU time.

``python -m benchmarks.provisioning [--numbers N] [--latency MS] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from celery import Celery
from pymongo import MongoClient

from benchmarks.common import mongo_server, redis_server
from carriers.http import close_clients
from carriers.sandbox import Injection, Sandbox, SandboxClient
from config.settings import Settings, reset_settings
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from knm.store.numbers import Store

ACCOUNT = "b0" * 16


def _worker(
    env: dict[str, str], queues: str, concurrency: int, name: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "--queues",
            queues,
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            os.environ.get("KNM_BENCH_WORKER_LOGLEVEL", "WARNING"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("KNM_BENCH_WORKER_LOGLEVEL") else subprocess.DEVNULL,
        start_new_session=True,
    )


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(client: Celery, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if client.send_task("knm.ping", queue="knm").get(timeout=2) == "pong":
                return
        except Exception:  # not ready yet
            continue
    raise RuntimeError("the benchmark workers did not start")


def run(numbers: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    """The run, on a private redis-server started for it (never the machine's Redis)."""
    with redis_server() as broker:
        return _run(broker, numbers, latency_ms, concurrency)


def _run(BROKER: str, numbers: int, latency_ms: float, concurrency: int) -> dict[str, Any]:  # noqa: N803
    injection = Injection(latency_ms=latency_ms)
    with (
        mongo_server() as url,
        Sandbox(injection=injection, stock_size=numbers + 10) as sandbox,
        tempfile.TemporaryDirectory(prefix="knm-bench-") as data_dir,
    ):
        db_name = f"knm_bench_{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            **sandbox.env(),
            "KNM_BROKER_URL": BROKER,
            "KNM_MONGODB_URL": url,
            "KNM_MONGODB_DB": db_name,
            "KNM_DATA_DIR": data_dir,
            "KNM_MAXIMUM_SEARCH_QUANTITY": str(max(500, numbers)),
        }
        saved = dict(os.environ)
        os.environ.update(env)
        reset_settings()
        close_clients()
        try:
            mongo: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
            store = Store(mongo[db_name])
            store.ensure_indexes()
            knm = Knm(store, Settings())
            knm.create_account(ACCOUNT, "bench", allow_additions=True, reseller=True)
            found = knm.search(
                SearchQuery(
                    prefix="646", quantity=numbers, account_id=ACCOUNT, carriers=["knm_telnyx"]
                )
            )
            wanted = [r.number for r in found]
            assert len(wanted) == numbers, len(wanted)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_settings()
        router = _worker(env, "knm", 16, "router")
        buyer = _worker(env, "carrier.knm_telnyx", concurrency, "buyer")
        try:
            client = Celery(broker=BROKER, backend=BROKER)
            _wait_ready(client)
            control = SandboxClient(sandbox.url)
            before = control.requests("telnyx").get("order", 0)
            cpu_before = (_cpu_s(router.pid), _cpu_s(buyer.pid))
            own_before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            results = [
                client.send_task(
                    "knm.numbers.activate",
                    kwargs={"numbers": [n], "account": ACCOUNT},
                    queue="knm",
                )
                for n in wanted
            ]
            values = [r.get(timeout=600) for r in results]
            wall = time.perf_counter() - started
            cpu = (_cpu_s(router.pid) - cpu_before[0], _cpu_s(buyer.pid) - cpu_before[1])
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            own = (own_after.ru_utime - own_before.ru_utime) + (
                own_after.ru_stime - own_before.ru_stime
            )
            stats = control.stats()
            control.close()
        finally:
            for proc in (router, buyer):
                proc.terminate()
            for proc in (router, buyer):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        mongo.drop_database(db_name)
    bought = sum(len(v["succeeded"]) for v in values)
    purchases = stats["purchases"].get("telnyx", {})
    limit = numbers * latency_ms / 1000 / concurrency
    return {
        "numbers": numbers,
        "bought": bought,
        "failed": sum(len(v["failed"]) for v in values),
        "wall_s": wall,
        "limit_s": limit,
        "ratio": wall / limit,
        "sequential_s": numbers * latency_ms / 1000,
        "orders": stats["requests"]["telnyx"].get("order", 0) - before,
        "max_purchases_per_number": max(purchases.values(), default=0),
        "router_cpu_s": cpu[0],
        "buyer_cpu_s": cpu[1],
        "store_sandbox_producer_cpu_s": own,
        "peak_in_flight": stats.get("peak_in_flight", {}).get("telnyx", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=500)
    parser.add_argument("--latency", type=float, default=200.0, help="ms per provider answer")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    r = run(args.numbers, args.latency, args.concurrency)
    knm_ms = 1000 * (r["router_cpu_s"] + r["buyer_cpu_s"]) / r["numbers"]
    print(
        f"{r['bought']}/{r['numbers']} bought ({r['failed']} failed) in {r['wall_s']:.2f} s = "
        f"{r['ratio']:.2f}x the latency-bound {r['limit_s']:.2f} s "
        f"(one at a time: {r['sequential_s']:.0f} s); {r['orders']} order requests, "
        f"at most {r['max_purchases_per_number']} purchase per number; peak provider calls "
        f"in flight {r['peak_in_flight']}"
    )
    print(
        f"CPU: router {r['router_cpu_s']:.1f} s, buyer {r['buyer_cpu_s']:.1f} s (knm: "
        f"{knm_ms:.1f} ms per purchase); MongoDB server + sandbox + producer "
        f"{r['store_sandbox_producer_cpu_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
