"""Per-carrier coordination on a real Redis (database 2, flushed before each test): the same
semantics as the in-process coordinator, atomic across connections and OS processes, and the
circuit breaker in front of real orders to the sandbox."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from carriers.coordination import (
    BreakerStatus,
    RedisCoordinator,
    coordinator_for,
    reset_coordinators,
)
from carriers.http import CarrierHttp, CircuitOpenError
from carriers.sandbox import Sandbox, SandboxClient
from config.carrier_settings import CarrierHttpSettings
from config.settings import Settings, reset_settings
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from tests import workers_rig as rig
from tests.carriers_rig import knm_on

pytestmark = pytest.mark.integration

#: The only Redis database these tests use.
DB = 2
C = "knm_test"
TELNYX = "knm_telnyx"
ACCOUNT = "a" * 32
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def coord_url(redis_url: str) -> Iterator[str]:
    url = rig.empty_redis_db(redis_url, DB)
    reset_coordinators()
    try:
        yield url
    finally:
        reset_coordinators()


@pytest.fixture
def coord(coord_url: str) -> Iterator[RedisCoordinator]:
    coordinator = RedisCoordinator(coord_url)
    try:
        yield coordinator
    finally:
        coordinator.close()


def _server_now(coord: RedisCoordinator) -> float:
    """The Redis server's clock, which every coordination script reads."""
    seconds, micros = coord.redis.time()
    return float(seconds) + float(micros) / 1e6


EPS = 1e-6  # the scripts' six decimals


# ------------------------------------------------------------------------------ semantics
def test_rate_limit_reserves_evenly_spaced_slots(coord: RedisCoordinator) -> None:
    """Slots are 0.1 s apart from the first reservation: each wait is that, less the time the
    reservations themselves took (measured on the server's clock, so a loaded machine only
    shifts the bounds)."""
    before = _server_now(coord)
    waits = [coord.acquire(C, 10) for _ in range(4)]
    after = _server_now(coord)
    assert waits[0] == 0.0
    for i, wait in enumerate(waits):
        assert max(0.0, i * 0.1 - (after - before)) - EPS <= wait <= i * 0.1 + EPS
    next_slot = coord.next_slot(C)
    assert next_slot is not None
    assert before + 0.4 - EPS <= next_slot <= after + 0.4 + EPS
    assert coord.acquire("other", 10) == 0.0
    assert coord.acquire(C, 0) == 0.0
    assert 0 < coord.redis.pttl(f"knm:rate:{C}") <= 1500  # the key goes away when idle
    time.sleep(0.5)
    assert coord.next_slot(C) is None
    assert coord.acquire(C, 10) == pytest.approx(0.0, abs=0.01)


def test_breaker_transitions(coord: RedisCoordinator) -> None:
    assert coord.breaker(C).status is BreakerStatus.CLOSED
    assert coord.admit(C, 60).allowed
    assert coord.record_failure(C, 60, 3, 0.4).failures == 1
    assert coord.record_success(C).failures == 1  # closed: successes do not reset the window
    assert coord.record_failure(C, 60, 3, 0.4).failures == 2
    before = _server_now(coord)
    state = coord.record_failure(C, 60, 3, 0.4)
    after = _server_now(coord)
    assert state.status is BreakerStatus.OPEN
    assert state.retry_in_s == pytest.approx(0.4, abs=EPS)
    assert state.open_until is not None
    assert before + 0.4 - EPS <= state.open_until <= after + 0.4 + EPS
    refused = coord.admit(C, 60)
    assert not refused.allowed
    assert refused.status is BreakerStatus.OPEN
    assert 0 < refused.retry_in_s <= 0.4
    assert coord.record_success(C).status is BreakerStatus.OPEN  # a late call: no change

    time.sleep(0.45)
    assert coord.breaker(C).status is BreakerStatus.HALF_OPEN
    probe = coord.admit(C, 60)
    assert probe.allowed
    assert probe.probe_token
    busy = coord.admit(C, 60)
    assert not busy.allowed
    assert busy.status is BreakerStatus.HALF_OPEN
    assert busy.retry_in_s == pytest.approx(0.4, abs=0.01)  # min(lease, open_s)
    assert coord.breaker(C).probing
    state = coord.record_failure(C, 60, 3, 0.4)  # the probe failed: open again
    assert state.status is BreakerStatus.OPEN
    assert not state.probing
    assert not coord.admit(C, 60).allowed

    time.sleep(0.45)
    second = coord.admit(C, 60)
    assert second.probe_token
    state = coord.record_success(C)  # the probe succeeded: closed, failures forgotten
    assert state.status is BreakerStatus.CLOSED
    assert state.failures == 0
    coord.release_probe(C, second.probe_token)
    assert coord.redis.exists(f"knm:breaker:{C}", f"knm:breaker:{C}:failures") == 0
    assert coord.admit(C, 60).status is BreakerStatus.CLOSED


