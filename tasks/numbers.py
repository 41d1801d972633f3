"""Tasks on numbers: ``knm.numbers.<operation>``, ``knm.carrier.run`` and ``knm.search``.

A ``knm.numbers.*`` task validates its payload, then hands each carrier's share of the numbers to
``knm.carrier.run`` on that carrier's queue (``carrier.<pvt_carrier_module>``): the shares run
one after another as a chain that replaces the task, so the caller's result is the merged result
of every share. Each share records its outcome before its message is acknowledged; a redelivered
share returns the recorded outcome, and numbers already written by the request are not redone.

Before anything is routed, a request naming a carrier module is checked (a registered module,
named by an admin), and its request id is claimed for it: an id that belongs to another request
fails every number with 409 ``request_id_conflict`` and runs nothing. Nothing is ever published
to the queue of a module no registered carrier owns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Signature, Task, chain
from celery.exceptions import Ignore, Retry
from pymongo.errors import ConnectionFailure

from carriers.retry import CircuitOpenError, backoff_delay
from config.settings import get_settings
from knm.domain import convert, errors
from knm.domain.errors import KnmError
from knm.services import numbers_requests as requests
from knm.services.events import events_for
from knm.services.facade import InputError, Knm
from knm.services.numbers_requests import InvalidRequestError, NumbersRequest, Operation
from knm.services.search import SearchQuery
from knm.store.outcomes import OutcomeStore, other_scope
from tasks.events import publish_events
from tasks.runtime import get_knm, store_unreachable
from workers.app import app
from workers.celery_config import carrier_queue

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


def _route(
    task: Task[Any, Any], op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run ``op`` on each carrier's queue; the caller's result is the last share's result.

    Shares already recorded for this request (a redelivered or duplicated message) are not
    routed again: their recorded results are merged with those of the numbers still to do. One
    carrier left (the usual case): the share is published under this task's id and this task
    ends without a result of its own, so the share's result is the caller's. Several carriers:
    a chain of shares, each on its own queue, replaces this task.
    """
    request = _parse(op, args, kwargs)
    task_id = task.request.id
    request_id = request.request_id or task_id
    knm = get_knm()
    if (refusal := requests.carrier_refusal(knm, request)) is not None:
        return _refused(knm, request, refusal)
    recorded = knm.outcomes.for_request(request_id) if request_id else []
    if request_id:
        conflict = _claim(knm, op, request, request_id, recorded, new=not recorded)
        if conflict is not None:
            return _refused(knm, request, errors.request_id_conflict(conflict))
    done = {number for part in recorded for number in part.get("numbers", [])}
    previous = requests.merge_results([p["result"] for p in recorded]) if recorded else None
    remaining = [n for n in request.numbers if n not in done]
    if not remaining:
        return previous
    routes = requests.carrier_routes(knm, op, request.for_numbers(remaining))
    links: list[Signature[Any]] = []
    for module, numbers in sorted(routes.items(), key=lambda r: r[0] or ""):
        part = request.for_numbers(numbers).to_payload()
        queue = carrier_queue(module)
        if not links:
            sig = run_on_carrier.si(previous, op.value, part, request_id, module)
        else:
            sig = run_on_carrier.s(op.value, part, request_id, module)
        links.append(sig.set(queue=queue))
    if task.request.is_eager or task.request.called_directly:
        return chain(*links).apply().get()
    if len(links) == 1:
        links[0].apply_async(task_id=task_id)
        raise Ignore()
    raise task.replace(chain(*links))


