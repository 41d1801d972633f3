"""Real knm workers for end-to-end tests: ``celery -A workers.app worker`` subprocesses.

``run_worker(...)`` starts one worker in its own process group (``-n <label>-<hex>@%h``, gossip,
mingle and heartbeat off so it starts fast), waits until it logs that it is ready (or fails with
the tail of its log if it dies first), and always stops it on exit: SIGTERM to the main process
(a warm shutdown that stops its pool), then SIGKILL to the whole group after a short grace, and
whatever is left of the group is reaped. ``Worker.kill()`` is the crash: SIGKILL to the whole
group (the main process and its pool children at once), so nothing gets to acknowledge, reject or
requeue anything. ``run_workers`` starts several at once; ``stop_all`` stops several at once.

Producers are plain Celery clients (``producer(...)``), exactly how an outside service calls knm:
no knm configuration, only ``send_task(name, kwargs=..., queue=...)``.

Also here: a throwaway ``redis-server`` owned by a test (``RedisServer``), broker helpers
(``flush_redis``, ``free_port``), raw Redis messages (``capture_message``: the exact payload a
client publishes; ``push_message``: deliver it again, optionally flagged as a redelivery) and
``wait_until`` (poll with a deadline instead of sleeping).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

ROOT = Path(__file__).resolve().parent.parent
CELERY = Path(sys.executable).parent / "celery"

READY_TIMEOUT_S = 45.0
STOP_GRACE_S = 8.0


def wait_until[T](
    predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.1, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what or predicate}")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ================================================================================ workers
@dataclass
class Worker:
    """A running ``celery worker`` subprocess and its log."""

    name: str
    queues: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, text: str, timeout_s: float, count: int = 1) -> None:
        """Wait until ``text`` appears ``count`` times in the log (fails if the worker dies)."""

        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.alive():
                raise AssertionError(
                    f"worker {self.name} exited ({self.proc.returncode}) before logging "
                    f"{text!r}:\n{self.tail()}"
                )
            return False

        try:
            wait_until(seen, timeout_s, 0.05, f"{text!r} in the log of {self.name}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- log of {self.name}:\n{self.tail()}") from None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> Worker:
        """Wait until the worker logs that it is ready (it consumes its queues from then on)."""
        try:
            self.wait_for_log(" ready.", timeout_s)
        except BaseException:
            self.stop(grace_s=2)
            raise
        return self

    def pool_children(self) -> list[int]:
        """Pids of the main process' children (the prefork pool)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def kill(self) -> None:
        """Crash: SIGKILL the whole process group (main process and pool children)."""
        _signal_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)
        _reap_group(self.proc)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Warm shutdown (SIGTERM: the main process stops its pool), then SIGKILL to the whole
        group if it takes longer than ``grace_s``; whatever is left of the group is reaped."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _reap_group(self.proc)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """Pool children may outlive the main process for a moment: SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def worker_env(
    broker_url: str,
    mongo_url: str,
    mongo_db: str,
    data_dir: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a knm worker: the test's broker and database, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env.update(
        {
            "KNM_BROKER_URL": broker_url,
            "KNM_MONGODB_URL": mongo_url,
            "KNM_MONGODB_DB": mongo_db,
            "KNM_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def spawn_worker(
    env: dict[str, str],
    queues: list[str],
    log_dir: Path,
    *,
    label: str = "w",
    pool: str = "solo",
    concurrency: int = 1,
) -> Worker:
    """Start a worker consuming ``queues``; ``wait_ready()`` before relying on it."""
    node = f"{label}-{uuid.uuid4().hex[:6]}"
    name = f"{node}@{socket.gethostname()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{node}.log"
    cmd = [
        str(CELERY),
        "-A",
        "workers.app",
        "worker",
        "-n",
        f"{node}@%h",
        "-Q",
        ",".join(queues),
        "--pool",
        pool,
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if pool != "solo":
        cmd += ["-c", str(concurrency)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches the pool too
        )
    return Worker(name=name, queues=queues, proc=proc, log_path=log_path, env=env)


def start_worker(env: dict[str, str], queues: list[str], log_dir: Path, **options: Any) -> Worker:
    """Start a worker consuming ``queues`` and wait until it is ready."""
    return spawn_worker(env, queues, log_dir, **options).wait_ready()


@contextlib.contextmanager
def run_worker(
    env: dict[str, str],
    queues: list[str],
    log_dir: Path,
    **options: Any,
) -> Iterator[Worker]:
    """A ready worker for the ``with`` block; stopped (or reaped after a kill) on exit."""
    grace_s = options.pop("stop_grace_s", STOP_GRACE_S)
    worker = start_worker(env, queues, log_dir, **options)
    try:
        yield worker
    finally:
        worker.stop(grace_s=grace_s)


@contextlib.contextmanager
def run_workers(
    env: dict[str, str],
    queue_sets: list[list[str]],
    log_dir: Path,
    **options: Any,
) -> Iterator[list[Worker]]:
    """Several workers started at once (one per queue list), all ready; all stopped on exit."""
    workers: list[Worker] = []
    try:
        for queues in queue_sets:
            workers.append(spawn_worker(env, queues, log_dir, **options))
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        stop_all(workers)


def stop_all(workers: list[Worker | None]) -> None:
    """Stop several workers at once (SIGTERM to every group first, then wait for each)."""
    running = [w for w in workers if w is not None]
    for worker in running:
        if worker.alive():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
    for worker in running:
        worker.stop()


# ================================================================================ producers
def producer(broker_url: str, backend_url: str | None = None) -> Celery:
    """A plain Celery client, the way another service calls knm (no knm configuration)."""
    if backend_url is None:
        backend_url = broker_url if broker_url.startswith("redis") else "rpc://"
    app = Celery(f"producer-{uuid.uuid4().hex[:6]}", broker=broker_url, backend=backend_url)
    app.conf.broker_connection_retry_on_startup = True
    app.conf.broker_connection_timeout = 5
    return app


def wait_result(result: AsyncResult[Any], timeout_s: float = 30.0) -> AsyncResult[Any]:
    """Wait until ``result`` is ready (SUCCESS or FAILURE) without raising its exception."""
    try:
        result.get(timeout=timeout_s, propagate=False, interval=0.1)
    except CeleryTimeoutError as exc:
        raise AssertionError(
            f"task {result.id} not ready after {timeout_s:.0f}s (state {result.state})"
        ) from exc
    return result


# ================================================================================ redis
def redis_db(redis_url: str, db: int) -> str:
    """The URL of database ``db`` on the Redis server of ``redis_url``."""
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def empty_redis_db(redis_url: str, db: int) -> str:
    """``redis_db``, flushed first (a test module's own broker database)."""
    url = redis_db(redis_url, db)
    flush_redis(url)
    return url


#: Redis servers this test run started itself (``host:port``): every database on them is ours.
OWNED_SERVERS: set[str] = set()
#: Databases of a Redis we did not start (``KNM_TEST_REDIS_URL``) that were empty when a test
#: first used them, so what they hold now is the tests' own.
CLAIMED_DATABASES: set[str] = set()


def _server_and_db(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    server = f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"
    return server, f"{server}/{(parsed.path or '/0').lstrip('/') or '0'}"


def flush_redis(url: str) -> None:
    """Empty a Redis database the tests own, and never one they do not.

    On a server the rig started, every database is the tests'. On a developer's Redis
    (``KNM_TEST_REDIS_URL``) a database is the tests' only if it was empty when first used: a
    database holding anything else fails the test instead of being flushed.
    """
    import redis

    server, database = _server_and_db(url)
    client = redis.Redis.from_url(url)
    try:
        if server in OWNED_SERVERS or database in CLAIMED_DATABASES:
            client.flushdb()
            return
        held = int(client.dbsize())
        if held:
            raise AssertionError(
                f"Redis database {database} holds {held} keys the tests did not write; "
                "they never flush a database they did not create. Point KNM_TEST_REDIS_URL at "
                "a Redis whose databases are empty, or unset it (the rig starts its own)."
            )
        CLAIMED_DATABASES.add(database)
    finally:
        client.close()


def release_claimed_databases() -> None:
    """At the end of a run, empty the developer's databases the tests claimed (they were empty)."""
    for database in sorted(CLAIMED_DATABASES):
        flush_redis(f"redis://{database}")
    CLAIMED_DATABASES.clear()


def redis_ping(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class RedisServer:
    """A throwaway ``redis-server`` owned by a test: no persistence, one port across restarts."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not on PATH: the Redis restart test needs it")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.workdir / f"redis-{self.starts}.log").open("wb")
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        OWNED_SERVERS.add(f"127.0.0.1:{self.port}")
        wait_until(lambda: redis_ping(self.url()), 10.0, 0.05, f"redis-server on {self.port}")

    def shutdown(self) -> None:
        """``SHUTDOWN NOSAVE``: everything in memory is gone; wait for the process to exit."""
        import redis

        if self.proc is None:
            return
        client = redis.Redis.from_url(self.url(), socket_timeout=2)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        client.close()
        self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


# ================================================================================ raw messages
def capture_message(
    client: Celery,
    broker_url: str,
    name: str,
    *,
    kwargs: dict[str, Any] | None = None,
    args: list[Any] | None = None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """The exact Redis payload ``send_task`` publishes, captured on a queue nobody consumes.

    ``push_message`` then delivers that same message as often as a test wants, optionally
    flagged as a broker redelivery, which is how kombu's Redis transport marks a message it
    restored after a visibility timeout.
    """
    import redis

    hold = f"hold.{uuid.uuid4().hex[:8]}"
    client.send_task(name, args=args, kwargs=kwargs, queue=hold, task_id=task_id)
    conn = redis.Redis.from_url(broker_url)
    try:
        raw = wait_until(lambda: conn.rpop(hold), 5.0, 0.02, f"the message on {hold}")
        conn.delete(f"_kombu.binding.{hold}", f"_kombu.binding_permanent.{hold}")
    finally:
        conn.close()
    payload: dict[str, Any] = json.loads(raw)
    return payload


def push_message(
    broker_url: str, queue: str, payload: dict[str, Any], *, redelivered: bool = False
) -> None:
    """Put a (captured or hand-made) payload on a Redis queue, as the transport would."""
    import redis

    message = copy.deepcopy(payload)
    properties = message.setdefault("properties", {})
    properties["delivery_tag"] = str(uuid.uuid4())
    properties["delivery_info"] = {"exchange": queue, "routing_key": queue}
    if redelivered:
        properties["delivery_info"]["redelivered"] = True
        message.setdefault("headers", {})["redelivered"] = True
    conn = redis.Redis.from_url(broker_url)
    try:
        conn.lpush(queue, json.dumps(message))
    finally:
        conn.close()
