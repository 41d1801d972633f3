"""Writes through the API: publish the task other services send, wait a bounded time.

A write is ``knm.numbers.<op>`` with the same payload as ``knm numbers ... --via-broker``
(``workers.producer``); its request id is the ``X-Request-Id`` of the HTTP request, so the same
header twice has one effect and returns the first outcome. The API waits up to ``api_wait_s`` for
the worker's result and answers with it; a request still running then (or sent with
``?async=true``) is answered 202 with its request id, and ``GET /v2/requests/{id}`` tells its
outcome later. Reads run in this process against the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pymongo.errors import DuplicateKeyError

from knm.api import envelope
from knm.api.auth import Requester
from knm.api.envelope import ApiError
from knm.domain.number import PhoneNumber
from knm.services import numbers_requests as requests
from knm.services.numbers_requests import InvalidRequestError, NumbersRequest, Operation

#: Where the API remembers the requests it answered 202 for: who sent them (so only they read
#: the outcome), which operation.
ACCEPTED: Final[str] = "api_requests"
_DATES: Final[tuple[str, ...]] = ("pvt_created", "pvt_modified")


@dataclass(frozen=True)
class Outcome:
    """A write's answer: the worker's result, or ``None`` with the request accepted (202)."""

    result: dict[str, Any] | None
    request_id: str


def build_request(op: Operation, who: Requester, **fields: Any) -> NumbersRequest:
    """The task payload of a write: the requester is the key's account, the id the header's."""
    fields = {k: v for k, v in fields.items() if v is not None}
    fields["auth_by"] = who.auth_by
    fields["request_id"] = who.request_id
    try:
        request = NumbersRequest.model_validate(fields)
        requests.check(op, request)
    except InvalidRequestError as exc:
        raise envelope.invalid_field("data", "invalid", str(exc)) from None
    except ValueError as exc:  # pydantic's ValidationError
        errors = getattr(exc, "errors", None)
        if callable(errors):
            raise envelope.invalid_data(envelope.validation_fields(errors())) from None
        raise envelope.invalid_field("data", "invalid", str(exc)) from None
    return request


def write(op: Operation, request: NumbersRequest, who: Requester, *, run_async: bool) -> Outcome:
    """Publish ``op`` and wait for its result (or, async, only publish)."""
    from workers import producer

    ctx = who.ctx
    settings = ctx.settings
    request_id = who.request_id
    app = ctx.producer()
    timeout = float(settings.api_async_expiry_s) if run_async else settings.api_wait_s
    try:
        if run_async:
            _remember(who, op)
            producer.publish(op, request, timeout=timeout, app=app)
            return Outcome(None, request_id)
        sent = producer.publish(op, request, timeout=timeout, app=app)
        reply = producer.wait(sent, producer.task_name(op), timeout=timeout)
    except InvalidRequestError as exc:
        raise envelope.invalid_field("data", "invalid", str(exc)) from None
    except producer.StillRunningError:
        _remember(who, op)
        return Outcome(None, request_id)
    except producer.NoWorkerError as exc:
        raise ApiError(503, "no_worker", {"message": str(exc)}) from None
    except producer.TaskFailedError as exc:
        if exc.invalid:
            raise envelope.invalid_field("data", "invalid", exc.message) from None
        raise ApiError(500, "unspecified_fault", {"message": str(exc)}) from None
    except producer.ProducerError as exc:
        raise ApiError(503, "broker_unavailable", {"message": str(exc)}) from None
    if not isinstance(reply.result, dict):
        raise ApiError(500, "internal_error", {"message": "the worker returned no object"})
    return Outcome(reply.result, request_id)


def _remember(who: Requester, op: Operation) -> None:
    """Record a request answered 202 so its sender (and only it) can read its outcome."""
    now = datetime.now(UTC)
    ttl = timedelta(seconds=who.ctx.settings.request_outcome_ttl_s)
    doc = {
        "_id": who.request_id,
        "auth_by": who.auth_by,
        "operation": op.value,
        "accepted": now,
        "expires_at": now + ttl,
    }
    try:
        who.ctx.db[ACCEPTED].insert_one(doc)
    except DuplicateKeyError:
        return  # the same X-Request-Id again: the first record stands


def request_owner(who: Requester, request_id: str) -> str | None:
    """Who sent a request: the API's own record, else the worker's claim of its id."""
    db = who.ctx.db
    for name in (ACCEPTED, "request_keys"):
        doc = db[name].find_one({"_id": request_id}, {"auth_by": 1})
        if doc is not None and isinstance(doc.get("auth_by"), str):
            return str(doc["auth_by"])
    return None


def accepted(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": "accepted",
        "location": f"/v2/requests/{request_id}",
    }


# ================================================================================ results
def public_json(who: Requester, doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document (as a worker returns it) in KAZOO's public form."""
    loaded = dict(doc)
    for key in _DATES:
        value = loaded.get(key)
        if isinstance(value, str):
            try:
                loaded[key] = datetime.fromisoformat(value)
            except ValueError:
                loaded.pop(key)
    pn = PhoneNumber.from_document(loaded, who.ctx.knm.numbers.modules)
    return pn.to_public_json()


def single(who: Requester, number: str, result: dict[str, Any]) -> dict[str, Any]:
    """One number's answer: its public JSON, or its failure raised as crossbar answers it."""
    succeeded = result.get("succeeded") or {}
    failed = result.get("failed") or {}
    if succeeded:
        return public_json(who, next(iter(succeeded.values())))
    if failed:
        key, failure = next(iter(failed.items()))
        raise envelope.number_failure(key, failure if isinstance(failure, dict) else {})
    raise envelope.not_found_number()


def collection(who: Requester, result: dict[str, Any]) -> dict[str, Any]:
    """KAZOO's collection answer: ``{"success": {number: public}, "error": {number: reason}}``."""
    succeeded = result.get("succeeded") or {}
    failed = result.get("failed") or {}
    return {
        "success": {n: public_json(who, doc) for n, doc in succeeded.items()},
        "error": dict(failed),
    }