def test_failures_leave_the_window(coord: RedisCoordinator) -> None:
    coord.record_failure(C, 0.3, 2, 30)
    time.sleep(0.35)
    assert coord.breaker(C).failures == 0
    assert coord.record_failure(C, 0.3, 2, 30).status is BreakerStatus.CLOSED
    assert coord.record_failure(C, 0.3, 2, 30).status is BreakerStatus.OPEN


def test_probe_claim_lapses_or_is_released(coord: RedisCoordinator) -> None:
    coord.record_failure(C, 60, 1, 0.1)
    time.sleep(0.15)
    first = coord.admit(C, 0.3)
    assert first.probe_token
    assert not coord.admit(C, 0.3).allowed
    time.sleep(0.35)  # the prober was killed: its claim lapses
    second = coord.admit(C, 0.3)
    assert second.probe_token
    coord.release_probe(C, first.probe_token)  # a stale claim: no effect
    assert not coord.admit(C, 0.3).allowed
    coord.release_probe(C, second.probe_token)
    assert coord.admit(C, 0.3).probe_token


def test_one_probe_among_concurrent_connections(coord_url: str) -> None:
    setup = RedisCoordinator(coord_url)
    setup.record_failure(C, 60, 1, 0.1)
    time.sleep(0.15)
    callers = [RedisCoordinator(coord_url) for _ in range(12)]  # each its own connection pool
    barrier = threading.Barrier(len(callers))
    allowed: list[bool] = []

    def caller(coordinator: RedisCoordinator) -> None:
        barrier.wait()
        allowed.append(coordinator.admit(C, 60).allowed)

    threads = [threading.Thread(target=caller, args=(c,)) for c in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for c in [setup, *callers]:
        c.close()
    assert sorted(allowed) == [False] * 11 + [True]


def test_in_flight_and_leaked_calls(coord: RedisCoordinator) -> None:
    assert coord.in_flight(C) == 0
    coord.enter(C, ttl_s=0.3)  # a call whose process is killed: never leaves
    with coord.calling(C, ttl_s=30):
        assert coord.in_flight(C) == 2
        assert coord.in_flight("other") == 0
    assert coord.in_flight(C) == 1
    with pytest.raises(RuntimeError), coord.calling(C):
        raise RuntimeError("boom")
    time.sleep(0.35)
    assert coord.in_flight(C) == 0
    with coord.calling(C, ttl_s=30):  # entering drops expired tokens from the set
        assert coord.redis.zcard(f"knm:inflight:{C}") == 1
        assert 0 < coord.redis.pttl(f"knm:inflight:{C}") <= 31_000  # the key expires too
    assert coord.redis.exists(f"knm:inflight:{C}") == 0


def test_recent_failures_snapshot_and_reset(coord: RedisCoordinator) -> None:
    for i in range(25):
        coord.note_failure(C, f"HTTP 503 #{i}")
    recent = coord.recent_failures(C)
    assert len(recent) == 20
    assert [r["reason"] for r in recent] == [f"HTTP 503 #{i}" for i in range(24, 4, -1)]
    assert coord.redis.llen(f"knm:failures:{C}") == 20
    coord.acquire(C, 1)
    coord.acquire(C, 1)
    before = _server_now(coord)
    coord.record_failure(C, 60, 1, 30)
    token = coord.enter(C)
    snap = coord.snapshot([C, "quiet"])[C]
    after = _server_now(coord)
    assert snap["in_flight"] == 1
    assert snap["breaker"] == "open"
    assert snap["open_until"].endswith("Z")
    assert 30 - (after - before) - EPS <= snap["retry_in_s"] <= 30
    assert snap["rate_limit_next_slot"].endswith("Z")
    assert len(snap["recent_failures"]) == 20
    coord.leave(C, token)
    coord.reset(C)
    assert coord.redis.keys("knm:*") == []
    assert coord.snapshot([C])[C]["breaker"] == "closed"


# ------------------------------------------------------------------ two processes, one limit
#: Each sender reserves its slots through the production script, changed only to also return
#: the slot it reserved (on the Redis server's clock), and sends through ``CarrierHttp``.
_SENDER = """
import json, sys, time
from pathlib import Path
import httpx
from carriers.coordination import coordinator_for
from carriers.coordination import rate_limit
from carriers.http import CarrierHttp
from config.carrier_settings import CarrierHttpSettings
from config.settings import Settings

cfg = json.loads(sys.argv[1])
name = sys.argv[2]
other = {"a": "b", "b": "a"}[name]
coordinator = coordinator_for(Settings(coordination_url=cfg["coordination_url"]))
limit = coordinator.rate_limit
reserve = limit.link.redis.register_script(
    rate_limit._ACQUIRE.replace("return fmt(slot - now)", "return {fmt(slot - now), fmt(slot)}")
)
slots, sent = [], []

def acquire(keys, args):
    wait, slot = reserve(keys=keys, args=args)
    slots.append(float(slot))
    if len(slots) == 1:  # both reserve a first slot before either reserves a second
        (Path(cfg["dir"]) / f"{name}.first").touch()
        while not (Path(cfg["dir"]) / f"{other}.first").exists():
            time.sleep(0.005)
    return wait

limit._acquire = acquire
client = httpx.Client(timeout=5, event_hooks={"request": [lambda r: sent.append(time.time())]})
http = CarrierHttp(
    "knm_telnyx", CarrierHttpSettings(), client=client, coordinator=coordinator,
    rate_per_s=cfg["rate"],
)
ready, go = Path(cfg["dir"]) / f"{name}.ready", Path(cfg["dir"]) / "go"
ready.touch()
while not go.exists():
    time.sleep(0.01)
ok = 0
for _ in range(cfg["requests"]):
    response = http.call(
        "POST", cfg["url"], idempotent=True, json=cfg["body"], headers=cfg["headers"]
    )
    ok += response.status_code == 200
print(json.dumps({"slots": slots, "sent": sent, "ok": ok}))
"""


def test_rate_limit_holds_across_two_processes(
    coord_url: str, sandbox_server: Sandbox, sandbox: SandboxClient, tmp_path: Path
) -> None:
    """Two OS processes share one limit: every send slot either of them reserves is at least
    1/rate after the previous one, whichever process took it, and each sends only once its slot
    has come. Judged by the slots and counts, not by how fast a loaded machine sends."""
    from carriers.coordination import rate_limit

    assert "return fmt(slot - now)" in rate_limit._ACQUIRE  # what the senders extend
    rate, requests = 10.0, 15
    env = sandbox_server.env()
    cfg = {
        "coordination_url": coord_url,
        "rate": rate,
        "requests": requests,
        "dir": str(tmp_path),
        "url": env["KNM_CARRIERS__TELNYX__BASE_URL"] + "number_searches",
        "headers": {
            "x-api-user": env["KNM_CARRIERS__TELNYX__USER"],
            "x-api-token": env["KNM_CARRIERS__TELNYX__TOKEN"],
        },
        "body": {
            "search_type": 1,
            "search_descriptor": {"npa": "415"},
            "limit": 1,
            "with_result": True,
        },
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SENDER, json.dumps(cfg), name],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    while not all((tmp_path / f"{name}.ready").exists() for name in ("a", "b")):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (tmp_path / "go").touch()  # both interpreters are up: they start together
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    a, b = outputs

    # every request was reserved, sent and answered, and the sandbox saw exactly those
    for o in outputs:
        assert o["ok"] == len(o["sent"]) == len(o["slots"]) == requests
    assert sandbox.requests("telnyx") == {"search": 2 * requests}
    # the two processes took slots from one sequence (each reserved its first slot before
    # either reserved a second, so their reservations interleave) ...
    assert max(a["slots"][0], b["slots"][0]) < min(a["slots"][1], b["slots"][1])
    # ... and no two slots, whoever took them, are closer than 1/rate
    slots = sorted(a["slots"] + b["slots"])
    gaps = [y - x for x, y in itertools.pairwise(slots)]
    assert min(gaps) >= 1 / rate - 1e-6
    # each request left its process only once its slot had come (one host, one clock)
    for o in outputs:
        assert all(sent >= slot - 0.002 for slot, sent in zip(o["slots"], o["sent"], strict=True))
    spread = slots[-1] - slots[0]
    print(f"two processes at {rate}/s: {len(slots)} slots over {spread:.2f} s")


# ---------------------------------------------------------------- the breaker before orders
def _knm(db: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, url: str) -> Knm:
    for key, value in {
        "KNM_COORDINATION_URL": url,
        "KNM_CARRIER_HTTP__MAX_ATTEMPTS": "2",
        "KNM_CARRIER_HTTP__BREAKER_FAILURES": "2",
        "KNM_CARRIER_HTTP__BREAKER_OPEN_S": "1",
    }.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    knm = knm_on(db)
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True)
    return knm


