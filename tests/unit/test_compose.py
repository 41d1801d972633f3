"""docker-compose.yml, checked by reading it (no Docker engine runs here): each health check
matches what its service runs (a worker's node name, beat's schedule files), the commands exist,
and the workers' queues serve every registered carrier once, by the carrier's kind."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from carriers.base import CarrierKind
from carriers.registry import CarrierRegistry
from knm.cli.root import cli
from workers.start import BEAT_SCHEDULE_FILE

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: The image's data directory (Dockerfile: ``ENV KNM_DATA_DIR=...``).
DATA_DIR = re.search(r"^ENV KNM_DATA_DIR=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
#: The docker-compose service that serves each kind of carrier.
SERVICE_OF_KIND = {
    CarrierKind.LOCAL: "worker",
    CarrierKind.INVENTORY: "carrier-worker",
    CarrierKind.PROVIDER: "provider-worker",
}


def _command(service: str) -> list[str]:
    command = SERVICES[service].get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _option(argv: list[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg in names and index + 1 < len(argv):
            return argv[index + 1]
    return None


def _check(service: str) -> str:
    """The health check's command line, compose's ``$$`` unescaped to ``$``."""
    test = SERVICES[service]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        line = test[1]
    else:
        assert test[0] == "CMD", test
        line = shlex.join(test[1:])
    return line.replace("$$", "$")


WORKERS = [name for name in SERVICES if _command(name)[:1] == ["worker"]]


def test_the_services_run_commands_knm_has() -> None:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in cli.registered_commands
    } | {group.name for group in cli.registered_groups if group.name}
    for name, service in SERVICES.items():
        if service.get("entrypoint") is None and "image" in service and service.get("build"):
            assert _command(name)[0] in commands, name
    assert WORKERS == ["worker", "carrier-worker", "provider-worker"]
    assert _command("beat") == ["beat"]
    assert _command("api")[:2] == ["api", "serve"]


def test_the_api_is_checked_on_the_port_it_serves() -> None:
    port = _option(_command("api"), "--port")
    assert port is not None
    assert f"127.0.0.1:{port}/v2/health" in _check("api")


@pytest.mark.parametrize("service", WORKERS)
def test_each_worker_is_pinged_by_the_node_name_it_is_given(service: str) -> None:
    node = _option(_command(service), "--hostname", "-n")
    assert node is not None, f"{service}: give the worker a node name (--hostname NAME@%h)"
    name, _, host = node.partition("@")
    assert host == "%h", f"{service}: {node}: %h is the container's $HOSTNAME"
    check = _check(service)
    assert "inspect ping" in check
    assert _option(shlex.split(check), "-d", "--destination") == f"{name}@$HOSTNAME", check


def test_worker_node_names_are_distinct() -> None:
    names = [_option(_command(s), "--hostname", "-n") for s in WORKERS]
    assert len(set(names)) == len(names)


def test_beats_check_finds_the_schedule_beside_sqlites_files(tmp_path: Path) -> None:
    assert DATA_DIR is not None
    data_dir = DATA_DIR.group(1)
    assert f"beat-data:{data_dir}" in SERVICES["beat"]["volumes"]
    check = shlex.split(_check("beat"))
    assert check[0] == "python"
    assert f"{data_dir}/{BEAT_SCHEDULE_FILE}" in check[-1]
    argv = [sys.executable, *check[1:-1], check[-1].replace(data_dir, str(tmp_path))]

    def healthy() -> bool:
        return subprocess.run(argv, check=False, timeout=30).returncode == 0

    assert not healthy()  # beat has not written its schedule yet
    (tmp_path / BEAT_SCHEDULE_FILE).touch()
    assert healthy()
    for suffix in ("-shm", "-wal"):  # what Python's SQLite-backed shelve adds while open
        (tmp_path / f"{BEAT_SCHEDULE_FILE}{suffix}").touch()
    assert healthy()


def test_the_workers_serve_every_registered_queue_once() -> None:
    registry = CarrierRegistry()
    expected = {svc: sorted(registry.queues(kind)) for kind, svc in SERVICE_OF_KIND.items()}
    expected["worker"] = sorted(["knm", "celery", *expected["worker"]])
    got = {s: sorted((_option(_command(s), "--queues", "-Q") or "").split(",")) for s in WORKERS}
    assert got == expected, "docker-compose.yml --queues should be:\n" + "\n".join(
        f"  {service}: {','.join(queues)}" for service, queues in expected.items()
    )
