"""KAZOO's crossbar envelope: every answer, success or error, has the same outer shape.

Success: ``{"data": ..., "status": "success", "request_id": ...}``. Error: ``{"data": {...},
"error": "<HTTP code>", "message": "<error name>", "status": "error", "request_id": ...}``, where a
number's failure keeps KAZOO's code and name (404 ``bad_identifier`` for an unknown number, 409
``number_exists``, 403 ``forbidden``...) and ``data`` is the error object itself.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from knm.domain.errors import KnmError
from knm.services.numbers_requests import REQUEST_ID_PATTERN

REQUEST_ID_HEADER: Final[str] = "X-Request-Id"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


class Envelope(BaseModel):
    """The success envelope (the OpenAPI document shows it)."""

    data: Any
    status: str = "success"
    request_id: str


class ErrorEnvelope(BaseModel):
    """The error envelope."""

    data: Any
    error: str
    message: str
    status: str = "error"
    request_id: str


class ApiError(Exception):
    """An answer other than success: HTTP status, KAZOO error name and data."""

    def __init__(self, status: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = {} if data is None else data


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str) -> bool:
    return _REQUEST_ID.match(value) is not None


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class EnvelopeResponse(JSONResponse):
    """A JSON response that serializes datetimes as strings (stored documents carry some)."""

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def success(data: Any, request_id: str, status: int = 200, **extra: Any) -> EnvelopeResponse:
    body: dict[str, Any] = {"data": data, "status": "success", "request_id": request_id, **extra}
    return EnvelopeResponse(body, status_code=status, headers={REQUEST_ID_HEADER: request_id})


def error(
    status: int, message: str, data: Any, request_id: str, headers: dict[str, str] | None = None
) -> EnvelopeResponse:
    body = {
        "data": data,
        "error": str(status),
        "message": message,
        "status": "error",
        "request_id": request_id,
    }
    return EnvelopeResponse(
        body, status_code=status, headers={REQUEST_ID_HEADER: request_id, **(headers or {})}
    )


# ================================================================================ KAZOO errors
def not_found_number() -> ApiError:
    """crossbar's answer for a number that does not exist (or a plain ``not_found``)."""
    return ApiError(
        404,
        "bad_identifier",
        {"message": "bad identifier", "not_found": "The number could not be found"},
    )


def bad_identifier(cause: str, what: str = "resource") -> ApiError:
    return ApiError(
        404, "bad_identifier", {"message": "bad identifier", "cause": cause, "not_found": what}
    )


def number_failure(number: str, failure: dict[str, Any]) -> ApiError:
    """One number's failure (``KnmError.to_json()``) as crossbar answers it."""
    name = str(failure.get("error") or "unspecified_fault")
    code = failure.get("code")
    if name == "not_found" and code in (None, 404):
        return not_found_number()
    if code is None:  # a plain reason other than not_found: KAZOO's 400 "client error"
        return ApiError(400, "client error", {"error": name, "cause": number})
    return ApiError(int(code), name, failure)


def knm_error(exc: KnmError) -> ApiError:
    return number_failure("", exc.to_json())


def unauthorized(reason: str) -> ApiError:
    return ApiError(401, "invalid_credentials", {"message": reason})


def forbidden(cause: str) -> ApiError:
    return ApiError(
        403,
        "forbidden",
        {
            "error": "forbidden",
            "code": 403,
            "message": "requestor is unauthorized to perform operation",
            "cause": cause,
        },
    )


def invalid_data(fields: dict[str, dict[str, Any]]) -> ApiError:
    """crossbar's validation failure: ``data`` is ``{field: {rule: {"message": ...}}}``."""
    return ApiError(400, "invalid data", fields)


def invalid_field(field: str, rule: str, message: str) -> ApiError:
    return invalid_data({field: {rule: {"message": message}}})


def validation_fields(errors: list[ErrorDetails] | list[dict[str, Any]]) -> dict[str, Any]:
    """pydantic's errors keyed by the field path they name (``data.numbers.3``)."""
    fields: dict[str, dict[str, Any]] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        fields.setdefault(field, {})[str(err.get("type", "invalid"))] = {
            "message": str(err.get("msg", "invalid"))
        }
    return fields