def _discover(knm: Knm, quantity: int) -> list[str]:
    results = knm.search(
        SearchQuery(prefix="415886", quantity=quantity, account_id=ACCOUNT, carriers=[TELNYX])
    )
    assert len(results) == quantity
    return [r.number for r in results]


def _buy(knm: Knm, number: str) -> Any:
    return knm.numbers.move([number], ACCOUNT, Options(auth_by="system"))


def _wait_half_open(coordinator: Any) -> None:
    state = coordinator.breaker(TELNYX)
    assert state.status is BreakerStatus.OPEN
    time.sleep(state.retry_in_s + 0.05)
    assert coordinator.breaker(TELNYX).status is BreakerStatus.HALF_OPEN


def test_open_breaker_holds_orders_back_and_a_probe_closes_it(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    coord_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    knm = _knm(mongo_db, monkeypatch, coord_url)
    coordinator = coordinator_for(knm.settings)
    assert isinstance(coordinator, RedisCoordinator)
    numbers = _discover(knm, 5)
    sandbox.fault("status", provider="telnyx", match="order", status=503, retry_after=0, times=None)

    # two orders fail transiently (every attempt used up): the breaker opens
    for i, number in enumerate(numbers[:2], start=1):
        error = _buy(knm, number).failed[number]
        assert error.retryable
        assert "HTTP 503" in error.to_json()["cause"]
        assert sandbox.requests("telnyx")["order"] == 2 * i
    state = coordinator.breaker(TELNYX)
    assert state.status is BreakerStatus.OPEN
    recent = coordinator.recent_failures(TELNYX)
    assert [r["reason"] for r in recent] == [
        f"acquire {numbers[1]}: HTTP 503 (after 2 attempts)",
        f"acquire {numbers[0]}: HTTP 503 (after 2 attempts)",
    ]

    # open: the next order is not sent at all, and the error leaves the operation
    with pytest.raises(CircuitOpenError) as info:
        _buy(knm, numbers[2])
    assert info.value.carrier == TELNYX
    assert 0 < info.value.retry_in_s <= 1
    assert sandbox.requests("telnyx")["order"] == 4
    assert knm.store.db["provisioning"].find_one({"_id": f"{TELNYX}:{numbers[2]}"}) is None

    # half-open: one probe goes out; it fails, so the breaker opens again at once
    _wait_half_open(coordinator)
    assert _buy(knm, numbers[2]).failed[numbers[2]].retryable
    assert sandbox.requests("telnyx")["order"] == 6
    assert coordinator.breaker(TELNYX).status is BreakerStatus.OPEN
    with pytest.raises(CircuitOpenError):
        _buy(knm, numbers[3])
    assert sandbox.requests("telnyx")["order"] == 6

    # the provider recovers: after open_s the probe succeeds and closes the breaker
    sandbox.reset()
    _wait_half_open(coordinator)
    batch = _buy(knm, numbers[3])
    assert batch.failed == {}
    assert sandbox.purchases("telnyx") == {numbers[3]: 1}
    state = coordinator.breaker(TELNYX)
    assert state.status is BreakerStatus.CLOSED
    assert state.failures == 0
    assert _buy(knm, numbers[4]).failed == {}
    assert sandbox.requests("telnyx")["order"] == 2


def test_refusals_are_noted_but_do_not_open_the_breaker(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    sandbox: SandboxClient,
    coord_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    knm = _knm(mongo_db, monkeypatch, coord_url)
    coordinator = coordinator_for(Settings())
    numbers = _discover(knm, 3)
    sandbox.fault("status", provider="telnyx", match="order", status=401, times=None)
    for number in numbers:
        error = _buy(knm, number).failed[number]
        assert not error.retryable
    assert sandbox.requests("telnyx")["order"] == 3
    state = coordinator.breaker(TELNYX)
    assert state.status is BreakerStatus.CLOSED
    assert state.failures == 0
    reasons = [r["reason"] for r in coordinator.recent_failures(TELNYX)]
    assert len(reasons) == 3
    assert all("unauthenticated" in r for r in reasons)
    assert all(sandbox_env["KNM_CARRIERS__TELNYX__TOKEN"] not in r for r in reasons)


def test_in_flight_is_visible_while_a_call_is_on_the_wire(
    sandbox_server: Sandbox, sandbox: SandboxClient, coord: RedisCoordinator
) -> None:
    env = sandbox_server.env()
    sandbox.configure(latency_ms=600)
    http = CarrierHttp(TELNYX, CarrierHttpSettings(), coordinator=coord, rate_per_s=0)
    seen: list[int] = []

    def call() -> None:
        http.call(
            "POST",
            env["KNM_CARRIERS__TELNYX__BASE_URL"] + "number_searches",
            idempotent=True,
            json={"search_type": 1, "search_descriptor": {"npa": "415"}, "limit": 1},
            headers={
                "x-api-user": env["KNM_CARRIERS__TELNYX__USER"],
                "x-api-token": env["KNM_CARRIERS__TELNYX__TOKEN"],
            },
        )

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not seen:
        if coord.in_flight(TELNYX) == 1:
            seen.append(1)
        time.sleep(0.02)
    thread.join()
    assert seen == [1]
    assert coord.in_flight(TELNYX) == 0
    assert coord.snapshot([TELNYX])[TELNYX]["in_flight"] == 0
