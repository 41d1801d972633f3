"""crossbar's ``tasks`` API for the ``number_management`` category: knm's CSV jobs.

``PUT /v2/accounts/{A}/tasks?category=number_management&action=ACTION`` stores a task from a
``text/csv`` body, streamed into the job store row by row (never held whole), or from JSON
records; ``PATCH .../tasks/{ID}`` starts it (publishes its chunks for the workers); ``GET``
shows its status and counters, ``GET .../csv`` streams the result CSV, ``DELETE`` removes it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from knm.api import envelope
from knm.api.auth import Auth, Requester, check_account
from knm.api.envelope import ApiError, EnvelopeResponse
from knm.domain.number import to_gregorian_seconds
from knm.services.csv_actions import ACTIONS
from knm.services.csv_files import escape_cell
from knm.services.facade import InputError
from knm.services.job_access import job_refusal
from knm.services.jobs import FINAL_STATUSES, RESULT_HEADER, Job, JobStatus, JobStore, create_job
from knm.store import job_retention

router = APIRouter(prefix="/v2", tags=["tasks"])

CATEGORY: Final[str] = "number_management"
#: Result rows written per piece of the streamed CSV.
_ROWS_PER_PIECE: Final[int] = 200


class TaskRecords(BaseModel):
    """JSON records instead of a CSV body: ``{"data": {"records": [{column: value}]}}``."""

    records: list[dict[str, str | int | float | bool | None]] = Field(
        min_length=1, max_length=10_000
    )


class TaskBody(BaseModel):
    data: TaskRecords


def _task_json(job: Job) -> dict[str, Any]:
    """A job as crossbar shows a task: its identity, status and counters."""
    data = job.to_json()
    return {
        "id": job.id,
        "account_id": job.account_id,
        "auth_account_id": job.auth_account_id,
        "category": CATEGORY,
        "action": job.action,
        "status": job.status.value,
        "submitted_at": to_gregorian_seconds(job.created),
        "started_at": to_gregorian_seconds(job.started) if job.started else None,
        "finished_at": to_gregorian_seconds(job.finished) if job.finished else None,
        "total_count": job.rows,
        "success_count": job.succeeded,
        "failure_count": job.failed,
        "done_count": job.done,
        "is_terminated": job.status in FINAL_STATUSES,
        "source": data.get("source"),
    }


@router.get("/tasks", response_model=envelope.Envelope)
def available_tasks(who: Auth) -> EnvelopeResponse:
    """The actions of ``number_management`` and their columns (crossbar's ``tasks/help``)."""
    return _help(who)


@router.get("/accounts/{account_id}/tasks/help", response_model=envelope.Envelope)
def account_available_tasks(account_id: str, who: Auth) -> EnvelopeResponse:
    """The same under an account (crossbar's path)."""
    check_account(who, account_id)
    return _help(who)


def _help(who: Requester) -> EnvelopeResponse:
    actions = {
        name: {
            "description": action.description,
            "expected_content": "text/csv" if action.takes_input else None,
            "mandatory": list(action.mandatory),
            "optional": list(action.optional),
        }
        for name, action in ACTIONS.items()
    }
    return envelope.success({"tasks": {CATEGORY: actions}}, who.request_id)


@router.get("/accounts/{account_id}/tasks", response_model=envelope.Envelope)
def list_tasks(
    account_id: str, who: Auth, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> EnvelopeResponse:
    """The account's tasks, newest first."""
    check_account(who, account_id)
    store = JobStore(who.ctx.knm)
    found = store.jobs.find({"account_id": account_id}).sort("created", -1).limit(limit)
    tasks = [_task_json(Job.from_document(doc)) for doc in found]
    return envelope.success(tasks, who.request_id, page_size=len(tasks))


def _check_kind(category: str | None, action: str | None) -> str:
    if category != CATEGORY:
        raise envelope.bad_identifier(str(category), "category")
    if action is None or action not in ACTIONS:
        raise envelope.bad_identifier(str(action), "action")
    return action


class _BodyStream(io.RawIOBase):
    """The request body as a blocking file for ``create_job`` in a worker thread.

    Each read pulls the next piece of the body from the event loop, so the API holds one piece
    at a time whatever the file's size.
    """

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        super().__init__()
        self._pieces = pieces
        self._buffer: memoryview = memoryview(b"")

    async def _next(self) -> bytes:
        return await self._pieces.__anext__()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer:
            try:
                piece: bytes = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                return 0
            self._buffer = memoryview(piece)
        size = min(len(buffer), len(self._buffer))
        buffer[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _records_csv(records: list[dict[str, Any]]) -> io.BytesIO:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record.get(c) is None else str(record[c]) for c in columns])
    return io.BytesIO(text.getvalue().encode("utf-8"))


@router.put("/accounts/{account_id}/tasks", status_code=201)
async def create_task(
    account_id: str,
    request: Request,
    who: Auth,
    category: Annotated[str | None, Query(description="number_management")] = None,
    action: Annotated[
        str | None, Query(description="import, assign_to, ... (GET /v2/tasks)")
    ] = None,
    name: Annotated[str | None, Query(max_length=200, description="The file's name.")] = None,
) -> EnvelopeResponse:
    """Store a task: a ``text/csv`` body (streamed), JSON records, or none (listings)."""
    await anyio.to_thread.run_sync(check_account, who, account_id)
    chosen = _check_kind(category, action)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    source: io.RawIOBase | io.BytesIO | None = None
    if kind == "text/csv":
        source = _BodyStream(request.stream().__aiter__())
    elif kind == "application/json":
        raw = await request.body()
        if raw.strip():
            try:
                body = TaskBody.model_validate_json(raw)
            except ValidationError as exc:
                raise envelope.invalid_data(envelope.validation_fields(exc.errors())) from None
            source = _records_csv(body.data.records)
    elif kind:
        raise ApiError(
            415,
            "unsupported_media_type",
            {"message": f"a task's body is text/csv or application/json, not {kind}"},
        )
    if source is not None and not ACTIONS[chosen].takes_input:
        raise envelope.invalid_field("body", "forbidden", f"action {chosen} takes no CSV")

    def store() -> Job:
        return create_job(
            who.ctx.knm,
            chosen,
            source,  # type: ignore[arg-type]  # a readable binary stream
            account_id=account_id,
            auth_by=who.auth_by,
            source_name=name or ("records.json" if kind == "application/json" else None),
        )

    try:
        job = await anyio.to_thread.run_sync(store)
    except InputError as exc:
        raise envelope.invalid_field("csv", "invalid", str(exc)) from None
    return envelope.success(_task_json(job), who.request_id, 201)


def _task(who: Requester, account_id: str, task_id: str) -> Job:
    check_account(who, account_id)
    job = JobStore(who.ctx.knm).get(task_id)
    if job is None or job.account_id != account_id:
        raise envelope.bad_identifier(task_id, "task")
    if (refusal := job_refusal(who.ctx.knm, job, who.auth_by)) is not None:
        raise envelope.knm_error(refusal)
    return job


@router.get("/accounts/{account_id}/tasks/{task_id}", response_model=envelope.Envelope)
def get_task(account_id: str, task_id: str, who: Auth) -> EnvelopeResponse:
    """The task's status and counters."""
    job = _task(who, account_id, task_id)
    return envelope.success({"_read_only": _task_json(job)}, who.request_id)


@router.patch("/accounts/{account_id}/tasks/{task_id}", response_model=envelope.Envelope)
def start_task(account_id: str, task_id: str, who: Auth) -> EnvelopeResponse:
    """Start the task: its chunks are published for the workers (once)."""
    from workers import producer

    job = _task(who, account_id, task_id)
    store = JobStore(who.ctx.knm)
    claimed = store.jobs.find_one_and_update(
        {"_id": job.id, "api_started": {"$exists": False}},
        {"$set": {"api_started": datetime.now(UTC)}},
    )
    if claimed is None or job.status != JobStatus.PENDING:
        raise ApiError(
            404,
            "bad_identifier",
            {"message": "bad identifier", "cause": task_id, "tip": "the task was already started"},
        )
    try:
        producer.submit_job(job.id, job.chunks, app=who.ctx.producer())
    except Exception as exc:
        store.jobs.update_one({"_id": job.id}, {"$unset": {"api_started": ""}})
        data = {"message": f"{type(exc).__name__}: {exc}"}
        raise ApiError(503, "broker_unavailable", data) from None
    return envelope.success(_task_json(job), who.request_id)


@router.delete("/accounts/{account_id}/tasks/{task_id}", response_model=envelope.Envelope)
def delete_task(account_id: str, task_id: str, who: Auth) -> EnvelopeResponse:
    """Remove a task that is not running, with its rows and results."""
    job = _task(who, account_id, task_id)
    if job.status == JobStatus.RUNNING:
        raise ApiError(
            404,
            "bad_identifier",
            {"message": "bad identifier", "cause": task_id, "tip": "the task is running"},
        )
    job_retention.delete_job(who.ctx.db, job.id)
    return envelope.success(_task_json(job), who.request_id)


@router.get("/accounts/{account_id}/tasks/{task_id}/csv")
def task_csv(account_id: str, task_id: str, who: Auth) -> StreamingResponse:
    """The result CSV: each row's listing, or its input and error (streamed)."""
    job = _task(who, account_id, task_id)
    rows = JobStore(who.ctx.knm).result_rows(job.id)

    def pieces() -> Iterator[bytes]:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(RESULT_HEADER)
        for count, row in enumerate(rows, 1):
            writer.writerow([escape_cell(row.get(c, "") or "") for c in RESULT_HEADER])
            if count % _ROWS_PER_PIECE == 0:
                yield text.getvalue().encode("utf-8")
                text.seek(0)
                text.truncate()
        yield text.getvalue().encode("utf-8")

    return StreamingResponse(
        pieces(),
        media_type="text/csv; charset=utf-8",
        headers={
            "X-Request-Id": who.request_id,
            "Content-Disposition": f'attachment; filename="{job.id}.csv"',
        },
    )
