"""One dispatch path: every piece of work reaches its numbers' carrier the same way.

A batch of work (a request on numbers, a CSV chunk's rows, a sweep's side effects) is grouped by
the carrier module stored on each number (``pvt_carrier_module``). A share whose carrier makes
no provider call (``CarrierKind.LOCAL``), or whose carrier owns the queue the work arrived on,
runs here at once; any other share is handed to its carrier's queue (``carrier.<module>``),
where the carrier's worker runs it behind the shared rate limit and breaker.

This module owns what happens to a share: its recorded outcome (a redelivered share returns it),
transient retries with backoff and then a dead letter, a re-queue while the carrier's breaker is
open (no attempt spent), and its events. It knows no Celery: it talks to the broker through
``Broker``, two methods that ``workers.dispatch_broker`` implements (and unit tests fake), and
says what to do with the message it was called for by returning ``Done``, ``Forwarded`` or
``Requeue``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from carriers.base import CarrierKind, SearchResult, queue_name
from carriers.retry import CircuitOpenError, backoff_delay
from config.settings import get_settings
from knm.domain import convert, errors
from knm.domain.accounts import SYSTEM
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.services import numbers_requests as requests
from knm.services.events import NumberEvent, events_for
from knm.services.facade import Knm
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.store import read_once, share_reads
from knm.store.outcomes import UNREAD, OutcomeStore, other_scope
from knm.store.share_reads import ShareRead

#: The task that runs one carrier's share of a request (on ``carrier.<module>``).
CARRIER_RUN_TASK: Final[str] = "knm.carrier.run"
#: knm's own queue: work that names no carrier.
DEFAULT_QUEUE: Final[str] = "knm"
#: The shortest wait of a share re-queued while its carrier's breaker is open.
BREAKER_MIN_WAIT_S: Final[float] = 0.5


class Broker(Protocol):
    """What dispatch needs of a broker: publish a task message, publish outcome events."""

    def publish(
        self,
        task: str,
        kwargs: dict[str, Any],
        queue: str,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> None:
        """Publish task ``task`` with ``kwargs`` to ``queue`` (under ``task_id``: the caller
        waits for that id's result), to run after ``countdown`` seconds."""
        ...

    def emit(self, events: Sequence[NumberEvent], reply_to: str | None) -> None:
        """Publish outcome events to ``knm.events`` (and ``reply_to`` when named)."""
        ...


@dataclass(frozen=True)
class Done:
    """The work is done here: ``result`` is the caller's."""

    result: Any


@dataclass(frozen=True)
class Forwarded:
    """The rest was published under the caller's task id: this message has no result of its own."""

    queue: str


@dataclass(frozen=True)
class Requeue:
    """Run this message again after ``countdown`` s with ``transient_attempts`` spent."""

    countdown: float
    transient_attempts: int
    breaker: bool = False


Decision = Done | Forwarded | Requeue


# ================================================================================ carriers
def queue_of(module: str | None) -> str:
    """The queue of a carrier module's work; no module: knm's queue."""
    return queue_name(module) if module else DEFAULT_QUEUE


def module_of_queue(queue: str | None) -> str | None:
    """The carrier module whose queue ``queue`` is (None: not a carrier queue)."""
    prefix = queue_name("")
    if queue and queue.startswith(prefix):
        return queue[len(prefix) :] or None
    return None


def runs_here(knm: Knm, module: str | None, here: str | None) -> bool:
    """Whether a share on ``module`` runs where the work was received (on ``here``'s queue).

    Shares of no carrier (inputs that fail the same anywhere), of a carrier making no provider
    call (``CarrierKind.LOCAL``), and of the carrier whose queue this is, run here.
    """
    if module is None or module == here:
        return True
    cls = knm.numbers.carriers.carrier_class(module)
    return cls is None or cls.kind == CarrierKind.LOCAL


def requeue_delay(transient_attempts: int) -> float:
    """How long a share re-queued after transient failures waits: ``carriers.retry``'s backoff
    from ``carrier_retry_base_s``, capped at ``carrier_retry_max_s``, at least 0.1 s."""
    settings = get_settings()
    return backoff_delay(
        transient_attempts + 1,
        settings.carrier_retry_base_s,
        settings.carrier_retry_max_s,
        min_s=0.1,
    )


# ================================================================================ requests
@dataclass(frozen=True)
class Share:
    """One carrier's share of a request, still to run (on its queue)."""

    module: str | None
    payload: dict[str, Any]
    transient_attempts: int = 0
    countdown: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"module": self.module, "payload": self.payload}
        if self.transient_attempts:
            data["transient_attempts"] = self.transient_attempts
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Share:
        if not isinstance(data, Mapping) or not isinstance(data.get("payload"), dict):
            raise requests.InvalidRequestError("then: each share must be an object with payload")
        module = data.get("module")
        if module is not None and not isinstance(module, str):
            raise requests.InvalidRequestError("then: a share's module must be a string")
        attempts = data.get("transient_attempts", 0)
        if not isinstance(attempts, int) or attempts < 0:
            raise requests.InvalidRequestError("then: transient_attempts must be an integer >= 0")
        return cls(module, dict(data["payload"]), attempts)


