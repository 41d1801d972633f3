"""Requests on numbers: the payload every producer sends, and how one is executed.

The CLI (in process or ``--via-broker``) and the Celery tasks share these models and
``execute()``, so a request gives the same JSON result whichever way it travels:
``{"succeeded": {E.164: stored document}, "failed": {input: error}}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import defaultdict
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from carriers.registry import CarrierRegistry
from config.settings import Settings
from knm.contract.json_values import jsonable
from knm.domain import convert, errors
from knm.domain.accounts import SYSTEM, AccountDirectory
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.store import read_once

MAX_NUMBERS_PER_REQUEST: Final[int] = 10_000
#: A request id: letters, digits and ``._:-``, up to 128 characters (a UUID fits).
REQUEST_ID_PATTERN: Final[str] = r"^[A-Za-z0-9._:-]{1,128}$"
#: A queue name a caller may ask outcomes to be sent to.
QUEUE_NAME_PATTERN: Final[str] = r"^[A-Za-z0-9._:-]{1,200}$"


class Operation(StrEnum):
    """The single-number operations a request can ask for (stable task names: knm.numbers.*)."""

    GET = "get"
    CREATE = "create"
    ACTIVATE = "activate"
    RESERVE = "reserve"
    RELEASE = "release"
    DELETE = "delete"
    UPDATE = "update"


#: Operations that need ``account`` (the target of activate, the holder of a reservation).
NEEDS_ACCOUNT: Final[frozenset[Operation]] = frozenset({Operation.ACTIVATE, Operation.RESERVE})
#: Operations that may talk to a carrier, so they run on the carrier's queue (an update may
#: provision features upstream: E911, CNAM).
CARRIER_OPERATIONS: Final[frozenset[Operation]] = frozenset(
    {
        Operation.CREATE,
        Operation.ACTIVATE,
        Operation.RESERVE,
        Operation.RELEASE,
        Operation.DELETE,
        Operation.UPDATE,
    }
)


class InvalidRequestError(ValueError):
    """A payload that can never succeed: reported at once, never retried."""


class NumbersRequest(BaseModel):
    """What a producer asks: which numbers, for whom, on whose authority, with which options.

    Options left out are not applied at all (KAZOO applies only the options a caller gives).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    numbers: list[str] = Field(min_length=1, max_length=MAX_NUMBERS_PER_REQUEST)
    account: str | None = Field(
        default=None, description="Account to assign to (create, reserve) or activate for."
    )
    auth_by: str = Field(default=SYSTEM, description="Requesting account id, or 'system'.")
    state: NumberState | None = Field(default=None, description="Creation state (create only).")
    carrier_module: str | None = Field(
        default=None,
        description="Carrier module of new numbers: a registered module (else 400 "
        "carrier_not_found), named only by system or a superduper admin (else 403 forbidden).",
    )
    ported_in: bool = False
    dry_run: bool = False
    mdn: bool = Field(default=False, description="The numbers are MDNs (KAZOO's mdn_run).")
    public_fields: dict[str, Any] | None = Field(
        default=None,
        description="Public fields: replace them (create, activate, update) or merge (update).",
    )
    merge: bool = Field(default=True, description="update: merge public fields, else replace.")
    request_id: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="Caller-chosen idempotency key: the same key twice has one effect and "
        "returns the first outcome (default: the task id). A key belongs to its first request: "
        "sent by another requester, for another operation, with other options or for numbers "
        "that request did not have, it fails every number with 409 request_id_conflict.",
    )
    reply_to: str | None = Field(
        default=None,
        pattern=QUEUE_NAME_PATTERN,
        description="A queue that receives one JSON event per number when the request is done.",
    )

    @model_validator(mode="after")
    def _strings_are_numbers(self) -> NumbersRequest:
        for number in self.numbers:
            if not number.strip():
                raise ValueError("numbers must not be empty strings")
        return self

    def for_numbers(self, numbers: list[str]) -> NumbersRequest:
        """The same request restricted to some of its numbers (one carrier's share)."""
        data = {name: getattr(self, name) for name in self.model_fields_set}
        data["numbers"] = numbers
        return type(self).model_validate(data)

    def to_payload(self) -> dict[str, Any]:
        """The JSON kwargs of a task message: only what was given."""
        payload: dict[str, Any] = self.model_dump(mode="json", exclude_unset=True)
        return payload


