"""A real ``knm api serve`` subprocess on a free loopback port, for tests and benchmarks.

``run_api(env, log_dir)`` starts it in its own process group, waits until ``GET /v2/health``
answers (or fails with the tail of its log if it dies first), and always stops it on exit
(SIGTERM, then SIGKILL to the group after a grace).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import workers_rig as rig

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0


@dataclass
class Api:
    """A running API process: its URL, process and log."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 8.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _healthy(url: str, api: Api) -> bool:
    if not api.alive():
        raise AssertionError(f"knm api serve exited ({api.proc.returncode}):\n{api.tail()}")
    try:
        return httpx.get(f"{url}/v2/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_api(env: dict[str, str], log_dir: Path, port: int | None = None) -> Api:
    """Start ``python -m knm api serve`` with ``env`` and wait until it answers."""
    port = port or rig.free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"api-{port}.log"
    cmd = [sys.executable, "-m", "knm", "api", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    api = Api(url=url, proc=proc, log_path=log_path)
    try:
        rig.wait_until(lambda: _healthy(url, api), READY_TIMEOUT_S, 0.1, "knm api serve")
    except BaseException:
        api.stop(grace_s=2)
        raise
    return api


@contextlib.contextmanager
def run_api(env: dict[str, str], log_dir: Path, port: int | None = None) -> Iterator[Api]:
    api = start_api(env, log_dir, port)
    try:
        yield api
    finally:
        api.stop()
