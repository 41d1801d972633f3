"""Background provisioning throughput: many purchases through real workers and the sandbox.

``N`` numbers (default 500) are discovered, then bought with one ``knm.numbers.activate`` task
each, as another service would send them. The sandbox answers every provider request after
``--latency`` ms (default 200). One worker routes (``knm`` queue, threads pool), one worker buys
(``carrier.knm_telnyx``, threads pool of ``--concurrency``, default 50). The wall time from the
first publish to the last result is compared with the latency-bound limit N x latency /
concurrency (500 x 0.2 s / 50 = 2 s; target under 2x). KAZOO makes these calls one at a time:
N x latency (100 s). Also counted: sandbox order requests and purchases per number (1 each),
and each worker process's CPU time, against the CPU of a no-op ``knm.ping`` on the same workers.

MongoDB commands are counted in the workers themselves (pymongo command monitoring,
``benchmarks.counting_worker``, ``getMore`` included): per purchase, and per row of a CSV job
(``assign_to`` of ``--csv-rows`` discovered numbers, default 50) that buys on the same carrier.

``--via carrier`` (default) publishes each purchase straight to ``carrier.knm_telnyx``, as a
producer holding a search result (which names the module) can; ``--via knm`` to knm's queue.

``python -m benchmarks.provisioning [--numbers N] [--latency MS] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from celery import Celery
from pymongo import MongoClient

from benchmarks.common import mongo_server, process_cpu_s, redis_server, server_pid, worker_argv
from benchmarks.counting_worker import read_counts
from carriers.http import close_clients
from carriers.sandbox import Injection, Sandbox, SandboxClient
from config.settings import Settings, reset_settings
from knm.services import jobs
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from knm.store.numbers import Store

ACCOUNT = "b0" * 16
CARRIER_QUEUE = "carrier.knm_telnyx"
PINGS = 200


def _worker(
    env: dict[str, str], queues: str, concurrency: int, name: str, commands: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        worker_argv(
            "benchmarks.counting_worker",
            name,
            "threads",
            *("--queues", queues, "--concurrency", str(concurrency)),
            loglevel=os.environ.get("KNM_BENCH_WORKER_LOGLEVEL", "WARNING"),
        ),
        env={**env, "KNM_BENCH_COMMANDS_FILE": str(commands)},
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


def run(
    numbers: int, latency_ms: float, concurrency: int, csv_rows: int = 50, via: str = "carrier"
) -> dict[str, Any]:
    """The run, on a private redis-server started for it (never the machine's Redis)."""
    with redis_server() as broker:
        return _run(broker, numbers, latency_ms, concurrency, csv_rows, via)


def _commands(files: tuple[Path, Path]) -> Counter[str]:
    """The MongoDB commands the workers sent so far, by name."""
    counts: Counter[str] = Counter()
    for f in files:
        counts.update(read_counts(f))
    return counts


def _run(
    BROKER: str,  # noqa: N803
    numbers: int,
    latency_ms: float,
    concurrency: int,
    csv_rows: int,
    via: str,
) -> dict[str, Any]:
    injection = Injection(latency_ms=latency_ms)
    with (
        mongo_server() as url,
        Sandbox(injection=injection, stock_size=numbers + csv_rows + 10) as sandbox,
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
            "KNM_MAXIMUM_SEARCH_QUANTITY": str(max(500, numbers + csv_rows)),
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
                    prefix="646",
                    quantity=numbers + csv_rows,
                    account_id=ACCOUNT,
                    carriers=["knm_telnyx"],
                )
            )
            wanted = [r.number for r in found][:numbers]
            for_csv = [r.number for r in found][numbers:]
            assert len(wanted) == numbers, len(found)
            assert len(for_csv) == csv_rows, len(found)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_settings()
        files = (Path(data_dir) / "router.commands", Path(data_dir) / "buyer.commands")
        router = _worker(env, "knm", 16, "router", files[0])
        buyer = _worker(env, CARRIER_QUEUE, concurrency, "buyer", files[1])
        try:
            client = Celery(broker=BROKER, backend=BROKER)
            _wait_ready(client)
            for queue in ("knm", CARRIER_QUEUE):
                # each worker opens its store (indexes ensured) on its first task, not in the
                # measured window: a read of one unknown number, served where it is received
                client.send_task(
                    "knm.numbers.get", kwargs={"numbers": ["+14155550100"]}, queue=queue
                ).get(timeout=60)
            control = SandboxClient(sandbox.url)
            before = control.requests("telnyx").get("order", 0)
            commands_before = _commands(files)
            store_pid = server_pid(url)
            store_before = process_cpu_s(store_pid) if store_pid else 0.0
            cpu_before = (_cpu_s(router.pid), _cpu_s(buyer.pid))
            own_before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            results = [
                client.send_task(
                    "knm.numbers.activate",
                    kwargs={"numbers": [n], "account": ACCOUNT},
                    queue=CARRIER_QUEUE if via == "carrier" else "knm",
                )
                for n in wanted
            ]
            values = [r.get(timeout=600) for r in results]
            wall = time.perf_counter() - started
            cpu = (_cpu_s(router.pid) - cpu_before[0], _cpu_s(buyer.pid) - cpu_before[1])
            store_cpu = process_cpu_s(store_pid) - store_before if store_pid else None
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            own = (own_after.ru_utime - own_before.ru_utime) + (
                own_after.ru_stime - own_before.ru_stime
            )
            purchase_commands = _commands(files)
            purchase_commands.subtract(commands_before)
            stats = control.stats()
            ping_cpu = _ping_cpu_s(client, (router.pid, buyer.pid))
            csv = _csv_job(knm, client, for_csv, files) if csv_rows else None
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
    per_purchase = (cpu[0] + cpu[1]) / numbers
    return {
        "via": via,
        "csv": csv,
        "mongo_commands_per_purchase": purchase_commands.total() / numbers,
        "mongo_commands_by_name": {k: v for k, v in sorted(purchase_commands.items()) if v},
        "worker_cpu_ms_per_purchase": 1000 * per_purchase,
        "worker_cpu_ms_per_ping": 1000 * ping_cpu,
        "purchase_cpu_vs_noop": per_purchase / ping_cpu if ping_cpu else None,
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
        #: the embedded store's own process (None: another store, measured elsewhere)
        "store_server_cpu_s": store_cpu,
        "peak_in_flight": stats.get("peak_in_flight", {}).get("telnyx", 0),
    }


