"""A guard around Celery's task strategy: a malformed message fails, the worker lives on.

Celery builds a request from each message before any task code runs. A message whose body or
headers have the wrong shape makes that step raise, which stops the worker; with ``acks_late``
the message then comes back and stops the next worker too. The guard checks a message's shape
first, records a malformed one as a failed task (under the id it names) and drops it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.worker.strategy import default

from knm.services.numbers_requests import InvalidRequestError
from workers.messages import message_id

logger = logging.getLogger(__name__)


def malformed(message: Any) -> str | None:
    """What is wrong with a protocol-2 task message's shape, or None when it looks sound."""
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None  # protocol 1 or not a task message: Celery's own checks apply
    if not isinstance(headers.get("id"), str) or not headers["id"]:
        return "the message has no task id"
    limits = headers.get("timelimit")
    if limits is not None and not (isinstance(limits, list | tuple) and len(limits) == 2):
        return "the timelimit header is not a [soft, hard] pair"
    try:
        body = message.decode()
    except Exception as exc:
        return f"the body cannot be decoded: {exc}"
    if not (isinstance(body, list | tuple) and len(body) == 3):
        return "the body is not [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        return (
            "positional arguments are not accepted: args must be an empty list, "
            f"not {type(args).__name__}"
        )
    if not isinstance(kwargs, dict):
        return "the task keyword arguments are not a mapping"
    if embed is not None and not isinstance(embed, dict):
        return "the embedded options are not a mapping"
    return None


def _refuse(task: Task[Any, Any], message: Any, problem: str) -> None:
    """Record the task as failed (when it names an id) and drop its message."""
    task_id = message_id(message)
    logger.error("dropped a malformed %s message (id %r): %s", task.name, task_id, problem)
    if task_id is not None:
        with contextlib.suppress(Exception):
            task.backend.mark_as_failure(
                task_id, InvalidRequestError(f"malformed task message: {problem}")
            )
    with contextlib.suppress(Exception):
        message.reject(requeue=False)


def guarded(task: Task[Any, Any], app: Celery, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """Celery's default strategy, with malformed messages failed and dropped."""
    handler = default(task, app, consumer, **kwargs)

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kw: Any) -> Any:
        problem = malformed(message)
        if problem is not None:
            _refuse(task, message, problem)
            return None
        try:
            return handler(message, body, ack, reject, callbacks, **kw)
        except Exception as exc:
            _refuse(task, message, repr(exc))
            return None

    return handle
