"""The carrier sandbox for tests: a real HTTP server on loopback, and knm pointed at it.

``sandbox`` (one server per test module, reset before each test) serves every fake provider;
``sandbox_env`` sets the environment ``knm sandbox serve`` prints plus a fast retry policy, so a
test's transient failures cost milliseconds; ``knm_on(mongo_db)`` is a ``Knm`` on a test's
database with those settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from carriers.http import close_clients
from carriers.sandbox import Sandbox, SandboxClient
from config.settings import Settings, reset_settings
from knm.app import Knm
from knm.store import Store

#: Copies of ../shared/fixtures/carriers (real provider answers captured by KAZOO's tests).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "carriers"

#: Fast, bounded retries for tests: transient failures cost milliseconds, timeouts one second.
FAST_HTTP = {
    "KNM_CARRIER_HTTP__BACKOFF_BASE_S": "0.01",
    "KNM_CARRIER_HTTP__BACKOFF_MAX_S": "0.05",
    "KNM_CARRIER_HTTP__TIMEOUT_S": "1",
    "KNM_CARRIER_HTTP__CONNECT_TIMEOUT_S": "1",
    "KNM_CARRIER_HTTP__MAX_ATTEMPTS": "4",
    "KNM_CARRIER_HTTP__ORDER_LEASE_S": "5",
}


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[Sandbox]:
    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[SandboxClient]:
    client = SandboxClient(sandbox_server.url)
    client.reset()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def sandbox_env(
    sandbox_server: Sandbox, sandbox: SandboxClient, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {**sandbox_server.env(), **FAST_HTTP}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    close_clients()
    return env


def knm_on(db: Database[dict[str, Any]], **overrides: Any) -> Knm:
    """knm on ``db`` with the environment's settings (``sandbox_env``) and ``overrides``."""
    settings = Settings(**overrides) if overrides else Settings()
    store = Store(db)
    store.ensure_indexes()
    return Knm(store, settings)


@pytest.fixture
def knm(mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str]) -> Knm:
    return knm_on(mongo_db)