def route_request(
    knm: Knm,
    broker: Broker,
    op: Operation,
    request: NumbersRequest,
    *,
    task_id: str,
    queue: str | None,
    inline_all: bool = False,
) -> Decision:
    """``knm.numbers.<op>`` received on ``queue``: run the shares that belong here, hand the
    others to their carriers' queues (chained under ``task_id``, so the caller gets one
    merged result).

    Before anything runs, a request naming a carrier module is checked, and its request id
    is claimed: an id that belongs to another request fails every number with 409
    ``request_id_conflict`` and runs nothing. Shares already recorded for this request (a
    redelivery) are not run again; their recorded results are merged in.
    """
    request_id = request.request_id or task_id
    if (refusal := requests.carrier_refusal(knm, request)) is not None:
        return Done(_refused(knm, request, refusal))
    scope = requests.request_scope(op, request)
    conflict, fresh = knm.request_keys.claim_fresh(
        request_id,
        scope=scope,
        auth_by=request.auth_by,
        operation=op.value,
        numbers=request.numbers,
        record=not request.dry_run,
        new=True,
    )
    # a fresh claim: nothing can be recorded under this id yet (outcomes follow the claim)
    recorded = [] if fresh else knm.outcomes.for_request(request_id)
    conflict = conflict or other_scope(recorded, request_id, scope)
    if conflict is not None:
        return Done(_refused(knm, request, errors.request_id_conflict(conflict)))
    done = {number for part in recorded for number in part.get("numbers", [])}
    results = [requests.merge_results([p["result"] for p in recorded])] if recorded else []
    remaining = [n for n in request.numbers if n not in done]
    if not remaining:
        return Done(results[0] if results else requests.merge_results([]))
    here = module_of_queue(queue)
    pending: list[Share] = []
    with read_once.reuse_reads():
        docs: dict[str, dict[str, Any]] = {}
        asked = _restricted(request, remaining)
        _read_share(knm, op, asked)  # routing and the operation take what it read
        routes = requests.carrier_routes(knm, op, asked, docs)
        for module, numbers in sorted(routes.items(), key=lambda r: r[0] or ""):
            part = _restricted(asked, numbers)
            if not (inline_all or runs_here(knm, module, here)):
                pending.append(Share(module, part.to_payload()))
                continue
            _remember(knm, part, docs)
            outcome = run_share(
                knm, broker, op, part, request_id, module, claimed=fresh, before=docs, scope=scope
            )
            if isinstance(outcome, Requeue):  # goes on as a share message, later
                share = Share(module, part.to_payload(), outcome.transient_attempts)
                pending.append(_delayed(share, outcome.countdown))
            else:
                results.append(outcome)
    merged = requests.merge_results(results)
    if not pending:
        return Done(merged)
    first, rest = pending[0], pending[1:]
    return _forward(broker, op, request_id, merged if results else None, first, rest, task_id)


def read_numbers(knm: Knm, request: NumbersRequest) -> Batch:
    """``get``: what the requester may see of the numbers. The numbers, their owners' accounts
    and resellers, the requester's account and the system config come in one query, as for a
    share (a read changes nothing: no claim, no outcome, no events, no carrier queue)."""
    with read_once.reuse_reads():
        _read_share(knm, Operation.GET, request)
        return requests.run(knm, Operation.GET, request)


