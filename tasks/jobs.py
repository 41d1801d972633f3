"""Tasks of CSV jobs: ``knm.jobs.chunk`` runs one chunk of rows (idempotent, see knm.jobs)."""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task

from knm.services import jobs
from knm.services.facade import InputError
from knm.services.numbers_requests import InvalidRequestError
from tasks.numbers import KnmTask
from tasks.runtime import get_knm
from workers.app import app


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int]:
    if args or set(kwargs) != {"job_id", "chunk"}:
        raise InvalidRequestError("knm.jobs.chunk takes exactly the kwargs job_id and chunk")
    job_id, chunk = kwargs["job_id"], kwargs["chunk"]
    if not isinstance(job_id, str) or not isinstance(chunk, int) or chunk < 0:
        raise InvalidRequestError("job_id must be a string and chunk a non-negative integer")
    return job_id, chunk


class ChunkTask(KnmTask):
    """A chunk that fails for good fails its unfinished rows, so the job still finishes."""

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        try:
            job_id, chunk = _arguments(args, kwargs)
        except InvalidRequestError:
            return
        jobs.fail_chunk(get_knm(), job_id, chunk, f"{type(exc).__name__}: {exc}")


@app.task(name="knm.jobs.chunk", bind=True, base=ChunkTask)
def run_chunk(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run chunk ``chunk`` of job ``job_id``; returns what it did."""
    job_id, chunk = _arguments(args, kwargs)
    try:
        return jobs.run_chunk(get_knm(), job_id, chunk).to_json()
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
