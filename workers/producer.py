"""The producer side of the worker system: publish a request as a task, wait for its result.

``knm numbers ... --via-broker`` and ``knm demo`` use this; any other service can do the same
with a plain ``Celery(broker=...).send_task("knm.numbers.create", kwargs={...})``. A task's
kwargs are ``NumbersRequest.to_payload()`` and its result is the same JSON as an in-process
``knm.requests.execute()``: ``{"succeeded": {E.164: stored document}, "failed": {input: error}}``.

Every message is published with ``expires`` equal to the wait, so a request the caller gave up
on (no worker answered in time) is discarded by a worker that receives it later instead of being
executed behind the caller's back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from kombu.utils.url import maybe_sanitize_url

from carriers.registry import default_registry
from config.settings import Settings, get_settings
from knm.services import numbers_requests as requests
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.services.search import SearchQuery
from workers.celery_config import DEFAULT_QUEUE

#: The client that publishes knm tasks (a Celery app), named so layers above need no Celery import.
type ProducerApp = Celery

DEFAULT_TIMEOUT_S: Final[float] = 60.0
SEARCH_TASK: Final[str] = "knm.search"

#: Failures raised by a task that mean "this request can never succeed" (exit code 2).
INVALID_REQUEST_ERRORS: Final[frozenset[str]] = frozenset(
    {"InvalidRequestError", "InputError", "ValidationError"}
)
#: Reconnection attempts of a producer to an unreachable Redis result backend (~2 s in all).
_PRODUCER_RETRY_POLICY: Final[dict[str, float]] = {
    "max_retries": 4,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
#: How often ``wait`` polls a result backend that cannot push (the embedded file backend).
_POLL_S: Final[float] = 0.1


def task_name(op: Operation) -> str:
    """The task of an operation: ``knm.numbers.<op>``."""
    return f"knm.numbers.{op.value}"


class ProducerError(RuntimeError):
    """A request sent through the broker did not produce a result."""


class BrokerUnavailableError(ProducerError):
    """The broker (or the result backend) could not be reached."""


class NoWorkerError(ProducerError):
    """No worker took the task before the timeout."""

    def __init__(self, timeout: float, task_id: str) -> None:
        super().__init__(f"no worker answered within {timeout:g} s: start one with 'knm worker'")
        self.timeout = timeout
        self.task_id = task_id


class StillRunningError(ProducerError):
    """A worker took the task but did not finish it before the timeout."""

    def __init__(self, timeout: float, task_id: str, worker: str | None) -> None:
        where = f" on {worker}" if worker else ""
        super().__init__(
            f"task {task_id} still running{where} after {timeout:g} s; "
            "it goes on without this command: look at the numbers later"
        )
        self.timeout = timeout
        self.task_id = task_id
        self.worker = worker


class TaskFailedError(ProducerError):
    """The task raised; ``invalid`` when the request itself was rejected."""

    def __init__(self, name: str, task_id: str, exc_type: str, message: str) -> None:
        self.invalid = exc_type in INVALID_REQUEST_ERRORS
        text = message if self.invalid else f"{exc_type}: {message}"
        super().__init__(f"{name} failed: {text}" if not self.invalid else text)
        self.name = name
        self.task_id = task_id
        self.exc_type = exc_type
        self.message = message


@dataclass(frozen=True)
class Reply:
    """A task's result and, when the backend keeps them, where it ran."""

    task_id: str
    result: Any
    worker: str | None
    queue: str | None
    seconds: float


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for publishing knm tasks with ``settings`` (the environment's by default)."""
    from workers.app import create_app as create_worker_app

    settings = settings or get_settings()
    app = create_worker_app(settings)
    backend = str(app.conf.result_backend or "")
    if backend.startswith(("redis://", "rediss://")):
        # Celery's default retries an unreachable Redis result backend for ~20 s; a producer
        # waiting for an answer should say so within a couple of seconds instead.
        options = dict(app.conf.result_backend_transport_options or {})
        options.setdefault("retry_policy", dict(_PRODUCER_RETRY_POLICY))
        app.conf.result_backend_transport_options = options
    return app


def send(
    name: str, payload: dict[str, Any], *, timeout: float, app: Celery | None = None
) -> AsyncResult[Any]:
    """Publish task ``name`` (kwargs ``payload``) on knm's queue; it expires after ``timeout``."""
    app = app or create_app()
    expires = datetime.now(UTC) + timedelta(seconds=timeout)
    try:
        return app.send_task(name, kwargs=payload, queue=DEFAULT_QUEUE, expires=expires)
    except Exception as exc:  # kombu, redis, or Celery's "retry limit exceeded" RuntimeError
        raise BrokerUnavailableError(
            f"cannot publish {name} to {maybe_sanitize_url(app.conf.broker_url)}: "
            f"{_one_line(exc) or type(exc).__name__}"
        ) from exc


def wait(result: AsyncResult[Any], name: str, *, timeout: float, forget: bool = True) -> Reply:
    """Wait up to ``timeout`` seconds for ``result``; raise a ``ProducerError`` if none comes.

    Waiting again on the same ``result`` after a ``NoWorkerError`` is fine (``knm demo`` does).
    """
    started = datetime.now(UTC)
    state: str | None
    try:
        value = result.get(timeout=timeout, propagate=False, interval=_POLL_S)
        state = str(result.state)
    except CeleryTimeoutError:
        _stop_waiting(result)
        state = _state(result)
        if state in (None, "PENDING", "RECEIVED"):
            raise NoWorkerError(timeout, result.id) from None
        raise StillRunningError(timeout, result.id, _attr(result, "worker")) from None
    except Exception as exc:  # the result backend went away
        _stop_waiting(result)
        raise BrokerUnavailableError(
            f"cannot read the result of {name}: {_one_line(exc) or type(exc).__name__}"
        ) from exc
    seconds = (datetime.now(UTC) - started).total_seconds()
    if state != "SUCCESS":
        exc_type, message = _failure(value, state or "FAILURE")
        raise TaskFailedError(name, result.id, exc_type, message)
    reply = Reply(
        task_id=result.id,
        result=value,
        worker=_attr(result, "worker"),
        queue=_attr(result, "queue"),
        seconds=seconds,
    )
    if forget:
        _forget(result)
    return reply


def call_task(
    name: str, payload: dict[str, Any], *, timeout: float, app: Celery | None = None
) -> Reply:
    """Publish task ``name`` and wait for it: the reply, or a ``ProducerError``."""
    result = send(name, payload, timeout=timeout, app=app)
    return wait(result, name, timeout=timeout)


def publish(
    op: Operation,
    request: NumbersRequest,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    app: Celery | None = None,
) -> AsyncResult[Any]:
    """Publish ``op`` on ``request`` (checked first: raises ``InvalidRequestError``).

    A request naming a carrier module no registered carrier owns is refused here: its work
    would wait on a queue no worker consumes.
    """
    requests.check(op, request)
    if (unknown := requests.unknown_carrier(default_registry(), request)) is not None:
        raise requests.InvalidRequestError(f"{unknown.error}: {unknown.message}")
    return send(task_name(op), request.to_payload(), timeout=timeout, app=app)


def call_reply(
    op: Operation,
    request: NumbersRequest,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    app: Celery | None = None,
) -> Reply:
    """Like ``call`` but with where the task ran and how long it took."""
    result = publish(op, request, timeout=timeout, app=app)
    return wait(result, task_name(op), timeout=timeout)


def call(
    op: Operation,
    request: NumbersRequest,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    app: Celery | None = None,
) -> dict[str, Any]:
    """Run ``op`` on ``request`` on a worker: ``{"succeeded": {...}, "failed": {...}}``."""
    value = call_reply(op, request, timeout, app=app).result
    if not isinstance(value, dict):
        raise ProducerError(f"{task_name(op)} returned {type(value).__name__}, not an object")
    return value


def search(
    query: SearchQuery, timeout: float = DEFAULT_TIMEOUT_S, *, app: Celery | None = None
) -> list[dict[str, Any]]:
    """Run a search on a worker: ``[{"number", "state", "carrier_module"}]``."""
    payload = query.model_dump(mode="json", exclude_none=True)
    value = call_task(SEARCH_TASK, payload, timeout=timeout, app=app).result
    if not isinstance(value, list):
        raise ProducerError(f"{SEARCH_TASK} returned {type(value).__name__}, not a list")
    return value


# ------------------------------------------------------------------------------------ helpers
def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _state(result: AsyncResult[Any]) -> str | None:
    try:
        return str(result.state)
    except Exception:  # the backend is gone too: treat as "nobody answered"
        return None


def _attr(result: AsyncResult[Any], name: str) -> str | None:
    """``result.worker`` / ``result.queue`` (``result_extended`` backends), else None."""
    try:
        value = getattr(result, name, None)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


def _failure(value: Any, state: str) -> tuple[str, str]:
    if isinstance(value, BaseException):
        return type(value).__name__, _one_line(value) or type(value).__name__
    return state, _one_line(value) if value is not None else state


def _stop_waiting(result: AsyncResult[Any]) -> None:
    """Unsubscribe from ``result`` now, not in ``AsyncResult.__del__`` at interpreter exit.

    With the Redis backend a result still pending when the process exits is unsubscribed from
    its ``__del__`` during shutdown, which prints an "Exception ignored" traceback.
    """
    try:
        getattr(result.backend, "remove_pending_result", lambda _: None)(result)
    except Exception:  # best effort
        return


def _forget(result: AsyncResult[Any]) -> None:
    """Drop the stored result: the caller has it, nobody else will ask."""
    try:
        result.forget()
    except Exception:  # best effort: results expire anyway
        return


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "BrokerUnavailableError",
    "NoWorkerError",
    "ProducerError",
    "Reply",
    "StillRunningError",
    "TaskFailedError",
    "call",
    "call_reply",
    "call_task",
    "create_app",
    "publish",
    "search",
    "send",
    "task_name",
    "wait",
]


JOB_CHUNK_TASK: Final[str] = "knm.jobs.chunk"


def submit_job(job_id: str, chunks: int, app: Celery | None = None) -> int:
    """Publish one ``knm.jobs.chunk`` message per chunk of a stored job; returns how many.

    Chunks are idempotent, so publishing a job twice (say, after the producer died half way)
    does no harm: chunks already counted do nothing.
    """
    app = app or create_app()
    with app.producer_or_acquire() as producer:
        for chunk in range(chunks):
            app.send_task(
                JOB_CHUNK_TASK,
                kwargs={"job_id": job_id, "chunk": chunk},
                queue=DEFAULT_QUEUE,
                producer=producer,
                ignore_result=True,
            )
    return chunks