def check(op: Operation, request: NumbersRequest) -> None:
    """Rules that depend on the operation; raise ``InvalidRequestError``."""
    if len(request.numbers) > MAX_NUMBERS_PER_REQUEST:  # in process too, not only in a message
        raise InvalidRequestError(
            f"at most {MAX_NUMBERS_PER_REQUEST:,} numbers per request "
            f"({len(request.numbers):,} given): split them, or use a CSV job"
        )
    if op in NEEDS_ACCOUNT and request.account is None:
        raise InvalidRequestError(f"'account' is required by {op.value}")
    if request.state is not None and op != Operation.CREATE:
        raise InvalidRequestError("'state' is only valid for create")
    if op == Operation.UPDATE and request.public_fields is None:
        raise InvalidRequestError("'public_fields' is required by update")


def parse(op: Operation, payload: Any) -> NumbersRequest:
    """Validate a message's kwargs into a request, or raise one clear ``InvalidRequestError``."""
    if not isinstance(payload, dict):
        raise InvalidRequestError(f"payload must be a JSON object, not {type(payload).__name__}")
    try:
        request = NumbersRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidRequestError(f"invalid {op.value} request: {problems}") from None
    check(op, request)
    return request


def request_scope(op: Operation, request: NumbersRequest) -> str:
    """What makes two requests with one key the same request, numbers aside: a digest.

    The requester (``auth_by``), the operation and every option but ``dry_run`` and
    ``reply_to`` (which do not change what the request does).
    """
    fields = request.model_dump(
        mode="json", exclude={"numbers", "request_id", "reply_to", "dry_run"}
    )
    blob = json.dumps({"operation": op.value, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def request_key(request_id: str, op: Operation, request: NumbersRequest) -> str:
    """The key a request writes on documents, tombstones and the ledger: its id and its scope.

    ``<request_id>/<scope>``: another requester or operation reusing the id gets another key,
    so it never finds numbers the first request wrote as its own. No caller can send a key
    like it (``/`` is not allowed in a request id), and it never equals a CSV chunk's key
    (``<job id>:<chunk>``, no ``/``), even when the request id spells one.
    """
    return f"{request_id}/{request_scope(op, request)}"


def carrier_refusal(knm: Knm, request: NumbersRequest) -> KnmError | None:
    """Refuse a request naming a carrier module: unknown (400), or not the requester's to name.

    Checked before any number is read, stored or published; the requester's account is read
    (one query) only when a module is named.
    """
    module = request.carrier_module
    if module is None:
        return None
    if (unknown := unknown_carrier(knm.numbers.carriers, request)) is not None:
        return unknown
    auth_by = request.auth_by
    accounts = AccountDirectory(knm.store.find_accounts({auth_by} - {SYSTEM}))
    if accounts.may_choose_carrier(auth_by):
        return None
    return errors.unauthorized(
        f"only system or a superduper admin may choose the carrier module ('{module}')"
    )


def unknown_carrier(carriers: CarrierRegistry, request: NumbersRequest) -> KnmError | None:
    """400 ``carrier_not_found`` when the request names a module no registered carrier owns."""
    module = request.carrier_module
    if module is not None and module not in carriers:
        return errors.carrier_not_found(module)
    return None


def refused(settings: Settings, numbers: list[str], error: KnmError) -> Batch:
    """Every input failed with ``error``, keyed as an operation keys them (E.164 when it can)."""
    batch = Batch()
    for raw in numbers:
        if convert.is_reconcilable(raw, settings.reconcile_regex):
            batch.fail(convert.normalize(raw, settings.e164_converters), error)
        else:
            batch.fail(raw, errors.not_reconcilable())
    return batch


def to_options(op: Operation, request: NumbersRequest, request_id: str | None = None) -> Options:
    """The operation's ``Options``; only options the request gave are set."""
    given = request.model_fields_set
    fields: dict[str, Any] = {"auth_by": request.auth_by}
    if request.account is not None and op != Operation.ACTIVATE:
        fields["assign_to"] = request.account
    if request.state is not None:
        fields["state"] = request.state
    if request.carrier_module is not None:
        fields["module_name"] = request.carrier_module
    if "ported_in" in given:
        fields["ported_in"] = request.ported_in
    if request.dry_run:
        fields["dry_run"] = True
    if request.mdn:
        fields["mdn_run"] = True
    if request.public_fields is not None and op in (Operation.CREATE, Operation.ACTIVATE):
        fields["public_fields"] = request.public_fields
    if request_id is not None:
        fields["request_id"] = request_key(request_id, op, request)
    return Options(**fields)


def run(knm: Knm, op: Operation, request: NumbersRequest, request_id: str | None = None) -> Batch:
    """Execute a request in this process."""
    check(op, request)
    if (refusal := carrier_refusal(knm, request)) is not None:
        return refused(knm.settings, request.numbers, refusal)
    options = to_options(op, request, request_id)
    manager = knm.numbers
    numbers = request.numbers
    match op:
        case Operation.GET:
            return manager.get(numbers, options)
        case Operation.CREATE:
            return manager.create(numbers, options)
        case Operation.ACTIVATE:
            assert request.account is not None
            return manager.move(numbers, request.account, options)
        case Operation.RESERVE:
            return manager.reserve(numbers, options)
        case Operation.RELEASE:
            return manager.release(numbers, options)
        case Operation.DELETE:
            return manager.delete(numbers, options)
        case Operation.UPDATE:
            fields = copy.deepcopy(request.public_fields or {})

            def setter(pn: PhoneNumber) -> None:
                if request.merge:
                    pn.update_public(fields)
                else:
                    pn.reset_public(fields)

            return manager.update(numbers, [setter], options)


def execute(
    knm: Knm, op: Operation, request: NumbersRequest, request_id: str | None = None
) -> dict[str, Any]:
    """Execute a request and return its JSON result."""
    return result_json(run(knm, op, request, request_id))


def result_json(batch: Batch) -> dict[str, Any]:
    """``{"succeeded": {E.164: stored document}, "failed": {input: error}}``, JSON-safe."""
    result: dict[str, Any] = jsonable(batch.to_json(lambda pn: pn.to_document()))
    return result


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the results of a request's parts (one part per carrier queue)."""
    merged: dict[str, Any] = {"succeeded": {}, "failed": {}}
    for result in results:
        merged["succeeded"].update(result.get("succeeded", {}))
        merged["failed"].update(result.get("failed", {}))
    merged["succeeded"] = dict(sorted(merged["succeeded"].items()))
    merged["failed"] = dict(sorted(merged["failed"].items()))
    return merged


def carrier_routes(
    knm: Knm,
    op: Operation,
    request: NumbersRequest,
    docs_out: dict[str, dict[str, Any]] | None = None,
) -> dict[str | None, list[str]]:
    """Which carrier module handles each input, read from the stored ``pvt_carrier_module``.

    ``docs_out`` receives the stored documents read (by E.164), and what was read is
    remembered (``read_once``) for the operation that runs next in this thread.

    Numbers not stored yet go to the module they will get: the search's carrier for a discovered
    number being activated, the creation module for create. Inputs knm cannot place (not
    reconcilable, not found) map to ``None``: they fail the same way on any queue. So do numbers
    whose stored module no registered carrier owns (a KAZOO import): no worker consumes such a
    module's queue, so nothing is ever published there.
    """
    settings = knm.settings
    normalized: dict[str, str] = {}
    for raw in request.numbers:
        if convert.is_reconcilable(raw, settings.reconcile_regex):
            normalized[raw] = convert.normalize(raw, settings.e164_converters)
    keys = list(dict.fromkeys(normalized.values()))
    docs = knm.store.find_numbers(keys)
    read_once.remember("numbers", keys, docs)
    if docs_out is not None:
        docs_out.update(docs)
    missing = [n for n in keys if n not in docs]
    fallback: dict[str, str] = {}
    if missing and op == Operation.ACTIVATE:
        hits = knm.numbers.search_cache.discovered(missing)
        read_once.remember("discovered", missing, hits)
        fallback = {n: r.carrier_module for n, r in hits.items()}
    elif missing and op == Operation.CREATE:
        fallback = dict.fromkeys(missing, knm.numbers.creation_module(to_options(op, request)))
    routes: dict[str | None, list[str]] = defaultdict(list)
    for raw in request.numbers:
        number = normalized.get(raw)
        target: str | None = None
        if number is not None:
            doc = docs.get(number)
            target = stored_module(knm, doc) if doc is not None else fallback.get(number)
        if target not in knm.numbers.carriers:
            target = None
        routes[target].append(raw)
    return dict(routes)


def stored_module(knm: Knm, doc: dict[str, Any]) -> str:
    """The carrier module a stored document names (a KAZOO module migrated to knm's; none:
    the available module)."""
    stored = doc.get("pvt_carrier_module", doc.get("pvt_module_name"))
    if isinstance(stored, str):
        stored = knm.numbers.modules.migrate(stored, kazoo="pvt_carrier_module" not in doc)
    return stored if isinstance(stored, str) and stored else knm.settings.available_module_name
