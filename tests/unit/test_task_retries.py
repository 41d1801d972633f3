"""How long the task layer waits before running work again, with no broker: Celery's automatic
retry after a store failure and the re-queue of a carrier share both wait the retry module's
backoff (jitter made deterministic by fixing ``random.random``)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from celery import Task
from celery.exceptions import Retry
from pymongo.errors import ConnectionFailure

import tasks.numbers
from config.settings import reset_settings


@pytest.fixture
def countdowns(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The countdown of every retry Celery is asked for (nothing is published)."""
    seen: list[float | None] = []

    def retry(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Retry:
        seen.append(args[5] if len(args) > 5 else kwargs.get("countdown"))
        return Retry("retry", when=seen[-1])

    monkeypatch.setattr(Task, "retry", retry)
    return seen


def _store_down() -> Any:
    raise ConnectionFailure("the store is down")


@pytest.mark.parametrize(("share", "factor"), [(1.0, 1.0), (0.5, 0.5)])
def test_a_store_failure_is_retried_after_the_backoff_of_its_retry_number(
    monkeypatch: pytest.MonkeyPatch, countdowns: list[float | None], share: float, factor: float
) -> None:
    monkeypatch.setattr(random, "random", lambda: share)
    monkeypatch.setattr(tasks.numbers, "get_knm", _store_down)
    task = tasks.numbers.get
    for retries in range(8):
        task.push_request(retries=retries)
        try:
            with pytest.raises(Retry):
                task.run(numbers=["+14155550100"])  # Celery's autoretry wraps run
        finally:
            task.pop_request()
    # 1 s doubling, capped at 60 s, times the jitter's share
    assert countdowns == [factor * s for s in (1, 2, 4, 8, 16, 32, 60, 60)]


def test_a_retry_that_names_its_countdown_keeps_it(countdowns: list[float | None]) -> None:
    task = tasks.numbers.run_on_carrier
    task.push_request(retries=3)
    try:
        task.retry(countdown=7.5)
    finally:
        task.pop_request()
    assert countdowns == [7.5]


def test_a_share_is_requeued_after_the_carrier_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_CARRIER_RETRY_BASE_S", "10")
    monkeypatch.setenv("KNM_CARRIER_RETRY_MAX_S", "100")
    reset_settings()
    try:
        monkeypatch.setattr(random, "random", lambda: 1.0)
        assert [tasks.numbers._requeue_delay(n) for n in range(5)] == [10, 20, 40, 80, 100]
        monkeypatch.setattr(random, "random", lambda: 0.0)
        assert tasks.numbers._requeue_delay(0) == 0.1  # never at once
    finally:
        monkeypatch.undo()
        reset_settings()
