"""The embedded store dies and comes back on another port: running workers follow it.

Everything is what a new user runs: no ``KNM_MONGODB_URL`` (the embedded store under
``KNM_DATA_DIR``), no ``KNM_BROKER_URL`` (the embedded broker), a real worker process, and the
CLI in this process. The store's server is SIGKILLed while the worker runs; the next task must
succeed, whether a CLI command restarted the server first or nobody did (the worker then starts
it itself).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from config.settings import get_settings, reset_settings
from knm.cli.root import main
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.store import embedded
from tests import workers_rig as rig
from workers import producer

pytestmark = pytest.mark.integration

ACCOUNT = "e8" * 16
N1, N2, N3 = "+14155550181", "+14155550182", "+14155550183"
TASK_TIMEOUT_S = 90.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """This test's ``KNM_DATA_DIR`` (conftest's); its embedded server is stopped afterwards."""
    path = Path(os.environ["KNM_DATA_DIR"]).resolve()
    try:
        yield path
    finally:
        embedded.stop_server(path)


@pytest.fixture
def client(data_dir: Path) -> Iterator[Celery]:
    reset_settings()
    app = producer.create_app(get_settings())
    try:
        yield app
    finally:
        app.close()


def _worker_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env.update(
        {
            "KNM_DATA_DIR": str(data_dir),
            # a dead server is noticed in 2 s rather than 10
            "KNM_MONGODB_TIMEOUT_MS": "2000",
            "PYTHONPATH": str(rig.ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _kill_server(data_dir: Path) -> int:
    """SIGKILL the embedded server (its state file stays behind, stale); its port."""
    state = embedded.read_state(data_dir)
    assert state is not None
    os.kill(state.pid, signal.SIGKILL)
    rig.wait_until(lambda: not embedded._pid_alive(state.pid), 10.0, what="the server to die")
    return state.port


def _port(data_dir: Path) -> int:
    state = embedded.read_state(data_dir)
    assert state is not None
    return state.port


def _call(client: Celery, op: Operation, **request: object) -> dict[str, object]:
    result = producer.call(op, NumbersRequest.model_validate(request), TASK_TIMEOUT_S, app=client)
    assert isinstance(result, dict)
    return result


def test_a_running_worker_follows_the_embedded_store_to_its_new_port(
    data_dir: Path, client: Celery, tmp_path: Path
) -> None:
    assert main(["accounts", "create", ACCOUNT, "--name", "A", "--allow-additions"]) == 0
    with rig.run_worker(
        _worker_env(data_dir), ["knm", "carrier.knm_local"], tmp_path / "logs"
    ) as worker:
        created = _call(client, Operation.CREATE, numbers=[N1], account=ACCOUNT)
        assert list(created["succeeded"]) == [N1], created  # type: ignore[call-overload]

        # the server dies; the next CLI command starts it again, on another port
        old_port = _kill_server(data_dir)
        assert main(["numbers", "get", N1, "--json"]) == 0
        assert _port(data_dir) != old_port

        # the worker's next tasks reach the restarted server (the data survived)
        got = _call(client, Operation.GET, numbers=[N1])
        assert list(got["succeeded"]) == [N1], (got, worker.tail())  # type: ignore[call-overload]
        created = _call(client, Operation.CREATE, numbers=[N2], account=ACCOUNT)
        assert list(created["succeeded"]) == [N2], (created, worker.tail())  # type: ignore[call-overload]

        # the server dies and nobody restarts it: the worker's task starts it and succeeds
        old_port = _kill_server(data_dir)
        created = _call(client, Operation.CREATE, numbers=[N3], account=ACCOUNT)
        assert list(created["succeeded"]) == [N3], (created, worker.tail())  # type: ignore[call-overload]
        assert _port(data_dir) != old_port
        assert worker.alive()
    assert main(["numbers", "get", N1, N2, N3, "--json"]) == 0
