"""Sweep tasks (beat runs them every ``KNM_CRAWLER_INTERVAL``): ``knm.sweeps.<kind>``.

A sweep that finds another one running reports the lock and ends cleanly (no retry): the running
sweep does the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Task

from knm.services.numbers_requests import InvalidRequestError
from knm.services.sweeps import Sweeper, SweepKind, SweepLockedError
from tasks.numbers import KnmTask
from tasks.runtime import get_knm
from workers.app import app


def _run(kind: SweepKind, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if args or not set(kwargs) <= {"now", "dry_run"}:
        raise InvalidRequestError("sweeps take only the kwargs now (ISO 8601) and dry_run")
    try:
        now = datetime.fromisoformat(kwargs["now"]) if kwargs.get("now") else None
    except (TypeError, ValueError):
        raise InvalidRequestError(f"now must be an ISO 8601 time: {kwargs.get('now')!r}") from None
    knm = get_knm()
    sweeper = Sweeper(
        knm, lock_ttl_s=knm.settings.sweep_lock_ttl_s, batch_size=knm.settings.sweep_batch_size
    )
    try:
        report = sweeper.run([kind], now=now, dry_run=bool(kwargs.get("dry_run", False)))
    except SweepLockedError as exc:
        return {"locked": True, "lost": exc.lost, "message": str(exc)}
    return report.to_json()


def _make(kind: SweepKind) -> Task[Any, Any]:
    @app.task(name=f"knm.sweeps.{kind.value}", bind=True, base=KnmTask)
    def sweep(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        return _run(kind, args, kwargs)

    sweep.__doc__ = f"knm.sweeps.{kind.value}: one {kind.value} sweep (locked, batched)."
    return sweep


age = _make(SweepKind.AGE)
purge_discovery = _make(SweepKind.PURGE_DISCOVERY)
purge_deleted = _make(SweepKind.PURGE_DELETED)
