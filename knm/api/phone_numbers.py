"""crossbar's ``phone_numbers`` API: an account's numbers, one number, collections, search.

Numbers in paths are URL-encoded (``%2B14155550100``) and may be in any form knm reconciles
(``4155550100``, ``+1 415...``). Writes are tasks published for the workers
(``knm.api.writes``); reads (a number, an account's listing, a search, classifiers) run here.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from knm.api import envelope, writes
from knm.api.auth import Auth, Requester, check_account
from knm.api.envelope import EnvelopeResponse
from knm.api.writes import Outcome
from knm.domain import convert
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, to_gregorian_seconds
from knm.services import dispatch
from knm.services.facade import InputError
from knm.services.numbers_requests import MAX_NUMBERS_PER_REQUEST, NumbersRequest, Operation
from knm.services.search import SearchQuery

router = APIRouter(prefix="/v2", tags=["phone_numbers"])

#: Keys of a request's ``data`` that are not public fields: what a GET shows of the number
#: itself (a client may send a number's JSON back as it got it) and the collection's list.
_NOT_PUBLIC: Final[frozenset[str]] = frozenset(
    {"id", "numbers", "state", "features", "used_by", "_read_only"}
)

Async = Annotated[
    bool,
    Query(
        alias="async",
        description="Answer 202 with the request id at once; GET /v2/requests/{id} tells the "
        "outcome.",
    ),
]


class NumberBody(BaseModel):
    """The body of a write on one number: ``{"data": {public fields}}`` (optional)."""

    model_config = ConfigDict(extra="ignore")
    data: dict[str, Any] = Field(default_factory=dict)


class CollectionData(BaseModel):
    """``{"numbers": [...], ...public fields}``."""

    model_config = ConfigDict(extra="allow")
    numbers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=MAX_NUMBERS_PER_REQUEST
    )


class CollectionBody(BaseModel):
    """The body of a collection write: ``{"data": {"numbers": [...], ...}}``."""

    data: CollectionData


def public_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The public fields a body sets: private (``pvt_``, ``_``) and read-only keys dropped."""
    return {
        k: v for k, v in data.items() if k not in _NOT_PUBLIC and not k.startswith(("_", "pvt_"))
    }


def _answer(
    who: Requester, number: str | None, outcome: Outcome, status: int = 200
) -> EnvelopeResponse:
    if outcome.result is None:
        return envelope.success(writes.accepted(outcome.request_id), who.request_id, 202)
    if number is None:
        data = writes.collection(who, outcome.result)
    else:
        data = writes.single(who, number, outcome.result)
    return envelope.success(data, who.request_id, status)


def _write(
    who: Requester,
    op: Operation,
    number: str | None,
    numbers: list[str],
    run_async: bool,
    status: int = 200,
    **fields: Any,
) -> EnvelopeResponse:
    request = writes.build_request(op, who, numbers=numbers, **fields)
    return _answer(who, number, writes.write(op, request, who, run_async=run_async), status)


def _update(
    who: Auth,
    account_id: str,
    number: str | None,
    numbers: list[str],
    data: dict[str, Any],
    run_async: bool,
    *,
    merge: bool,
) -> EnvelopeResponse:
    """POST replaces the public fields, PATCH merges into them (one number or a collection);
    the account is checked before the fields are."""
    check_account(who, account_id)
    fields = public_fields(data)
    return _write(
        who, Operation.UPDATE, number, numbers, run_async, public_fields=fields, merge=merge
    )


# ================================================================================ reads
@router.get("/accounts/{account_id}/phone_numbers", response_model=envelope.Envelope)
def list_numbers(
    account_id: str,
    who: Auth,
    filter_state: Annotated[NumberState | None, Query(description="Only this state.")] = None,
    prefix: Annotated[
        str | None, Query(max_length=32, description="Search numbers for the account.")
    ] = None,
    quantity: Annotated[int, Query(ge=1, description="Search: results wanted.")] = 1,
    offset: Annotated[int, Query(ge=0, description="Search: results to skip.")] = 0,
    start_key: Annotated[str | None, Query(max_length=64, description="Page after it.")] = None,
    page_size: Annotated[int | None, Query(ge=1, description="Numbers per page.")] = None,
) -> EnvelopeResponse:
    """The account's numbers (``filter_state``, paged by ``start_key``), or with ``prefix`` a
    search for numbers the account may buy."""
    check_account(who, account_id)
    if prefix is not None:
        return _search(who, prefix, quantity, offset, account_id)
    knm = who.ctx.knm
    limit = min(page_size or who.ctx.settings.api_page_size, who.ctx.settings.api_page_size)
    query: dict[str, Any] = {"pvt_assigned_to": account_id}
    if filter_state is not None:
        query["pvt_state"] = filter_state.value
    if start_key:
        query["_id"] = {"$gt": start_key}
    found = list(knm.store.numbers.find(query).sort("_id", 1).limit(limit + 1))
    numbers: dict[str, Any] = {}
    for doc in found[:limit]:
        numbers[doc["_id"]] = {
            "assigned_to": doc.get("pvt_assigned_to"),
            "state": doc.get("pvt_state"),
            "features": sorted(doc.get("pvt_features") or {}),
            "used_by": doc.get("pvt_used_by") or "",
            "created": _seconds(doc.get("pvt_created")),
            "updated": _seconds(doc.get("pvt_modified")),
        }
    extra: dict[str, Any] = {"page_size": len(numbers)}
    if len(found) > limit:
        extra["next_start_key"] = found[limit - 1]["_id"]
    return envelope.success({"numbers": numbers, "casquade_quantity": 0}, who.request_id, **extra)


