"""Per-carrier coordination in one process (``LocalCoordinator``, on a fake clock): the rate
limit, the circuit breaker with its single half-open probe, in-flight counts, recent failures;
and how ``CarrierHttp`` and ``coordinator_for`` use it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from carriers.coordination import (
    FAILURES_KEPT,
    BreakerStatus,
    LocalCoordinator,
    RedisCoordinator,
    coordinator_for,
    reset_coordinators,
)
from carriers.http import USER_AGENT, CarrierHttp, TransientCallError
from carriers.retry import RetryPolicy
from config.carrier_settings import CarrierHttpSettings
from config.settings import Settings

C = "knm_test"
URL = "https://provider.example/api"


class FakeClock:
    """Epoch seconds that move only when someone sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def coord(clock: FakeClock) -> LocalCoordinator:
    return LocalCoordinator(clock=clock)


@pytest.fixture(autouse=True)
def _fresh_coordinators() -> Iterator[None]:
    reset_coordinators()
    yield
    reset_coordinators()


# ------------------------------------------------------------------------------ rate limit
def test_rate_limit_spaces_sends_evenly(coord: LocalCoordinator, clock: FakeClock) -> None:
    # three callers at once: the first goes now, the others at 100 ms intervals
    assert [round(coord.acquire(C, 10), 6) for _ in range(3)] == [0.0, 0.1, 0.2]
    assert coord.next_slot(C) == pytest.approx(clock.now + 0.3)
    clock.sleep(0.3)
    assert coord.next_slot(C) is None  # the next send may go now
    assert coord.acquire(C, 10) == 0.0
    clock.sleep(5)
    assert coord.acquire(C, 10) == 0.0  # idle time is not saved up: a burst of one
    assert coord.acquire(C, 10) == pytest.approx(0.1)


def test_rate_limits_are_per_carrier_and_zero_is_unlimited(coord: LocalCoordinator) -> None:
    assert coord.acquire("a", 2) == 0.0
    assert coord.acquire("b", 2) == 0.0
    assert coord.acquire("a", 2) == pytest.approx(0.5)
    assert [coord.acquire("c", 0) for _ in range(5)] == [0.0] * 5
    assert coord.next_slot("c") is None


# ------------------------------------------------------------------------- circuit breaker
def test_breaker_opens_at_the_threshold_within_the_window(
    coord: LocalCoordinator, clock: FakeClock
) -> None:
    assert coord.breaker(C).status is BreakerStatus.CLOSED
    assert coord.record_failure(C, 10, 3, 30).failures == 1
    clock.sleep(11)  # the first failure leaves the window
    assert coord.record_failure(C, 10, 3, 30).failures == 1
    assert coord.record_failure(C, 10, 3, 30).failures == 2
    assert coord.record_success(C).status is BreakerStatus.CLOSED  # successes do not reset it
    state = coord.record_failure(C, 10, 3, 30)
    assert state.status is BreakerStatus.OPEN
    assert state.open_until == pytest.approx(clock.now + 30)
    assert state.retry_in_s == pytest.approx(30)
    admission = coord.admit(C, 60)
    assert not admission.allowed
    assert admission.status is BreakerStatus.OPEN
    assert admission.retry_in_s == pytest.approx(30)


def test_open_breaker_ignores_late_outcomes(coord: LocalCoordinator, clock: FakeClock) -> None:
    coord.record_failure(C, 10, 1, 30)
    clock.sleep(5)
    # calls that started before the breaker opened end now: nothing changes
    assert coord.record_success(C).status is BreakerStatus.OPEN
    state = coord.record_failure(C, 10, 1, 30)
    assert state.status is BreakerStatus.OPEN
    assert state.retry_in_s == pytest.approx(25)


def test_half_open_lets_exactly_one_probe_through(
    coord: LocalCoordinator, clock: FakeClock
) -> None:
    coord.record_failure(C, 10, 1, 30)
    clock.sleep(30)
    assert coord.breaker(C).status is BreakerStatus.HALF_OPEN
    probe = coord.admit(C, 60)
    assert probe.allowed
    assert probe.status is BreakerStatus.HALF_OPEN
    assert probe.probe_token
    assert coord.breaker(C).probing
    other = coord.admit(C, 60)
    assert not other.allowed
    assert other.status is BreakerStatus.HALF_OPEN
    assert other.retry_in_s == pytest.approx(30)  # min(the probe's lease, open_s)
    # the probe's success closes the breaker and forgets the failures
    state = coord.record_success(C)
    assert state.status is BreakerStatus.CLOSED
    assert state.failures == 0
    coord.release_probe(C, probe.probe_token)  # settled already: a no-op
    assert coord.admit(C, 60).allowed
    assert coord.admit(C, 60).status is BreakerStatus.CLOSED


