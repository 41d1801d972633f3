"""The test rig: real servers over real connections (see ARCHITECTURE.md, Tests).

- ``mongo_url``: ``KNM_TEST_MONGODB_URL`` when set (a real MongoDB), otherwise a mongoeco wire
  server (in-memory engine) started for the session on a free loopback port.
- ``mongo_client`` / ``mongo_db``: a pymongo client for the session, a fresh database per test.
- ``redis_url``: ``KNM_TEST_REDIS_URL``, or else a private ``redis-server`` on a free port started
  for the run (the machine's own Redis is never touched).
- every test gets fresh settings and its own ``KNM_DATA_DIR``.

``make check`` sets ``KNM_TEST_NO_SERVERS``: a test that asks for a server there fails, naming
the tier it belongs to (``tests/integration``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.database import Database

from config import settings as knm_settings
from knm.store import embedded
from knm.store.embedded import WireServerThread as _WireServerThread

pytest_plugins = ["tests.carriers_rig"]


def _wait_ping(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if embedded.ping(url, timeout_s=1.0):
            return True
        time.sleep(0.1)
    return False


def _no_servers(what: str) -> None:
    if os.environ.get("KNM_TEST_NO_SERVERS"):
        pytest.fail(f"{what} is a server: a test that needs one belongs in tests/integration")


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the MongoDB wire server every integration test talks to."""
    _no_servers("MongoDB")
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


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_WireServerThread]:
    """A private embedded store for one test module: knm's own engine (mongoeco on SQLite,
    adapted) on its own file, as ``knm`` runs it; its counters are the module's."""
    _no_servers("The embedded store")
    server = _WireServerThread(tmp_path_factory.mktemp("engine") / "knm.sqlite")
    server.start()
    try:
        yield server
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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the Redis the tests use (database 15 of it).

    ``KNM_TEST_REDIS_URL`` when set (the tests then use only databases that are empty when they
    first need them, and empty them again at the end); otherwise a private ``redis-server`` on a
    free loopback port, started for this run and stopped after it. A developer's own Redis on
    6379 is never touched.
    """
    from tests import workers_rig as rig

    _no_servers("Redis")
    external = os.environ.get("KNM_TEST_REDIS_URL")
    if external:
        if not rig.redis_ping(external):
            pytest.fail(f"KNM_TEST_REDIS_URL={external} does not answer PING")
        try:
            yield external
        finally:
            rig.release_claimed_databases()
        return
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not on PATH: the tests start a private Redis "
            "(install redis-server, or set KNM_TEST_REDIS_URL to a Redis they may use)"
        )
    server = rig.RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url(15)
    finally:
        server.kill()


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh settings per test, with the data directory in the test's tmp dir."""
    monkeypatch.setenv("KNM_DATA_DIR", str(tmp_path / "knm-data"))
    knm_settings.reset_settings()
    try:
        yield
    finally:
        knm_settings.reset_settings()
