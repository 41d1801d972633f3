"""Tasks on numbers: ``knm.numbers.<operation>``, ``knm.carrier.run`` and ``knm.search``.

Thin adapters: each parses its message and hands it to ``knm.services.dispatch``, which runs
the shares of the numbers that belong where the message was received (local carriers, and the
carrier whose queue this is) and hands the others to their carriers' queues under the caller's
task id, so the caller's result is the merged result of every share. A producer that knows a
number's module (a search result, a stored document) may publish ``knm.numbers.<op>`` straight
to ``carrier.<module>``: it is served there in one hop, and only numbers whose stored module is
another carrier's are forwarded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry
from pymongo.errors import ConnectionFailure

from carriers.retry import backoff_delay
from config.settings import get_settings
from knm.services import dispatch
from knm.services import numbers_requests as requests
from knm.services.dispatch import Decision, Done, Forwarded, Share
from knm.services.facade import InputError
from knm.services.numbers_requests import InvalidRequestError, NumbersRequest, Operation
from knm.services.search import SearchQuery
from tasks.runtime import get_knm, store_unreachable
from workers import dispatch_broker
from workers.app import app

#: Failures of the store or the network that a retry can cure.
TRANSIENT = (ConnectionFailure,)
#: Celery's automatic retries after a ``TRANSIENT`` failure wait ``carriers.retry``'s backoff
#: from 1 s, doubling, capped at 60 s.
STORE_RETRY_BASE_S = 1.0
STORE_RETRY_MAX_S = 60.0


def _payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Messages carry keyword arguments only; positional ones are a producer bug."""
    if args:
        raise InvalidRequestError(
            f"positional arguments are not accepted ({len(args)} given); send kwargs"
        )
    return kwargs


def _parse(op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NumbersRequest:
    return requests.parse(op, _payload(args, kwargs))


class KnmTask(Task[Any, Any]):
    """Retries transient store failures with backoff and jitter; bad payloads fail at once."""

    Strategy = "tasks.strategy:guarded"
    autoretry_for = TRANSIENT
    throws = (InvalidRequestError,)
    #: Celery formats every result for its "succeeded" log line, up to this many characters,
    #: whatever the log level; a result holds whole documents, so keep the line short.
    resultrepr_maxsize = 200

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return get_settings().task_max_retries

    def retry(
        self,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """A retry that names no time (Celery's automatic one after a ``TRANSIENT`` failure)
        waits ``carriers.retry``'s backoff for this retry number."""
        if countdown is None and eta is None:
            countdown = backoff_delay(
                self.request.retries + 1, STORE_RETRY_BASE_S, STORE_RETRY_MAX_S
            )
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def on_retry(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        """The store was unreachable: the retry finds it again (the embedded one restarted)."""
        if isinstance(exc, ConnectionFailure):
            store_unreachable()


def arrived_on(task: Task[Any, Any]) -> str | None:
    """The queue a message was received on (its routing key), when the broker says."""
    info = task.request.delivery_info or {}
    key = info.get("routing_key")
    return key if isinstance(key, str) and key else None


def _inline(task: Task[Any, Any]) -> bool:
    """Run in the caller's process (eager, or called directly): every share runs here."""
    return bool(task.request.is_eager or task.request.called_directly)


def apply_decision(task: Task[Any, Any], decision: Decision) -> Any:
    """What dispatch decided, in Celery's terms: a result, no result of this message's own
    (the work went on under the caller's id), or a retry of this message."""
    if isinstance(decision, Done):
        return decision.result
    if isinstance(decision, Forwarded):
        # the share published under this id answers the caller: store nothing here (no
        # exception, so Celery formats no traceback)
        task.request.ignore_result = True
        return None
    kwargs = {**(task.request.kwargs or {}), "transient_attempts": decision.transient_attempts}
    raise task.retry(
        countdown=decision.countdown, max_retries=UNBOUNDED_RETRIES, kwargs=kwargs
    ) from None


def _route(
    task: Task[Any, Any], op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``knm.numbers.<op>``: dispatch the request from the queue it arrived on."""
    request = _parse(op, args, kwargs)
    decision = dispatch.route_request(
        get_knm(),
        dispatch_broker.for_app(app),
        op,
        request,
        task_id=str(task.request.id),
        queue=arrived_on(task),
        inline_all=_inline(task),
    )
    return apply_decision(task, decision)


@app.task(name="knm.carrier.run", bind=True, base=KnmTask, acks_late=True)
def run_on_carrier(
    self: Task[Any, Any],
    previous: dict[str, Any] | None,
    operation: str,
    payload: dict[str, Any],
    request_id: str,
    module: str | None,
    transient_attempts: int = 0,
    then: list[dict[str, Any]] | None = None,
) -> Any:
    """One carrier's share of a request; merges the shares before it (``previous``) and
    publishes the next (``then``, optional) under the caller's task id.

    Its outcome is recorded (with the inputs it covered) before the message is acknowledged,
    so a rerun returns it instead of running again. A share whose numbers failed with a
    provider's transient error is re-queued with backoff (``transient_attempts`` counts those
    retries) and dead-lettered when they are used up; an open circuit breaker re-queues it
    for when the breaker lets calls through again, without spending an attempt.
    """
    try:
        op = Operation(operation)
    except ValueError:
        raise InvalidRequestError(f"unknown operation {operation!r}") from None
    shares = [Share.from_json(s) for s in then or []]
    decision = dispatch.run_carrier_share(
        get_knm(),
        dispatch_broker.for_app(app),
        op,
        payload,
        request_id,
        module,
        previous=previous,
        then=shares,
        transient_attempts=transient_attempts,
        task_id=str(self.request.id),
    )
    return apply_decision(self, decision)


#: Celery's retry limit for shares: knm counts transient retries itself (``transient_attempts``).
UNBOUNDED_RETRIES = 1_000_000
#: How long a share re-queued after transient failures waits (``dispatch.requeue_delay``).
_requeue_delay = dispatch.requeue_delay


def _make_routed(op: Operation) -> Task[Any, Any]:
    @app.task(name=f"knm.numbers.{op.value}", bind=True, base=KnmTask)
    def routed(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Any:
        return _route(self, op, args, kwargs)

    routed.__doc__ = f"knm.numbers.{op.value}: run on the numbers' carrier queues."
    return routed


@app.task(name="knm.numbers.get", bind=True, base=KnmTask)
def get(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """knm.numbers.get: a read, no carrier involved: runs where received, nothing to remember."""
    request = _parse(Operation.GET, args, kwargs)
    return requests.result_json(dispatch.read_numbers(get_knm(), request))


create = _make_routed(Operation.CREATE)
activate = _make_routed(Operation.ACTIVATE)
reserve = _make_routed(Operation.RESERVE)
release = _make_routed(Operation.RELEASE)
delete = _make_routed(Operation.DELETE)
update = _make_routed(Operation.UPDATE)


@app.task(name="knm.search", bind=True, base=KnmTask)
def search(self: Task[Any, Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Search numbers; returns ``[{"number", "state", "carrier_module"}]`` like the CLI."""
    payload = _payload(args, kwargs)
    try:
        query = SearchQuery.model_validate(payload)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid search request: {exc}") from None
    try:
        results = get_knm().search(query)
    except InputError as exc:
        raise InvalidRequestError(str(exc)) from None
    return [
        {"number": r.number, "state": r.state.value, "carrier_module": r.carrier_module}
        for r in results
    ]


__all__ = ["activate", "create", "delete", "get", "release", "reserve", "search", "update"]
