"""Tasks of CSV jobs: ``knm.jobs.chunk`` runs one chunk of rows, ``knm.jobs.rows`` one carrier's
rows of a chunk on that carrier's queue (both idempotent, see ``knm.services.jobs``)."""

from __future__ import annotations

from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Task

from knm.services import jobs
from knm.services.dispatch import Requeue
from knm.services.facade import InputError
from knm.services.numbers_requests import InvalidRequestError
from tasks.numbers import UNBOUNDED_RETRIES, KnmTask, arrived_on
from tasks.runtime import get_knm
from workers import dispatch_broker
from workers.app import app


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int]:
    if args or set(kwargs) != {"job_id", "chunk"}:
        raise InvalidRequestError("knm.jobs.chunk takes exactly the kwargs job_id and chunk")
    job_id, chunk = kwargs["job_id"], kwargs["chunk"]
    if not isinstance(job_id, str) or not isinstance(chunk, int) or chunk < 0:
        raise InvalidRequestError("job_id must be a string and chunk a non-negative integer")
    return job_id, chunk


def _rows_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, int, str | None, int]:
    allowed = {"job_id", "chunk", "module", "transient_attempts"}
    if args or not {"job_id", "chunk", "module"} <= set(kwargs) <= allowed:
        raise InvalidRequestError(
            "knm.jobs.rows takes the kwargs job_id, chunk, module (and transient_attempts)"
        )
    job_id, chunk = _arguments((), {"job_id": kwargs["job_id"], "chunk": kwargs["chunk"]})
    module, attempts = kwargs["module"], kwargs.get("transient_attempts", 0)
    if module is not None and not isinstance(module, str):
        raise InvalidRequestError("module must be a carrier module name or null")
    if not isinstance(attempts, int) or attempts < 0:
        raise InvalidRequestError("transient_attempts must be a non-negative integer")
    return job_id, chunk, module, attempts


class ChunkTask(KnmTask):
    """A chunk that fails for good fails its unfinished rows, so the job still finishes."""

    #: A chunk's report is short: logged whole.
    resultrepr_maxsize = 1024

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


class RowsTask(KnmTask):
    """A carrier's rows that fail for good fail with the reason, so the job still finishes."""

    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        try:
            job_id, chunk, module, _attempts = _rows_arguments(args, kwargs)
        except InvalidRequestError:
            return
        jobs.fail_rows(get_knm(), job_id, chunk, module, f"{type(exc).__name__}: {exc}")


@app.task(name="knm.jobs.chunk", bind=True, base=ChunkTask)
def run_chunk(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run chunk ``chunk`` of job ``job_id``: its local rows here, the others on their
    carriers' queues; returns what it did."""
    job_id, chunk = _arguments(args, kwargs)
    broker = dispatch_broker.for_app(app)
    try:
        report = jobs.run_chunk(get_knm(), job_id, chunk, broker, here=arrived_on(self))
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    return report.to_json()


@app.task(name="knm.jobs.rows", bind=True, base=RowsTask, acks_late=True, ignore_result=True)
def run_rows(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """Run the rows of chunk ``chunk`` of job ``job_id`` that are on carrier ``module``."""
    job_id, chunk, module, attempts = _rows_arguments(args, kwargs)
    broker = dispatch_broker.for_app(app)
    try:
        outcome = jobs.run_rows(
            get_knm(), broker, job_id, chunk, module, transient_attempts=attempts
        )
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    if isinstance(outcome, Requeue):
        raise self.retry(
            countdown=outcome.countdown,
            max_retries=UNBOUNDED_RETRIES,
            kwargs={**kwargs, "transient_attempts": outcome.transient_attempts},
        )
    return outcome.to_json()