@app.task(name="knm.carrier.run", bind=True, base=KnmTask, acks_late=True)
def run_on_carrier(
    self: Task[Any, Any],
    previous: dict[str, Any] | None,
    operation: str,
    payload: dict[str, Any],
    request_id: str,
    module: str | None,
    transient_attempts: int = 0,
) -> dict[str, Any]:
    """One carrier's share of a request; merges the shares before it in the chain.

    Its outcome is recorded (with the inputs it covered) before the message is acknowledged,
    so a rerun returns it instead of running again. A share whose numbers failed with a
    provider's transient error is re-queued with backoff (``transient_attempts`` counts those
    retries) and dead-lettered when they are used up; an open circuit breaker re-queues it
    for when the breaker lets calls through again, without spending an attempt.
    """
    op = Operation(operation)
    request = requests.parse(op, payload)
    knm = get_knm()
    part = OutcomeStore.part_key(module, request.numbers)
    recorded = knm.outcomes.get_record(request_id, part)
    conflict = _claim(knm, op, request, request_id, [recorded] if recorded else [])
    if conflict is not None:
        result = _refused(knm, request, errors.request_id_conflict(conflict))
    elif recorded is None:
        before = _stored_before(knm, request)
        try:
            batch = requests.run(knm, op, request, request_id)
        except CircuitOpenError as exc:
            raise self.retry(
                countdown=max(exc.retry_in_s, 0.5),
                max_retries=UNBOUNDED_RETRIES,
                kwargs={"transient_attempts": transient_attempts},
            ) from None
        result = requests.result_json(batch)
        if request.dry_run:
            return requests.merge_results([previous, result] if previous else [result])
        retryable = sorted(key for key, error in batch.failed.items() if error.retryable)
        if retryable:
            settings = get_settings()
            if transient_attempts < settings.task_max_retries:
                raise self.retry(
                    countdown=_requeue_delay(transient_attempts),
                    max_retries=UNBOUNDED_RETRIES,
                    kwargs={"transient_attempts": transient_attempts + 1},
                ) from None
            knm.dead_letters.put(
                request_id,
                part,
                op.value,
                module,
                payload,
                result,
                f"{len(retryable)} numbers still failing transiently: {', '.join(retryable)}",
                transient_attempts + 1,
            )
        events = events_for(request_id, op.value, result, before, _routes_of(module, request))
        # events first, then the outcome: a crash in between reruns the share (harmlessly)
        # and publishes again, so events go out at least once
        publish_events(events, request.reply_to)
        knm.outcomes.put(
            request_id,
            part,
            op.value,
            result,
            numbers=request.numbers,
            events=[e.model_dump(mode="json") for e in events],
            scope=requests.request_scope(op, request),
        )
    else:
        result = dict(recorded["result"])
    return requests.merge_results([previous, result] if previous else [result])


def _claim(
    knm: Knm,
    op: Operation,
    request: NumbersRequest,
    request_id: str,
    recorded: list[dict[str, Any]],
    *,
    new: bool = False,
) -> str | None:
    """Claim ``request_id`` for this request; the cause of a conflict when it is another's."""
    scope = requests.request_scope(op, request)
    conflict = knm.request_keys.claim(
        request_id,
        scope=scope,
        auth_by=request.auth_by,
        operation=op.value,
        numbers=request.numbers,
        record=not request.dry_run,
        new=new,
    )
    return conflict or other_scope(recorded, request_id, scope)


def _refused(knm: Knm, request: NumbersRequest, error: KnmError) -> dict[str, Any]:
    """The result of a request refused as a whole: every input fails with ``error``."""
    return requests.result_json(requests.refused(knm.settings, request.numbers, error))


#: Celery's retry limit for shares: knm counts transient retries itself (``transient_attempts``).
UNBOUNDED_RETRIES = 1_000_000


def _requeue_delay(transient_attempts: int) -> float:
    """How long a share re-queued after transient failures waits: ``carriers.retry``'s backoff
    from ``carrier_retry_base_s``, capped at ``carrier_retry_max_s``, at least 0.1 s."""
    settings = get_settings()
    return backoff_delay(
        transient_attempts + 1,
        settings.carrier_retry_base_s,
        settings.carrier_retry_max_s,
        min_s=0.1,
    )


def _stored_before(knm: Knm, request: NumbersRequest) -> dict[str, dict[str, Any]]:
    """The documents as they were before the share ran, by normalized number and by input."""
    settings = knm.settings
    normalized = {
        raw: convert.normalize(raw, settings.e164_converters)
        for raw in request.numbers
        if convert.is_reconcilable(raw, settings.reconcile_regex)
    }
    docs = knm.store.find_numbers(list(dict.fromkeys(normalized.values())))
    before: dict[str, dict[str, Any]] = dict(docs)
    for raw, number in normalized.items():
        if number in docs:
            before[raw] = docs[number]
    return before


def _routes_of(module: str | None, request: NumbersRequest) -> dict[str, str | None]:
    return dict.fromkeys(request.numbers, module)


def _make_routed(op: Operation) -> Task[Any, Any]:
    @app.task(name=f"knm.numbers.{op.value}", bind=True, base=KnmTask)
    def routed(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Any:
        return _route(self, op, args, kwargs)

    routed.__doc__ = f"knm.numbers.{op.value}: run on the numbers' carrier queues."
    return routed


@app.task(name="knm.numbers.get", bind=True, base=KnmTask)
def get(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """knm.numbers.get: a read, no carrier involved: runs where received, nothing to remember."""
    return requests.execute(get_knm(), Operation.GET, _parse(Operation.GET, args, kwargs))


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
