"""``knm demo`` end to end with nothing configured (embedded store, embedded broker, a real worker
subprocess, the carrier sandbox), judged by what it leaves in the store, not by how long it takes;
and ``knm stop``, which stops the embedded store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pymongo
import pytest

from knm.cli.demo_steps import DEMO_BAD_ROW, DEMO_CHILD, DEMO_INVENTORY, DEMO_LOCAL
from knm.store import embedded


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env["KNM_DATA_DIR"] = str(data_dir)
    return env


def _knm(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "knm", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _numbers(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The stored demo numbers, read from the embedded store (started again for the look)."""
    url = embedded.ensure_server(data_dir)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        db = client["knm"]
        docs = {d["_id"]: d for d in db["numbers"].find({})}
        docs["jobs"] = {"list": list(db["jobs"].find({}))}
        return docs
    finally:
        client.close()
        embedded.stop_server(data_dir)


def test_the_demo_runs_the_whole_mission_and_stops_what_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    try:
        done = _knm(data_dir, "demo")
        assert done.returncode == 0, (done.stdout, done.stderr)
        out = " ".join(done.stdout.split())

        # it stopped its worker and the embedded store it started
        pid = int(out.split("started a worker: pid ", 1)[1].split(",", 1)[0])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert embedded.live_state(data_dir) is None
        assert "embedded store stopped" in out

        # each producer kind reached the worker, on the queue of the work's carrier
        assert "job partial, 5 succeeded, 1 failed" in out
        assert f"row {DEMO_BAD_ROW}: bad field(s) state" in out
        # knm_local makes no provider call: its work runs where it was received, in one hop
        assert "knm.numbers.reserve → queue knm, worker knm-demo-" in out
        assert "knm.numbers.activate → queue carrier.knm_telnyx, worker knm-demo-" in out
        assert "the sandbox saw 2 order requests" in out
        assert "and 1 purchase of +1646555" in out
        assert "forbidden" in out
        assert "aged 2 in 1 batch(es)" in out
        assert "knm.sweeps.age → queue knm" in out
        assert "event on demo.billing.replies: number.activate.succeeded" in out
        assert "the same request_id sent again returns the same outcome: True" in out
        assert "13. knm status" in out
        assert "dead letters: 0" in out

        stored = _numbers(data_dir)
        bought = out.split("and 1 purchase of ", 1)[1].split()[0]
        states = {n: stored[n]["pvt_state"] for n in [*DEMO_LOCAL, *DEMO_INVENTORY, bought]}
        assert states == {
            DEMO_LOCAL[0]: "in_service",
            DEMO_LOCAL[1]: "reserved",
            DEMO_LOCAL[2]: "available",
            DEMO_INVENTORY[0]: "available",  # released into aging, then aged by the sweep
            DEMO_INVENTORY[1]: "in_service",  # activated by the other service
            bought: "available",  # bought from the sandbox, released, aged
        }
        assert DEMO_BAD_ROW not in stored
        assert stored[bought]["pvt_carrier_module"] == "knm_telnyx"
        other = stored[DEMO_INVENTORY[1]]
        assert other["pvt_assigned_to"] == DEMO_CHILD
        assert other["pvt_request_id"].startswith("billing-")
        (job,) = stored["jobs"]["list"]
        assert (job["status"], job["succeeded"], job["failed"]) == ("partial", 5, 1)

        # re-runnable: the demo numbers are reset and the same outcomes come again
        again = _knm(data_dir, "demo")
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert "removed 5 demo numbers left by an earlier run" in again.stdout
        assert "aged 2" in again.stdout
    finally:
        embedded.stop_server(data_dir)


def test_knm_stop_stops_the_embedded_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "stop-data"
    try:
        assert _knm(data_dir, "numbers", "get", "+14155550100").returncode == 1  # not found
        state = embedded.live_state(data_dir)
        assert state is not None
        stopped = _knm(data_dir, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the embedded store under {data_dir.resolve()} (pid {state.pid})" in (
            stopped.stdout
        )
        assert embedded.live_state(data_dir) is None
        again = _knm(data_dir, "stop")
        assert again.returncode == 0
        assert "no embedded store running" in again.stdout
    finally:
        embedded.stop_server(data_dir)
