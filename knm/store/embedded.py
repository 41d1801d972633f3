"""The embedded default store: a MongoDB wire-protocol server kept under the data directory.

Without ``KNM_MONGODB_URL`` knm must still work out of the box, so the CLI starts mongoeco's wire
server (SQLite-backed, persisted in ``<data_dir>/knm.sqlite``) as a detached background process and
reuses it across invocations. Everything else in knm talks to it with pymongo over a real
connection, exactly as it would talk to a real MongoDB.

Files under the data directory:

- ``mongod.json``  state of the running server (pid, port, url), written once it listens
- ``mongod.lock``  exclusive lock so two CLIs never start two servers on one data directory
- ``mongod.log``   the server's stdout and stderr
- ``knm.sqlite``   the data

Run ``python -m knm.embedded serve --data-dir DIR`` to serve in the foreground; ``start``,
``stop`` and ``status`` manage the background server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

__all__ = [
    "DB_FILE",
    "LOCK_FILE",
    "LOG_FILE",
    "STATE_FILE",
    "ServerState",
    "ensure_server",
    "live_state",
    "ping",
    "read_state",
    "serve",
    "stop_server",
]

STATE_FILE = "mongod.json"
LOCK_FILE = "mongod.lock"
LOG_FILE = "mongod.log"
DB_FILE = "knm.sqlite"

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
PING_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)

# Servers this process started, kept so they are reaped (no zombies, no ResourceWarning).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class ServerState:
    """What ``mongod.json`` records about a running server."""

    pid: int
    port: int
    url: str


def url_for(port: int, host: str = HOST) -> str:
    """The pymongo URL of a wire server (direct connection: it is a single node)."""
    return f"mongodb://{host}:{port}/?directConnection=true"


def read_state(data_dir: Path) -> ServerState | None:
    """The recorded server of ``data_dir``, or None if there is no readable state file."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        return ServerState(pid=int(raw["pid"]), port=int(raw["port"]), url=str(raw["url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(data_dir: Path, state: ServerState) -> None:
    """Write the state file atomically so a reader never sees half of it."""
    path = data_dir / STATE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
    os.replace(tmp, path)


def _remove_state(data_dir: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it names ``pid``, when given: never drop a newer one)."""
    if pid is not None:
        state = read_state(data_dir)
        if state is None or state.pid != pid:
            return
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def ping(url: str, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Whether a server answers ``ping`` at ``url`` (``buildinfo`` is unsupported by mongoeco)."""
    ms = max(1, int(timeout_s * 1000))
    client: MongoClient[dict[str, object]] = MongoClient(
        url,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms,
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a reaped child or a zombie counts as dead)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # An exited process whose parent has not reaped it yet still accepts signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def live_state(data_dir: Path) -> ServerState | None:
    """The recorded server of ``data_dir`` if its process is alive and it answers ``ping``."""
    return _live_state(Path(data_dir).expanduser().resolve())