def test_failed_probe_reopens_the_breaker(coord: LocalCoordinator, clock: FakeClock) -> None:
    coord.record_failure(C, 10, 1, 30)
    clock.sleep(31)
    assert coord.admit(C, 60).probe_token
    state = coord.record_failure(C, 10, 5, 30)  # one failure is enough while half-open
    assert state.status is BreakerStatus.OPEN
    assert state.open_until == pytest.approx(clock.now + 30)
    assert not state.probing
    assert not coord.admit(C, 60).allowed
    clock.sleep(30)
    assert coord.admit(C, 60).probe_token  # the next probe


def test_probe_claim_lapses_or_is_released(coord: LocalCoordinator, clock: FakeClock) -> None:
    coord.record_failure(C, 10, 1, 5)
    clock.sleep(5)
    first = coord.admit(C, 20)
    assert first.probe_token
    clock.sleep(19)
    assert not coord.admit(C, 20).allowed
    clock.sleep(1)  # the prober died: its lease is over, someone else probes
    second = coord.admit(C, 20)
    assert second.probe_token
    coord.release_probe(C, first.probe_token)  # not the current claim: no effect
    assert not coord.admit(C, 20).allowed
    coord.release_probe(C, second.probe_token or "")  # settled nothing (say a rerun)
    third = coord.admit(C, 20)
    assert third.allowed
    assert third.probe_token


def test_one_probe_among_concurrent_callers(coord: LocalCoordinator, clock: FakeClock) -> None:
    coord.record_failure(C, 10, 1, 5)
    clock.sleep(5)
    barrier = threading.Barrier(16)
    allowed: list[bool] = []

    def caller() -> None:
        barrier.wait()
        allowed.append(coord.admit(C, 60).allowed)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(allowed) == [False] * 15 + [True]


# ------------------------------------------------------------------------------- in flight
def test_in_flight_counts_and_forgets_leaked_calls(
    coord: LocalCoordinator, clock: FakeClock
) -> None:
    assert coord.in_flight(C) == 0
    leaked = coord.enter(C, ttl_s=10)  # its process is killed: never leaves
    with coord.calling(C, ttl_s=10):
        assert coord.in_flight(C) == 2
        assert coord.in_flight("other") == 0
    assert coord.in_flight(C) == 1
    with pytest.raises(RuntimeError), coord.calling(C):
        raise RuntimeError("boom")
    assert coord.in_flight(C) == 1
    clock.sleep(10)
    assert coord.in_flight(C) == 0  # past its deadline
    coord.leave(C, leaked)  # harmless
    assert coord.in_flight(C) == 0


# ------------------------------------------------------------------------- recent failures
def test_recent_failures_keep_the_newest_twenty(coord: LocalCoordinator) -> None:
    for i in range(25):
        coord.note_failure(C, f"HTTP 503 #{i}")
    recent = coord.recent_failures(C)
    assert len(recent) == FAILURES_KEPT == 20
    assert [r["reason"] for r in recent] == [f"HTTP 503 #{i}" for i in range(24, 4, -1)]
    assert recent[0]["at"].endswith("Z")
    assert coord.recent_failures("other") == []


def test_snapshot_and_reset(coord: LocalCoordinator, clock: FakeClock) -> None:
    coord.acquire(C, 1)
    coord.acquire(C, 1)
    coord.record_failure(C, 60, 1, 30)
    coord.note_failure(C, "acquire +14158860000: HTTP 503 (after 4 attempts)")
    token = coord.enter(C)
    snap = coord.snapshot([C, "quiet"])
    assert snap["quiet"] == {
        "in_flight": 0,
        "breaker": "closed",
        "open_until": None,
        "retry_in_s": 0.0,
        "probing": False,
        "failures_in_window": 0,
        "recent_failures": [],
        "rate_limit_next_slot": None,
    }
    mine = snap[C]
    assert mine["in_flight"] == 1
    assert mine["breaker"] == "open"
    assert mine["retry_in_s"] == 30
    assert mine["open_until"].endswith("Z")
    assert mine["rate_limit_next_slot"].endswith("Z")
    assert [f["reason"] for f in mine["recent_failures"]] == [
        "acquire +14158860000: HTTP 503 (after 4 attempts)"
    ]
    coord.reset(C)
    assert coord.snapshot([C])[C] == snap["quiet"]
    coord.leave(C, token)


