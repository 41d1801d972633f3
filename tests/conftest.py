"""The test rig: real servers over real connections (see ARCHITECTURE.md, Tests).

- ``mongo_url``: ``KNM_TEST_MONGODB_URL`` when set (a real MongoDB), otherwise a mongoeco wire
  server (in-memory engine) started for the session on a free loopback port.
- ``mongo_client`` / ``mongo_db``: a pymongo client for the session, a fresh database per test.
- ``redis_url``: ``KNM_TEST_REDIS_URL`` or the machine's Redis (db 15), started if it is down.
- every test gets fresh settings and its own ``KNM_DATA_DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymongo
import pytest
from pymongo.database import Database

from config import settings as knm_settings
from knm import embedded
from knm.embedded import WireServerThread as _WireServerThread

pytest_plugins = ["tests.carriers_rig"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _wait_ping(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded.ping(url, timeout_s=1.0):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the MongoDB wire server every integration test talks to."""
    external = os.environ.get("KNM_TEST_MONGODB_URL")
    if external:
        if not _wait_ping(external, 10.0):
            pytest.fail(f"KNM_TEST_MONGODB_URL={external} does not answer ping")
        yield external
        return
    try:
        from mongoeco.engines.memory import MemoryEngine  # noqa: F401

        server = _WireServerThread()
    except ImportError:
        server = _WireServerThread(tmp_path_factory.mktemp("mongoeco") / "test.sqlite")
    url = server.start()
    try:
        if not _wait_ping(url, 20.0):
            pytest.fail(f"mongoeco wire server at {url} does not answer ping")
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_url: str) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    """One pymongo client for the session (timezone-aware datetimes, like knm's store)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url, tz_aware=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def db_name(mongo_client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[str]:
    """A fresh database name for one test (for worker processes that connect by name),
    dropped afterwards."""
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        mongo_client.drop_database(name)


@pytest.fixture
def mongo_db(
    mongo_client: pymongo.MongoClient[dict[str, Any]],
) -> Iterator[Database[dict[str, Any]]]:
    """A fresh, uniquely named database for one test, dropped afterwards."""
    name = f"knm_test_{uuid.uuid4().hex[:8]}"
    try:
        yield mongo_client[name]
    finally:
        mongo_client.drop_database(name)


def _redis_ping(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis that answers; starts the local ``redis-server`` if it is down."""
    url = os.environ.get("KNM_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if _redis_ping(url):
        return url
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    server = shutil.which("redis-server")
    if host not in {"127.0.0.1", "localhost", "::1"} or server is None:
        pytest.fail(
            f"Redis at {url} does not answer and cannot be started here "
            f"(host {host}, redis-server {'found' if server else 'not on PATH'}); "
            "start Redis or set KNM_TEST_REDIS_URL"
        )
    cmd = [server, "--port", str(port), "--save", "", "--appendonly", "no", "--daemonize", "yes"]
    started = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if _redis_ping(url):
            return url
        time.sleep(0.1)
    pytest.fail(
        f"Redis at {url} does not answer, even after `{' '.join(cmd)}` "
        f"(exit {started.returncode}): {(started.stderr or started.stdout).strip()}"
    )


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh settings per test, with the data directory in the test's tmp dir."""
    monkeypatch.setenv("KNM_DATA_DIR", str(tmp_path / "knm-data"))
    knm_settings.reset_settings()
    try:
        yield
    finally:
        knm_settings.reset_settings()
