"""CSV import cost: MongoDB commands and broker messages per 1,000 rows, rows/s, knm's CPU.

``python -m benchmarks.csv_import``. For 1,000, 10,000 and 100,000 rows of an ``import`` CSV:

- **Baseline**, in this process: only parsing and validating the file (``CsvReader`` +
  ``csv_actions.bad_cells`` + ``convert.normalize`` per row): rows/s and CPU.
- **The job path**, end to end through the real broker: ``jobs.create_job`` (validate, store the
  rows) in the main thread, ``producer.submit_job`` publishes the chunk messages to a Redis server
  this benchmark starts (its own ``redis-server`` on a free port, so the broker's command counts are
  this run's only), and a real Celery worker (``celery.contrib.testing.worker``: solo pool, in a
  thread of this process, ``acks_late`` like production) consumes them and runs ``knm.jobs.chunk``.
  The task's ``get_knm`` is pointed at a ``Knm(Store(client[db]), Settings())`` whose pymongo
  client counts every command (``CommandCounter``), so the counts cover create, chunks and
  counting. Broker messages are counted in Redis (``INFO commandstats``): task messages published
  (``LPUSH``), event messages (``PUBLISH``: the producer's task-sent, the worker's batched task
  events), acks (``ZREM`` of the unacked index); total Redis commands include the polling.
- **knm's CPU**: the process' CPU time minus the mongoeco server thread's (read with
  ``pthread_getcpuclockid``), so it is knm + Celery + kombu + pymongo, not the database. The
  benchmark waits for the job on an event set by the worker's ``task_postrun`` (no polling), and
  a 100-row import runs first as a warm-up (not reported). The baseline is the best of 3 runs
  (1 at 100,000 rows).

The store is the embedded default (knm's own server process on SQLite, as ``knm`` starts it)
unless ``KNM_BENCH_ENGINE=memory`` (mongoeco in memory, in a thread) or ``KNM_BENCH_MONGODB_URL``;
nothing in it is patched beyond what the product runs. For the embedded store its CPU time is
read from /proc and reported per row (``store_cpu_ms_per_row``). Sizes: ``--rows 2000,10000,100000``
or ``KNM_BENCH_CSV_SIZES`` (default ``2000,10000``, so ``make bench`` stays within minutes); the
in-memory engine, which scans its collections, runs only sizes up to 2,000 and the larger ones
are derived (marked so) from the measured per-chunk constants. MongoDB commands include
``getMore``: every command pymongo sends is counted, and
where the embedded server answered more than 101 documents to a read that set no batch size,
the ``getMore`` MongoDB would have needed for the rest is counted too (``implied_get_more``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pymongo import MongoClient, monitoring

from benchmarks.common import (
    CommandCounter,
    engine_name,
    implied_get_more,
    mongo_server,
    process_cpu_s,
    redis_server,
    server_pid,
)
from config import settings as knm_settings
from config.settings import Settings
from knm.domain import convert
from knm.services import jobs
from knm.services.csv_actions import ACTIONS, bad_cells
from knm.services.csv_files import CsvReader
from knm.services.facade import Knm
from knm.store.numbers import Store
from workers import producer
from workers.celery_config import celery_config

#: Rows per import measured: ``KNM_BENCH_CSV_SIZES`` or ``--rows`` (100,000 on request: minutes).
SIZES = tuple(int(n) for n in os.environ.get("KNM_BENCH_CSV_SIZES", "2000,10000").split(","))
#: The largest size run on the in-memory engine (larger ones are derived): its inserts scan the
#: collection, and at 10,000 rows a storing batch outlasts the client's patience.
MEMORY_MAX_JOB_SIZE = 2_000
CHUNK = jobs.DEFAULT_CHUNK_SIZE
ACCOUNT = "bench000000000000000000000000c5v"
HEADER = "e164,state,opaque.batch"
JOB_TIMEOUT_S = 1800.0

Doc = dict[str, Any]


# ================================================================================ the CSV
def csv_bytes(rows: int) -> bytes:
    """An import file: national numbers (normalized on the way), a state, an opaque field."""
    lines = [HEADER]
    lines += [f"415{2000000 + i:07d},in_service,b{rows}" for i in range(rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


def baseline(data: bytes, repeat: int = 1) -> dict[str, float]:
    """Only parse and validate: CsvReader + bad_cells + convert.normalize per row (best of)."""
    action = ACTIONS["import"]
    converters = Settings().e164_converters
    best: dict[str, float] = {}
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        count = 0
        with CsvReader(io.BytesIO(data), name="bench.csv") as reader:
            for _number, row, _problem in reader.rows():
                bad_cells(action, row)
                convert.normalize(row["e164"].strip(), converters)
                count += 1
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if not best or wall < best["wall_s"]:
            best = {"rows": count, "wall_s": wall, "cpu_s": cpu, "rows_per_s": count / wall}
    return best


# ================================================================================ plumbing
def _commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def _thread_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds so far of the live threads whose name starts with one of ``names``."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.ident is not None and thread.name.startswith(names):
            with contextlib.suppress(OSError, ProcessLookupError):
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


SERVER_THREADS = ("mongoeco", "asyncio")


def _knm_cpu() -> float:
    """This process' CPU minus the in-process MongoDB server's."""
    return time.process_time() - _thread_cpu(SERVER_THREADS)


class ChunkCommands(monitoring.CommandListener):
    """What each chunk task sent to MongoDB, from the worker's task_prerun/task_postrun signals;
    ``finished`` is set when a chunk reports its job final (no polling: its CPU would count)."""

    def __init__(self) -> None:
        self.per_chunk: list[list[str]] = []
        self.finished = threading.Event()
        self._current: list[str] | None = None
        self._commands: dict[int, tuple[str, Any]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self._current is not None:
            target = event.command.get(event.command_name)
            where = target if isinstance(target, str) else ""
            self._current.append(f"{event.command_name} {where}".strip())
            self._commands[event.request_id] = (where, event.command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        where, command = self._commands.pop(event.request_id, ("", None))
        if self._current is not None and implied_get_more(command, event.reply):
            self._current.append(f"getMore {where} (MongoDB's)".strip())

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._commands.pop(event.request_id, None)

    def reset(self) -> None:
        self.per_chunk.clear()
        self.finished.clear()
        self._commands.clear()

    def prerun(self, **_: Any) -> None:
        self._current = []

    def postrun(self, retval: Any = None, **_: Any) -> None:
        if self._current is not None:
            self.per_chunk.append(self._current)
        self._current = None
        final = {s.value for s in jobs.FINAL_STATUSES}
        if isinstance(retval, dict) and retval.get("status") in final:
            self.finished.set()


# ================================================================================ one size
def run_job(
    url: str,
    size: int,
    data: bytes,
    client: MongoClient[Doc],
    poll: MongoClient[Doc],
    counter: Any,
    publisher: Any,
    broker: redis.Redis,
    use: Callable[[Knm], None],
    chunk_commands: ChunkCommands,
) -> dict[str, Any]:
    """Import ``data`` through create_job + the broker + the worker; measure it."""
    db_name = f"knm_bench_csv_{uuid.uuid4().hex[:8]}"
    store = Store(client[db_name])
    store.ensure_indexes()
    knm = Knm(store, Settings())
    knm.create_account(ACCOUNT, "Bench", allow_additions=True, reseller=True)
    use(knm)
    chunk_commands.reset()
    broker.config_resetstat()
    counter.reset()
    pid = server_pid(url)
    store_cpu = process_cpu_s(pid) if pid else 0.0
    wall, cpu = time.perf_counter(), _knm_cpu()

    job = jobs.create_job(knm, "import", io.BytesIO(data), account_id=ACCOUNT, chunk_size=CHUNK)
    created_s = time.perf_counter() - wall
    create_commands = counter.total
    published = producer.submit_job(job.id, job.chunks, publisher)
    if not chunk_commands.finished.wait(JOB_TIMEOUT_S):
        raise RuntimeError(f"job {job.id} of {size} rows not done after {JOB_TIMEOUT_S} s")
    wall, cpu = time.perf_counter() - wall, _knm_cpu() - cpu
    store_cpu = process_cpu_s(pid) - store_cpu if pid else 0.0
    # The last chunk's ack follows its task's return: wait for it before reading the stats.
    deadline = time.monotonic() + 10
    while broker.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.02)
    commands = Counter(counter.counts)
    implied = counter.implied_get_more
    stats = _commandstats(broker)

    done = jobs.JobStore(knm).get(job.id)
    assert done is not None
    if (done.status, done.succeeded, len(done.chunks_done)) != ("succeeded", size, job.chunks):
        raise RuntimeError(f"the import did not succeed: {done.to_json()}")
    stored = poll[db_name]["numbers"].count_documents({})
    if stored != size:
        raise RuntimeError(f"{stored} numbers stored, {size} expected")
    client.drop_database(db_name)

    counts = Counter(len(c) for c in chunk_commands.per_chunk)
    typical = max(counts, key=lambda n: counts[n])
    breakdown = next(c for c in chunk_commands.per_chunk if len(c) == typical)
    per_k = 1000 / size
    messages = {
        "tasks_published": stats["lpush"],
        "events_published": stats["publish"],
        "acks": stats["zrem"],
    }
    return {
        "rows": size,
        "chunks": job.chunks,
        "chunk_messages_from_submit_job": published,
        "wall_s": round(wall, 2),
        "create_job_wall_s": round(created_s, 2),
        "rows_per_s": round(size / wall, 1),
        "mongo_commands": sum(commands.values()),
        "mongo_commands_create_job": create_commands,
        "mongo_commands_by_name": dict(sorted(commands.items())),
        "mongo_get_more_mongodb_would_add": implied,
        "mongo_commands_per_chunk": sorted(counts.items()),
        "mongo_commands_of_a_typical_chunk": breakdown,
        "mongo_commands_per_1000_rows": round(sum(commands.values()) * per_k, 2),
        "broker_messages": messages,
        "broker_messages_total": sum(messages.values()),
        "broker_messages_per_1000_rows": round(sum(messages.values()) * per_k, 2),
        "redis_commands_total": sum(stats.values()),
        "redis_commands_per_1000_rows": round(sum(stats.values()) * per_k, 2),
        "knm_cpu_s": round(cpu, 3),
        "knm_cpu_ms_per_1000_rows": round(cpu * 1000 * per_k, 1),
        "store_cpu_s": round(store_cpu, 2) if pid else None,
        "store_cpu_ms_per_row": round(store_cpu * 1000 / size, 3) if pid else None,
        "measured": True,
    }


def derive(size: int, measured: dict[str, Any]) -> dict[str, Any]:
    """Counts at ``size`` from the largest measured run plus what each extra chunk adds."""
    chunks = -(-size // CHUNK)
    extra = chunks - measured["chunks"]
    per_chunk = len(measured["mongo_commands_of_a_typical_chunk"])
    row_batches = -(-CHUNK // jobs.INSERT_BATCH)  # create_job's insert batches per chunk of rows
    mongo = measured["mongo_commands"] + extra * (per_chunk + row_batches)
    msgs_per_chunk = measured["broker_messages_total"] / measured["chunks"]
    messages = round(measured["broker_messages_total"] + extra * msgs_per_chunk)
    per_k = 1000 / size
    return {
        "rows": size,
        "chunks": chunks,
        "mongo_commands": mongo,
        "mongo_commands_per_1000_rows": round(mongo * per_k, 2),
        "broker_messages_total": messages,
        "broker_messages_per_1000_rows": round(messages * per_k, 2),
        "measured": False,
        "derived_from_rows": measured["rows"],
    }


# ================================================================================ the run
def _restore_environment(saved: dict[str, str]) -> None:
    """Leave the environment (and the cached settings) as they were for the next benchmark."""
    os.environ.clear()
    os.environ.update(saved)
    knm_settings.reset_settings()


def run() -> dict[str, Any]:
    report: dict[str, Any] = {"chunk_size": CHUNK, "sizes": {}}
    engine = engine_name()
    job_sizes = [n for n in SIZES if engine != "memory" or n <= MEMORY_MAX_JOB_SIZE]
    report["mongodb"] = engine
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="knm-bench-csv-")))
        broker_url = stack.enter_context(redis_server())
        # The worker app reads its settings from the environment when first imported.
        stack.callback(_restore_environment, dict(os.environ))
        os.environ["KNM_DATA_DIR"] = str(tmp)
        os.environ["KNM_BROKER_URL"] = broker_url
        knm_settings.reset_settings()
        settings = Settings(broker_url=broker_url, data_dir=tmp)
        from celery.contrib.testing.worker import start_worker
        from celery.signals import task_postrun, task_prerun

        import tasks.jobs as chunk_tasks
        from tasks.runtime import get_knm as runtime_get_knm
        from workers.app import all_queues
        from workers.app import app as worker_app

        worker_app.close()  # a pool left from an earlier run points at its (stopped) broker
        worker_app.conf.update(celery_config(settings, all_queues()))
        publisher = producer.create_app(settings)
        stack.callback(publisher.close)
        broker = redis.Redis.from_url(broker_url)
        stack.callback(broker.close)

        url = stack.enter_context(mongo_server())
        chunk_commands = ChunkCommands()
        counter = CommandCounter()
        client: MongoClient[Doc] = MongoClient(
            url, tz_aware=True, event_listeners=[counter, chunk_commands]
        )
        stack.callback(client.close)
        poll: MongoClient[Doc] = MongoClient(url, tz_aware=True)
        stack.callback(poll.close)

        current: dict[str, Knm] = {}
        chunk_tasks.get_knm = lambda: current["knm"]  # type: ignore[attr-defined]
        stack.callback(setattr, chunk_tasks, "get_knm", runtime_get_knm)
        task_prerun.connect(chunk_commands.prerun, weak=False)
        task_postrun.connect(chunk_commands.postrun, weak=False)
        stack.callback(task_prerun.disconnect, chunk_commands.prerun)
        stack.callback(task_postrun.disconnect, chunk_commands.postrun)
        stack.enter_context(
            start_worker(
                worker_app,
                pool="solo",
                perform_ping_check=False,
                loglevel="WARNING",
                shutdown_timeout=30,
            )
        )

        def use(knm: Knm) -> None:
            current["knm"] = knm

        # Warm up (imports, compiled patterns, the worker's first task): not reported.
        baseline(csv_bytes(200))
        run_job(
            url, 100, csv_bytes(100), client, poll, counter, publisher, broker, use, chunk_commands
        )
        largest: dict[str, Any] | None = None
        for size in SIZES:
            data = csv_bytes(size)
            base = baseline(data, repeat=3 if size <= 10_000 else 1)
            entry: dict[str, Any] = {
                "baseline_rows_per_s": round(base["rows_per_s"], 1),
                "baseline_wall_s": round(base["wall_s"], 3),
                "baseline_cpu_ms_per_1000_rows": round(base["cpu_s"] * 1e6 / size, 1),
            }
            if size in job_sizes:
                print(f"  importing {size} rows ...", file=sys.stderr, flush=True)
                job = run_job(
                    url, size, data, client, poll, counter, publisher, broker, use, chunk_commands
                )
                job["wall_ratio_to_baseline"] = round(job["wall_s"] / base["wall_s"], 1)
                print(f"  {size} rows: {json.dumps(job)}", file=sys.stderr, flush=True)
                job["cpu_ratio_to_baseline"] = round(job["knm_cpu_s"] / base["cpu_s"], 1)
                largest = job
            elif largest is not None:
                job = derive(size, largest)
            else:
                job = {"measured": False}
            entry.update(job)
            report["sizes"][size] = entry
    return report


def parse_sizes(text: str) -> tuple[int, ...]:
    """``2000,10000,100000`` -> the sizes (each at least 1)."""
    sizes = tuple(int(n) for n in text.split(",") if n.strip())
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--rows takes positive row counts separated by commas, not {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    global SIZES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=parse_sizes, default=SIZES, help="sizes, e.g. 2000,10000,100000"
    )
    SIZES = parser.parse_args(argv).rows
    report = run()
    print(json.dumps(report, indent=2))
    print()
    print(
        f"CSV import, chunks of {report['chunk_size']} rows, MongoDB: {report['mongodb']}; "
        "per 1,000 rows (D = derived, not run):"
    )
    head = (
        f"{'rows':>8} {'mongo cmds':>10} {'broker msgs':>11} {'knm CPU ms':>10} "
        f"{'rows/s':>8} {'baseline rows/s':>15} {'wall x':>7} {'CPU x':>6}  cmds/chunk"
    )
    print(head)
    for size, e in report["sizes"].items():
        mark = "" if e.get("measured") else " D"
        per_chunk = ",".join(f"{c}x{n}" for c, n in e.get("mongo_commands_per_chunk", []))
        print(
            f"{size:>8} {str(e.get('mongo_commands_per_1000_rows', '-')) + mark:>10} "
            f"{str(e.get('broker_messages_per_1000_rows', '-')) + mark:>11} "
            f"{e.get('knm_cpu_ms_per_1000_rows', '-'):>10} {e.get('rows_per_s', '-'):>8} "
            f"{e['baseline_rows_per_s']:>15} {e.get('wall_ratio_to_baseline', '-'):>7} "
            f"{e.get('cpu_ratio_to_baseline', '-'):>6}  {per_chunk or '-'}"
        )
    measured = [e for e in report["sizes"].values() if e.get("measured")]
    if measured:
        typical = measured[-1]["mongo_commands_of_a_typical_chunk"]
        print(f"a typical chunk's {len(typical)} MongoDB commands: {', '.join(typical)}")


if __name__ == "__main__":
    main()