# ----------------------------------------------------------------------- CarrierHttp wiring
def _http(
    coord: LocalCoordinator, clock: FakeClock, steps: list[httpx.Response], rate: float
) -> tuple[CarrierHttp, list[int]]:
    seen_in_flight: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_in_flight.append(coord.in_flight(C))
        return steps.pop(0)

    client = httpx.Client(
        transport=httpx.MockTransport(handler), headers={"User-Agent": USER_AGENT}
    )
    http = CarrierHttp(
        C,
        CarrierHttpSettings(max_attempts=3),
        client=client,
        sleep=clock.sleep,
        policy=RetryPolicy(max_attempts=3, base_s=1, max_s=1, rng=lambda: 1.0),
        coordinator=coord,
        rate_per_s=rate,
    )
    return http, seen_in_flight


def test_carrier_http_waits_for_its_slot_and_counts_in_flight(
    coord: LocalCoordinator, clock: FakeClock
) -> None:
    http, seen = _http(coord, clock, [httpx.Response(200) for _ in range(4)], rate=4)
    for _ in range(4):
        assert http.call("GET", URL, idempotent=True).status_code == 200
    assert clock.slept == [0.25, 0.25, 0.25]  # the first goes at once
    assert seen == [1, 1, 1, 1]
    assert coord.in_flight(C) == 0


def test_carrier_http_retries_take_slots_too(coord: LocalCoordinator, clock: FakeClock) -> None:
    steps = [httpx.Response(503, headers={"Retry-After": "0"}) for _ in range(3)]
    http, seen = _http(coord, clock, steps, rate=2)
    with pytest.raises(TransientCallError):
        http.call("POST", URL, idempotent=False)
    assert clock.slept == [0.5, 0.5]  # Retry-After 0, but the rate limit holds
    assert seen == [1, 1, 1]
    assert coord.in_flight(C) == 0


def test_carrier_http_without_a_rate_limit_never_waits(
    coord: LocalCoordinator, clock: FakeClock
) -> None:
    http, seen = _http(coord, clock, [httpx.Response(200) for _ in range(3)], rate=0)
    for _ in range(3):
        http.call("GET", URL, idempotent=True)
    assert clock.slept == []
    assert seen == [1, 1, 1]


# ------------------------------------------------------------------------- coordinator_for
def test_coordinator_for_picks_redis_or_local_once_per_url() -> None:
    local = coordinator_for(Settings())
    assert isinstance(local, LocalCoordinator)
    assert coordinator_for(Settings()) is local
    assert coordinator_for(Settings(broker_url="amqp://guest@127.0.0.1//")) is local
    via_broker = coordinator_for(Settings(broker_url="redis://127.0.0.1:6379/9"))
    assert isinstance(via_broker, RedisCoordinator)
    own = coordinator_for(
        Settings(broker_url="redis://127.0.0.1:6379/9", coordination_url="redis://127.0.0.1/8")
    )
    assert isinstance(own, RedisCoordinator)
    assert own is not via_broker
    assert coordinator_for(Settings(coordination_url="redis://127.0.0.1/8")) is own


def test_unreachable_redis_falls_back_to_this_process(caplog: pytest.LogCaptureFixture) -> None:
    coord = RedisCoordinator("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        assert coord.acquire(C, 10) == 0.0
        assert coord.acquire(C, 10) == pytest.approx(0.1, abs=0.01)
        assert coord.admit(C, 60).allowed
        with coord.calling(C):
            assert coord.fallback.in_flight(C) == 1
        coord.record_failure(C, 60, 1, 30)
        assert not coord.admit(C, 60).allowed
        coord.note_failure(C, "HTTP 503")
        assert coord.fallback.recent_failures(C)[0]["reason"] == "HTTP 503"
    finally:
        coord.close()
    assert "Redis unreachable" in caplog.text