def run_carrier_share(
    knm: Knm,
    broker: Broker,
    op: Operation,
    payload: dict[str, Any],
    request_id: str,
    module: str | None,
    *,
    previous: dict[str, Any] | None,
    then: list[Share],
    transient_attempts: int,
    task_id: str,
) -> Decision:
    """``knm.carrier.run``: one carrier's share, merged with the shares before it; the next
    share of the chain (``then``) is published under the caller's ``task_id``."""
    request = requests.parse(op, payload)
    with read_once.reuse_reads():
        outcome = run_share(
            knm, broker, op, request, request_id, module, transient_attempts=transient_attempts
        )
    if isinstance(outcome, Requeue):
        return outcome
    merged = requests.merge_results([previous, outcome] if previous else [outcome])
    if not then:
        return Done(merged)
    return _forward(broker, op, request_id, merged, then[0], then[1:], task_id)


def run_share(
    knm: Knm,
    broker: Broker,
    op: Operation,
    request: NumbersRequest,
    request_id: str,
    module: str | None,
    *,
    transient_attempts: int = 0,
    claimed: bool = False,
    before: Mapping[str, Mapping[str, Any]] | None = None,
    scope: str | None = None,
) -> dict[str, Any] | Requeue:
    """Run one carrier's share in this process: its result, or when to run it again.

    Its outcome is recorded (with the inputs it covered) after its events are published and
    before its message is acknowledged, so a rerun returns it instead of running again.
    ``claimed``: the caller claimed the request id just now (nothing recorded, no conflict).
    ``before``: the documents as read just before (for the events), when the caller has them.
    """
    part = OutcomeStore.part_key(module, request.numbers)
    if not claimed:
        read = _read_share(knm, op, request, (request_id, part)) if before is None else None
        if read is not None:  # one query: the claim, the outcome and what the share reads
            before, recorded, claim = read.numbers, read.outcome, read.claim
        else:
            recorded, claim = knm.outcomes.get_record(request_id, part), UNREAD
        conflict = _claim(knm, op, request, request_id, [recorded] if recorded else [], claim)
        if conflict is not None:
            return _refused(knm, request, errors.request_id_conflict(conflict))
        if recorded is not None:
            return dict(recorded["result"])
    if before is None:
        before = _stored_before(knm, request)
    before_by_input = _by_input(knm, request, before)
    try:
        batch = requests.run(knm, op, request, request_id)
    except CircuitOpenError as exc:
        return Requeue(max(exc.retry_in_s, BREAKER_MIN_WAIT_S), transient_attempts, breaker=True)
    result = requests.result_json(batch)
    if request.dry_run:
        return result
    retryable = sorted(key for key, error in batch.failed.items() if error.retryable)
    if retryable:
        if transient_attempts < get_settings().task_max_retries:
            return Requeue(requeue_delay(transient_attempts), transient_attempts + 1)
        knm.dead_letters.put(
            request_id,
            part,
            op.value,
            module,
            request.to_payload(),
            result,
            f"{len(retryable)} numbers still failing transiently: {', '.join(retryable)}",
            transient_attempts + 1,
        )
    events = events_for(request_id, op.value, result, before_by_input, _routes_of(module, request))
    # events first, then the outcome: a crash in between reruns the share (harmlessly) and
    # publishes again, so events go out at least once
    broker.emit(events, request.reply_to)
    knm.outcomes.put(
        request_id,
        part,
        op.value,
        result,
        numbers=request.numbers,
        events=[e.model_dump(mode="json") for e in events],
        scope=scope or requests.request_scope(op, request),
    )
    return result


def _forward(
    broker: Broker,
    op: Operation,
    request_id: str,
    previous: dict[str, Any] | None,
    share: Share,
    rest: list[Share],
    task_id: str,
) -> Forwarded:
    """Publish ``share`` (then ``rest``, one after another) under the caller's task id."""
    queue = queue_of(share.module)
    kwargs: dict[str, Any] = {
        "previous": previous,
        "operation": op.value,
        "payload": share.payload,
        "request_id": request_id,
        "module": share.module,
        "transient_attempts": share.transient_attempts,
    }
    if rest:
        kwargs["then"] = [s.to_json() for s in rest]
    broker.publish(CARRIER_RUN_TASK, kwargs, queue, task_id=task_id, countdown=share.countdown)
    return Forwarded(queue)