def _seconds(value: Any) -> int | None:
    from datetime import datetime

    return to_gregorian_seconds(value) if isinstance(value, datetime) else None


def _search(
    who: Requester, prefix: str, quantity: int, offset: int, account_id: str | None
) -> EnvelopeResponse:
    try:
        query = SearchQuery(prefix=prefix, quantity=quantity, offset=offset, account_id=account_id)
        found = who.ctx.knm.search(query)
    except InputError as exc:
        raise envelope.invalid_field("prefix", "invalid", str(exc)) from None
    except KnmError as exc:
        raise envelope.knm_error(exc) from None
    rows = [
        {
            "number": r.number,
            "e164": r.number,
            "state": r.state.value,
            "carrier_module": r.carrier_module,
        }
        for r in found
    ]
    return envelope.success(rows, who.request_id)


@router.get("/phone_numbers", response_model=envelope.Envelope)
def search_numbers(
    who: Auth,
    prefix: Annotated[str, Query(min_length=1, max_length=32, description="e.g. 415")],
    quantity: Annotated[int, Query(ge=1)] = 1,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> EnvelopeResponse:
    """Search numbers to buy (the system's carriers)."""
    return _search(who, prefix, quantity, offset, None)


@router.get("/phone_numbers/classifiers", response_model=envelope.Envelope)
def classifiers(who: Auth) -> EnvelopeResponse:
    """The classifier table (name -> regex, friendly_name, pretty_print)."""
    table = convert.available_classifiers(who.ctx.settings.classifiers)
    return envelope.success(table, who.request_id)


@router.get("/phone_numbers/classifiers/{number}", response_model=envelope.Envelope)
def classify(number: str, who: Auth) -> EnvelopeResponse:
    """Which classifier a number falls in (404 when none)."""
    settings = who.ctx.settings
    table = convert.available_classifiers(settings.classifiers)
    e164 = convert.normalize(number, settings.e164_converters)
    name = convert.classify(number, settings.classifiers)
    if name is None:
        raise envelope.bad_identifier(number, "classifier")
    entry = table[name]
    data = {
        "name": name,
        "friendly_name": entry.get("friendly_name", name),
        "regex": entry.get("regex"),
        "pretty_print": entry.get("pretty_print"),
        "e164": e164,
        "number": number,
    }
    return envelope.success(data, who.request_id)


@router.get("/requests/{request_id}", response_model=envelope.Envelope, tags=["requests"])
def request_status(request_id: str, who: Auth) -> EnvelopeResponse:
    """The outcome of a write (one answered 202): pending, done with its result, dead letter."""
    from knm.services.request_status import describe

    owner = writes.request_owner(who, request_id)
    if owner is None:
        raise envelope.bad_identifier(request_id, "request")
    if owner != who.auth_by:
        raise envelope.forbidden(f"request {request_id} was sent by another account")
    described = describe(who.ctx.knm, request_id)
    if described is None:
        data: dict[str, Any] = {"request_id": request_id, "status": "pending"}
    else:
        data = {k: v for k, v in described.items() if k != "result"}
        if described.get("result") is not None:
            data["result"] = writes.collection(who, described["result"])
    return envelope.success(data, who.request_id)


# ================================================================================ collections
@router.put("/accounts/{account_id}/phone_numbers/collection", status_code=201)
def create_collection(
    account_id: str, body: CollectionBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Create the numbers for the account: ``{"success": {...}, "error": {...}}``."""
    check_account(who, account_id)
    fields = public_fields(body.data.model_dump())
    return _write(
        who,
        Operation.CREATE,
        None,
        body.data.numbers,
        run_async,
        201,
        account=account_id,
        public_fields=fields or None,
    )


@router.put("/accounts/{account_id}/phone_numbers/collection/activate", status_code=201)
def activate_collection(
    account_id: str, body: CollectionBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Activate (buy) the numbers for the account."""
    check_account(who, account_id)
    fields = public_fields(body.data.model_dump())
    return _write(
        who,
        Operation.ACTIVATE,
        None,
        body.data.numbers,
        run_async,
        201,
        account=account_id,
        public_fields=fields or None,
    )


@router.post("/accounts/{account_id}/phone_numbers/collection")
def replace_collection(
    account_id: str, body: CollectionBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Replace the numbers' public fields."""
    data = body.data.model_dump()
    return _update(who, account_id, None, body.data.numbers, data, run_async, merge=False)


@router.patch("/accounts/{account_id}/phone_numbers/collection")
def merge_collection(
    account_id: str, body: CollectionBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Merge into the numbers' public fields."""
    data = body.data.model_dump()
    return _update(who, account_id, None, body.data.numbers, data, run_async, merge=True)


@router.delete("/accounts/{account_id}/phone_numbers/collection")
def release_collection(
    account_id: str, body: CollectionBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Release the numbers."""
    check_account(who, account_id)
    return _write(who, Operation.RELEASE, None, body.data.numbers, run_async)


# ================================================================================ one number
OptionalBody = Annotated[NumberBody | None, Body()]


@router.get("/accounts/{account_id}/phone_numbers/{number}", response_model=envelope.Envelope)
def get_number(account_id: str, number: str, who: Auth) -> EnvelopeResponse:
    """The number's public fields and state (404 ``bad_identifier`` when it does not exist)."""
    check_account(who, account_id)
    knm = who.ctx.knm
    request = NumbersRequest.model_construct(numbers=[number], auth_by=who.auth_by)
    batch = dispatch.read_numbers(knm, request)
    if batch.succeeded:
        pn = next(iter(batch.succeeded.values()))
        return envelope.success(pn.to_public_json(), who.request_id)
    key, error = next(iter(batch.failed.items()))
    raise envelope.number_failure(key, error.to_json())


@router.put("/accounts/{account_id}/phone_numbers/{number}", status_code=201)
def create_number(
    account_id: str,
    number: str,
    who: Auth,
    body: OptionalBody = None,
    state: Annotated[NumberState | None, Query(description="Creation state.")] = None,
    run_async: Async = False,
) -> EnvelopeResponse:
    """Create the number for the account (``in_service`` unless ``state``)."""
    check_account(who, account_id)
    fields = public_fields(body.data) if body else {}
    return _write(
        who,
        Operation.CREATE,
        number,
        [number],
        run_async,
        201,
        account=account_id,
        state=state,
        public_fields=fields or None,
    )


@router.post("/accounts/{account_id}/phone_numbers/{number}")
def replace_number(
    account_id: str, number: str, body: NumberBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Replace the number's public fields (features apply on save)."""
    return _update(who, account_id, number, [number], body.data, run_async, merge=False)


@router.patch("/accounts/{account_id}/phone_numbers/{number}")
def merge_number(
    account_id: str, number: str, body: NumberBody, who: Auth, run_async: Async = False
) -> EnvelopeResponse:
    """Merge into the number's public fields."""
    return _update(who, account_id, number, [number], body.data, run_async, merge=True)


@router.delete("/accounts/{account_id}/phone_numbers/{number}")
def release_number(
    account_id: str,
    number: str,
    who: Auth,
    hard: Annotated[bool, Query(description="Hard-delete (admins only).")] = False,
    run_async: Async = False,
) -> EnvelopeResponse:
    """Release the number (``?hard=true``: delete it, admins only)."""
    check_account(who, account_id)
    op = Operation.DELETE if hard else Operation.RELEASE
    return _write(who, op, number, [number], run_async)


@router.put("/accounts/{account_id}/phone_numbers/{number}/activate", status_code=201)
def activate_number(
    account_id: str,
    number: str,
    who: Auth,
    body: OptionalBody = None,
    run_async: Async = False,
) -> EnvelopeResponse:
    """Activate (buy) the number for the account: ``in_service``."""
    check_account(who, account_id)
    fields = public_fields(body.data) if body else {}
    return _write(
        who,
        Operation.ACTIVATE,
        number,
        [number],
        run_async,
        201,
        account=account_id,
        public_fields=fields or None,
    )


@router.put("/accounts/{account_id}/phone_numbers/{number}/reserve", status_code=201)
def reserve_number(
    account_id: str,
    number: str,
    who: Auth,
    body: OptionalBody = None,
    run_async: Async = False,
) -> EnvelopeResponse:
    """Reserve the number for the account."""
    check_account(who, account_id)
    return _write(who, Operation.RESERVE, number, [number], run_async, 201, account=account_id)