def _live_state(data_dir: Path) -> ServerState | None:
    """The recorded server if its process is alive and it answers ``ping``."""
    state = read_state(data_dir)
    if state is None or not _pid_alive(state.pid) or not ping(state.url):
        return None
    return state


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold ``mongod.lock`` exclusively (per open file, so it also serializes threads)."""
    with (data_dir / LOCK_FILE).open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    """The end of the server log, to explain a failed start."""
    try:
        text = (data_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _spawn(data_dir: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m knm.embedded serve`` detached from this process's session."""
    env = dict(os.environ)
    # Make ``knm`` importable in the child even when it is not installed (source checkout).
    source_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "knm.store.embedded", "serve", "--data-dir", str(data_dir)]
    cmd += ["--port", "0"]
    with (data_dir / LOG_FILE).open("ab") as logf:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=env,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def _terminate(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL if it does not in time."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


def ensure_server(data_dir: Path, timeout_s: float = START_TIMEOUT_S) -> str:
    """The URL of the embedded server of ``data_dir``, starting it if none is running.

    Reuses a recorded server when its pid is alive and it answers ``ping``; otherwise starts a
    detached one under the lock and waits (at most ``timeout_s``) until it answers.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = _live_state(data_dir)
    if state is not None:
        return state.url
    with _locked(data_dir):
        state = _live_state(data_dir)
        if state is not None:
            return state.url
        stale = read_state(data_dir)
        if stale is not None and _pid_alive(stale.pid):
            # Alive but not answering: a wedged server must not keep the SQLite file.
            _terminate(stale.pid)
        _remove_state(data_dir)
        started = time.monotonic()
        proc = _spawn(data_dir)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _children.pop(proc.pid, None)
                raise RuntimeError(
                    f"embedded MongoDB server exited with status {proc.returncode}; "
                    f"log {data_dir / LOG_FILE}:\n{_log_tail(data_dir)}"
                )
            state = read_state(data_dir)
            if state is not None and state.pid == proc.pid and ping(state.url):
                log.info(
                    "embedded MongoDB server pid %d at %s (%.2f s)",
                    proc.pid,
                    state.url,
                    time.monotonic() - started,
                )
                return state.url
            time.sleep(0.05)
        _terminate(proc.pid)
        _remove_state(data_dir, proc.pid)
        raise TimeoutError(
            f"embedded MongoDB server did not answer within {timeout_s:.0f} s; "
            f"log {data_dir / LOG_FILE}:\n{_log_tail(data_dir)}"
        )


def stop_server(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the embedded server of ``data_dir``; False if none was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        return False
    with _locked(data_dir):
        state = read_state(data_dir)
        if state is None:
            return False
        running = _pid_alive(state.pid)
        if running:
            _terminate(state.pid, timeout_s)
        _remove_state(data_dir, state.pid)
        return running


async def _serve(data_dir: Path, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; the state file exists exactly while the server listens."""
    from mongoeco.wire import AsyncMongoEcoProxyServer

    from knm.store.embedded_engine import KnmSQLiteEngine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = AsyncMongoEcoProxyServer(
        engine=KnmSQLiteEngine(str(data_dir / DB_FILE)), host=host, port=port
    )
    address = await server.start()
    pid = os.getpid()
    try:
        _write_state(
            data_dir, ServerState(pid=pid, port=address.port, url=url_for(address.port, host))
        )
        log.info("serving %s on %s:%d (pid %d)", data_dir / DB_FILE, host, address.port, pid)
        await stop.wait()
        log.info("stopping")
    finally:
        _remove_state(data_dir, pid)
        await server.close()
    log.info("stopped")


def serve(data_dir: Path, port: int = 0, host: str = HOST) -> None:
    """Run the wire server in the foreground (port 0 picks a free port)."""
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(data_dir, host, port))


def main(argv: list[str] | None = None) -> int:
    """``python -m knm.embedded {serve,start,stop,status}``."""
    parser = argparse.ArgumentParser(prog="python -m knm.embedded", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "start", "stop", "status"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--data-dir", type=Path, required=True)
        if name == "serve":
            cmd.add_argument("--port", type=int, default=0)
            cmd.add_argument("--host", default=HOST)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        serve(args.data_dir, args.port, args.host)
        return 0
    if args.command == "start":
        print(ensure_server(args.data_dir))
        return 0
    if args.command == "stop":
        return 0 if stop_server(args.data_dir) else 1
    state = _live_state(Path(args.data_dir).expanduser().resolve())
    print(state.url if state else "not running")
    return 0 if state else 1


if __name__ == "__main__":
    sys.exit(main())


class WireServerThread:
    """A mongoeco wire server on its own asyncio loop in a daemon thread (tests, benchmarks).

    In-memory by default (nothing persisted); with a path, the embedded store's own engine
    (:class:`knm.embedded_engine.KnmSQLiteEngine`), kept in ``engine`` for its counters.
    """

    def __init__(self, sqlite_path: Path | None = None) -> None:
        self._sqlite_path = sqlite_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mongoeco-wire", daemon=True)
        self._server: Any = None
        self.engine: Any = None
        self.url = ""

    def _engine(self) -> Any:
        if self._sqlite_path is not None:
            from knm.store.embedded_engine import KnmSQLiteEngine

            return KnmSQLiteEngine(str(self._sqlite_path))
        from mongoeco.engines.memory import MemoryEngine

        return MemoryEngine()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def start(self, timeout_s: float = 30.0) -> str:
        from mongoeco.wire import AsyncMongoEcoProxyServer

        self._thread.start()

        async def _start() -> str:
            self.engine = self._engine()
            self._server = AsyncMongoEcoProxyServer(engine=self.engine, host="127.0.0.1", port=0)
            address = await self._server.start()
            return url_for(int(address.port), str(address.host))

        self.url = asyncio.run_coroutine_threadsafe(_start(), self._loop).result(timeout_s)
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
