"""The embedded default store: started once per data dir, reused, persistent, stoppable."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import ReplaceOne
from pymongo.database import Database

from knm.store import embedded

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose server (if any) is stopped after the test."""
    path = tmp_path / "data"
    try:
        yield path
    finally:
        embedded.stop_server(path)


def _pid(data_dir: Path) -> int:
    state = embedded.read_state(data_dir)
    assert state is not None
    return state.pid


def _alive(pid: int) -> bool:
    return embedded._pid_alive(pid)


def test_start_reuse_persist_restart_stop(data_dir: Path) -> None:
    url = embedded.ensure_server(data_dir)
    pid = _pid(data_dir)
    assert _alive(pid)
    assert (data_dir / embedded.STATE_FILE).is_file()
    assert (data_dir / embedded.DB_FILE).exists()
    assert embedded.ensure_server(data_dir) == url
    assert _pid(data_dir) == pid

    with pymongo.MongoClient[dict[str, Any]](url) as client:
        client.knm.numbers.insert_one({"_id": "+14155550100", "pvt_state": "available"})

    assert embedded.stop_server(data_dir) is True
    assert not _alive(pid)
    assert not (data_dir / embedded.STATE_FILE).exists()
    assert embedded.stop_server(data_dir) is False

    url2 = embedded.ensure_server(data_dir)
    assert _pid(data_dir) != pid
    with pymongo.MongoClient[dict[str, Any]](url2) as client:
        doc = client.knm.numbers.find_one({"_id": "+14155550100"})
    assert doc is not None
    assert doc["pvt_state"] == "available"


def test_concurrent_callers_share_one_server(data_dir: Path) -> None:
    barrier = threading.Barrier(4)
    before = set(embedded._children)

    def call() -> tuple[str, int]:
        barrier.wait()
        url = embedded.ensure_server(data_dir)
        return url, _pid(data_dir)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: call(), range(4)))
    assert len(set(results)) == 1
    pid = results[0][1]
    assert set(embedded._children) - before == {pid}
    assert _alive(pid)


def test_stale_state_file_is_replaced(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    dead = {"pid": 2**22 + 12345, "port": 1, "url": embedded.url_for(1)}
    (data_dir / embedded.STATE_FILE).write_text(json.dumps(dead))
    url = embedded.ensure_server(data_dir)
    assert url != dead["url"]
    assert _pid(data_dir) != dead["pid"]
    assert embedded.ping(url)


def test_serve_sigterm_removes_state(data_dir: Path) -> None:
    embedded.ensure_server(data_dir)
    pid = _pid(data_dir)
    os.kill(pid, 15)
    embedded._children[pid].wait(timeout=10)
    assert not (data_dir / embedded.STATE_FILE).exists()
    log = (data_dir / embedded.LOG_FILE).read_text()
    assert "stopped" in log


def test_mongo_db_conditional_bulk_write(mongo_db: Database[dict[str, Any]]) -> None:
    numbers = mongo_db.numbers
    numbers.insert_one({"_id": "+14155550101", "pvt_rev": 1, "pvt_state": "available"})
    stale = ReplaceOne(
        {"_id": "+14155550101", "pvt_rev": 0},
        {"pvt_rev": 1, "pvt_state": "in_service"},
    )
    result = numbers.bulk_write([stale], ordered=False)
    assert result.matched_count == 0
    assert result.modified_count == 0
    fresh = ReplaceOne(
        {"_id": "+14155550101", "pvt_rev": 1},
        {"pvt_rev": 2, "pvt_state": "in_service"},
    )
    assert numbers.bulk_write([fresh]).matched_count == 1
    assert numbers.find_one({"_id": "+14155550101"}) == {
        "_id": "+14155550101",
        "pvt_rev": 2,
        "pvt_state": "in_service",
    }