def _restricted(request: NumbersRequest, numbers: list[str]) -> NumbersRequest:
    """The request for some of its numbers (itself when they are all of them)."""
    return request if numbers == request.numbers else request.for_numbers(numbers)


def _delayed(share: Share, countdown: float) -> Share:
    return Share(share.module, share.payload, share.transient_attempts, countdown)


def _claim(
    knm: Knm,
    op: Operation,
    request: NumbersRequest,
    request_id: str,
    recorded: list[dict[str, Any]],
    known: Any = UNREAD,
) -> str | None:
    """Claim ``request_id`` for this request; the cause of a conflict when it is another's.

    ``known``: the claim as just read (None: there is none), when the caller read it."""
    scope = requests.request_scope(op, request)
    conflict = knm.request_keys.claim(
        request_id,
        scope=scope,
        auth_by=request.auth_by,
        operation=op.value,
        numbers=request.numbers,
        record=not request.dry_run,
        known=known,
    )
    return conflict or other_scope(recorded, request_id, scope)


def _refused(knm: Knm, request: NumbersRequest, error: KnmError) -> dict[str, Any]:
    """The result of a request refused as a whole: every input fails with ``error``."""
    return requests.result_json(requests.refused(knm.settings, request.numbers, error))


def _normalized(knm: Knm, request: NumbersRequest) -> dict[str, str]:
    settings = knm.settings
    return {
        raw: convert.normalize(raw, settings.e164_converters)
        for raw in request.numbers
        if convert.is_reconcilable(raw, settings.reconcile_regex)
    }


def _remember(knm: Knm, request: NumbersRequest, docs: Mapping[str, dict[str, Any]]) -> None:
    """Hand the share's documents (read to route it) to the operation about to run."""
    keys = list(dict.fromkeys(_normalized(knm, request).values()))
    read_once.remember("numbers", keys, {k: docs[k] for k in keys if k in docs})


def _read_share(
    knm: Knm, op: Operation, request: NumbersRequest, outcome: tuple[str, str] | None = None
) -> ShareRead | None:
    """Read what the share (and the operation it runs) reads, in one query, remembered for the
    steps that follow (``read_once``): its numbers, the search results of the ones not stored
    (activate), the accounts, the system config; with ``outcome`` (request id, part) also the
    request id's claim and the part's recorded outcome. None: too many numbers for one query
    (each step reads its own).
    """
    keys = list(dict.fromkeys(_normalized(knm, request).values()))
    if not share_reads.can_read(knm.store, keys):
        return None
    accounts = {a for a in (request.auth_by, request.account) if a and a != SYSTEM}
    discovery = op == Operation.ACTIVATE
    read = share_reads.read_share(
        knm.store,
        keys,
        accounts,
        discovery=discovery,
        claim=(knm.request_keys.collection.name, outcome[0]) if outcome else None,
        outcome=((knm.outcomes.collection.name, OutcomeStore.key(*outcome)) if outcome else None),
    )
    if discovery:
        sure = [k for k in keys if k not in read.numbers and k not in read.unsure]
        hits = {k: SearchResult.from_json(read.discovery[k]) for k in sure if k in read.discovery}
        read_once.remember("discovered", sure, hits)
    return read


def _stored_before(knm: Knm, request: NumbersRequest) -> dict[str, dict[str, Any]]:
    """The share's documents as they are before it runs (and for the operation, once)."""
    keys = list(dict.fromkeys(_normalized(knm, request).values()))
    docs = knm.store.find_numbers(keys)
    read_once.remember("numbers", keys, docs)
    return docs


def _by_input(
    knm: Knm, request: NumbersRequest, docs: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The documents before the share ran, by E.164 and by input, copied (the operation
    may change the ones it was handed)."""
    normalized = _normalized(knm, request)
    before: dict[str, Mapping[str, Any]] = {}
    for raw, number in normalized.items():
        if number in docs:
            before[number] = before[raw] = dict(docs[number])
    return before


def _routes_of(module: str | None, request: NumbersRequest) -> dict[str, str | None]:
    return dict.fromkeys(request.numbers, module)