def _ping_cpu_s(client: Celery, pids: tuple[int, int]) -> float:
    """Worker CPU per no-op ``knm.ping`` (both workers, as for a purchase), ``PINGS`` in flight."""
    before = sum(_cpu_s(p) for p in pids)
    pings = [client.send_task("knm.ping", queue="knm") for _ in range(PINGS)]
    for ping in pings:
        ping.get(timeout=120)
    return (sum(_cpu_s(p) for p in pids) - before) / PINGS


def _csv_job(
    knm: Knm, client: Celery, numbers: list[str], files: tuple[Path, Path]
) -> dict[str, Any]:
    """An ``assign_to`` job buying ``numbers`` (discovered on the provider carrier): the
    workers' MongoDB commands per row, from the chunk's publish to the job's end."""
    from workers.producer import submit_job

    data = ("e164\n" + "".join(f"{n}\n" for n in numbers)).encode()
    job = jobs.create_job(knm, "assign_to", io.BytesIO(data), account_id=ACCOUNT)
    before = _commands(files)
    started = time.perf_counter()
    submit_job(job.id, job.chunks, client)
    store = jobs.JobStore(knm)
    while True:
        current = store.get(job.id)
        assert current is not None
        if current.status in jobs.FINAL_STATUSES:
            break
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"the CSV job did not finish: {current.to_json()}")
        time.sleep(0.05)
    wall = time.perf_counter() - started
    commands = _commands(files) - before
    return {
        "rows": len(numbers),
        "succeeded": current.succeeded,
        "failed": current.failed,
        "wall_s": wall,
        "mongo_commands_per_row": commands.total() / len(numbers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=500)
    parser.add_argument("--latency", type=float, default=200.0, help="ms per provider answer")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--csv-rows", type=int, default=50)
    parser.add_argument("--via", choices=("carrier", "knm"), default="carrier")
    args = parser.parse_args()
    r = run(args.numbers, args.latency, args.concurrency, args.csv_rows, args.via)
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
    if r["store_server_cpu_s"] is not None:
        busy = r["router_cpu_s"] + r["buyer_cpu_s"] + r["store_sandbox_producer_cpu_s"]
        print(
            f"the embedded store's server used {r['store_server_cpu_s']:.1f} s of CPU; all "
            f"processes {busy + r['store_server_cpu_s']:.1f} s over {r['wall_s']:.1f} s on "
            f"{os.cpu_count()} cores; without the store on this host the CPU left would allow "
            f"{max(r['limit_s'], busy / (os.cpu_count() or 1)):.2f} s "
            f"({max(r['limit_s'], busy / (os.cpu_count() or 1)) / r['limit_s']:.2f}x the bound)"
        )
    ratio = r["purchase_cpu_vs_noop"]
    print(
        f"published to {r['via']}: worker CPU per purchase {r['worker_cpu_ms_per_purchase']:.2f} "
        f"ms / per no-op knm.ping {r['worker_cpu_ms_per_ping']:.2f} ms = "
        f"{ratio:.2f}x; MongoDB commands per purchase {r['mongo_commands_per_purchase']:.2f} "
        f"({r['mongo_commands_by_name']})"
        if ratio
        else "no-op CPU below the clock tick"
    )
    if r["csv"]:
        c = r["csv"]
        print(
            f"CSV assign_to job, {c['rows']} rows on knm_telnyx: {c['succeeded']} succeeded, "
            f"{c['failed']} failed in {c['wall_s']:.2f} s; MongoDB commands per row "
            f"{c['mongo_commands_per_row']:.2f}"
        )


if __name__ == "__main__":
    main()
