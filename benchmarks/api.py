"""Issue 17 figures: the HTTP API as a producer.

One run starts a private redis-server, the store (the embedded default, see ``common``), one knm
worker (solo pool) and one ``knm api serve`` process, then measures:

- reads: requests/s of ``GET /v2/accounts/{A}/phone_numbers/{N}`` on the one API process
  (``CLIENTS`` client threads with keep-alive connections), and the median latency of one;
- writes: the median latency of ``PUT .../phone_numbers/{N}/activate`` through the API against
  the same task (``knm.numbers.activate``, same number, account and requester) sent with a plain
  Celery client's ``send_task``, in the same run, alternating; the ratio's target is <= 1.3x;
- uploads: a CSV of ``CSV_SIZES`` rows streamed (chunked) to ``PUT .../tasks``: the time until
  the task is accepted (every row validated and stored) and the API process' peak RSS during
  the upload, sampled from /proc (target: flat across sizes, under 100 MB).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from pymongo import MongoClient

from benchmarks.common import engine_name, mongo_server, redis_server, worker_argv
from config.settings import Settings
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.store.api_keys import ApiKeyStore
from knm.store.numbers import Store

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("KNM_BENCH_API_ROUNDS", "60"))
GET_REQUESTS = int(os.environ.get("KNM_BENCH_API_GETS", "2000"))
CLIENTS = 4
CSV_SIZES = tuple(
    int(n) for n in os.environ.get("KNM_BENCH_API_CSV_SIZES", "10000,100000").split(",") if n
)
ACCOUNT = "bench0000000000000000000000000a1"
NUMBER = "+14155550998"


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The highest RSS of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self.peak_kb = _rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))


def _median_ms(fn: Callable[[], Any], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _csv_rows(rows: int) -> Iterator[bytes]:
    """A CSV of ``rows`` fresh numbers, generated piece by piece (never held whole)."""
    yield b"e164,account_id\r\n"
    batch: list[str] = []
    for i in range(rows):
        batch.append(f"+1628{i:07d},\r\n")
        if len(batch) == 1000:
            yield "".join(batch).encode()
            batch = []
    if batch:
        yield "".join(batch).encode()


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait(predicate: Callable[[], bool], what: str, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not ready yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def run() -> dict[str, Any]:
    """The run, on a private redis-server started for it (never the machine's Redis)."""
    with redis_server() as broker:
        return _run(broker)


def _run(broker: str) -> dict[str, Any]:
    with mongo_server() as url, tempfile.TemporaryDirectory(prefix="knm-bench-") as data_dir:
        db_name = f"knm_bench_{uuid.uuid4().hex[:8]}"
        settings = Settings(mongodb_url=url, mongodb_db=db_name)
        mongo: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
        store = Store(mongo[db_name])
        store.ensure_indexes()
        knm = Knm(store, settings)
        knm.create_account(ACCOUNT, "bench", admin=True, allow_additions=True)
        knm.numbers.create([NUMBER], Options(assign_to=ACCOUNT))
        key = ApiKeyStore(store.db).create(ACCOUNT, "bench")[0]
        env = {
            **os.environ,
            "KNM_BROKER_URL": broker,
            "KNM_MONGODB_URL": url,
            "KNM_MONGODB_DB": db_name,
            "KNM_DATA_DIR": data_dir,
            "KNM_API_WAIT_S": "60",
            "PYTHONPATH": str(ROOT),
        }
        port = _free_port()
        worker = _start(
            worker_argv("celery", "bench", "solo"),
            env,
        )
        api = _start([sys.executable, "-m", "knm", "api", "serve", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"
        client = Celery(broker=broker, backend=broker)
        try:
            _wait(
                lambda: client.send_task("knm.ping", queue="knm").get(timeout=2) == "pong",
                "the worker",
            )
            _wait(lambda: httpx.get(f"{base}/v2/health").status_code == 200, "the API")
            headers = {"X-Auth-Token": key}
            with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
                reads = _reads(base, headers, http)
                writes = _writes(http, client)
                uploads = [_upload(http, api.pid, rows) for rows in CSV_SIZES]
        finally:
            _stop(api)
            _stop(worker)
            mongo.drop_database(db_name)
            mongo.close()
    return {
        "engine": engine_name(),
        "reads": reads,
        "writes": writes,
        "uploads": uploads,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reads(base: str, headers: dict[str, str], http: httpx.Client) -> dict[str, Any]:
    path = f"/v2/accounts/{ACCOUNT}/phone_numbers/%2B{NUMBER[1:]}"
    assert http.get(path).status_code == 200
    one = statistics.median(_median_ms(lambda: http.get(path), min(ROUNDS, 200)))
    per_client = max(1, GET_REQUESTS // CLIENTS)
    failures: list[int] = []

    def client_loop() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as own:
            for _ in range(per_client):
                status = own.get(path).status_code
                if status != 200:
                    failures.append(status)

    threads = [threading.Thread(target=client_loop) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"GET failed {len(failures)} times: {sorted(set(failures))}")
    return {
        "requests": per_client * CLIENTS,
        "clients": CLIENTS,
        "requests_per_s": round(per_client * CLIENTS / elapsed, 1),
        "median_ms_one_client": round(one, 2),
    }


def _writes(http: httpx.Client, client: Celery) -> dict[str, Any]:
    path = f"/v2/accounts/{ACCOUNT}/phone_numbers/%2B{NUMBER[1:]}/activate"
    kwargs = {"numbers": [NUMBER], "account": ACCOUNT, "auth_by": ACCOUNT}

    def through_api() -> None:
        response = http.put(path)
        if response.status_code != 201:
            raise RuntimeError(f"activate through the API: {response.status_code} {response.text}")

    def through_send_task() -> None:
        result = client.send_task("knm.numbers.activate", kwargs=kwargs).get(timeout=60)
        if not result.get("succeeded"):
            raise RuntimeError(f"activate through send_task: {result}")

    through_api()
    through_send_task()  # warm both paths
    api_ms: list[float] = []
    task_ms: list[float] = []
    for _ in range(ROUNDS):  # alternating, so both see the same machine
        api_ms += _median_ms(through_api, 1)
        task_ms += _median_ms(through_send_task, 1)
    api, task = statistics.median(api_ms), statistics.median(task_ms)
    return {
        "rounds": ROUNDS,
        "median_ms_api": round(api, 2),
        "median_ms_send_task": round(task, 2),
        "api_vs_send_task": round(api / task, 2),
    }


def _upload(http: httpx.Client, pid: int, rows: int) -> dict[str, Any]:
    before = _rss_kb(pid)
    start = time.perf_counter()
    with PeakRss(pid) as peak:
        response = http.put(
            f"/v2/accounts/{ACCOUNT}/tasks?category=number_management&action=import",
            content=_csv_rows(rows),
            headers={"Content-Type": "text/csv"},
        )
    elapsed = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"upload of {rows} rows: {response.status_code} {response.text[:300]}")
    task = response.json()["data"]
    if task["total_count"] != rows:
        raise RuntimeError(f"upload of {rows} rows stored {task['total_count']}")
    http.delete(f"/v2/accounts/{ACCOUNT}/tasks/{task['id']}")
    return {
        "rows": rows,
        "seconds_to_accept": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed, 1),
        "rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(peak.peak_kb / 1024, 1),
    }


def main() -> None:
    report = run()
    print(json.dumps(report, indent=2))
    reads, writes = report["reads"], report["writes"]
    print(
        f"\nGET .../phone_numbers/{{N}}: {reads['requests_per_s']} requests/s "
        f"({reads['clients']} clients, one API process), {reads['median_ms_one_client']} ms each"
    )
    print(
        f"activate through the API: {writes['median_ms_api']} ms vs send_task "
        f"{writes['median_ms_send_task']} ms: {writes['api_vs_send_task']}x (target <= 1.3x)"
    )
    for up in report["uploads"]:
        print(
            f"CSV upload of {up['rows']:,} rows: accepted in {up['seconds_to_accept']} s, "
            f"API peak RSS {up['peak_rss_mb']} MB (before {up['rss_before_mb']} MB)"
        )


if __name__ == "__main__":
    main()
