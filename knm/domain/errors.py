"""KAZOO's number-manager errors, kept by name, code and message.

A failure is either a *plain reason* (``not_found``, ``not_reconcilable``: only an ``error`` name)
or an error object with an HTTP-like ``code``, a ``message`` and an optional ``cause``.
"""

from __future__ import annotations

import json
from typing import Any


class KnmError(Exception):
    """One number's failure; raised inside an operation and recorded per number."""

    def __init__(
        self,
        error: str,
        code: int | None = None,
        message: str | None = None,
        cause: Any = None,
    ) -> None:
        super().__init__(message or error)
        self.error = error
        self.code = code
        self.message = message
        self.cause = cause
        #: A provider's transient failure outlived the in-call retries: a later retry of the
        #: request may succeed (not part of the wire form).
        self.retryable = False

    @property
    def is_plain(self) -> bool:
        """Plain reasons (KAZOO atoms) carry only their name."""
        return self.code is None and self.message is None and self.cause is None

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"error"}`` for plain reasons, else error, code, message and cause.

        Error objects always carry all four keys (``null`` where absent) so clients can read
        them without probing; that is the CLI and task-result contract.
        """
        if self.is_plain:
            return {"error": self.error}
        return {
            "error": self.error,
            "code": self.code,
            "message": self.message,
            "cause": self.cause,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KnmError) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True, default=str))

    def __repr__(self) -> str:
        return f"KnmError({self.to_json()!r})"


def _stringify(cause: Any) -> Any:
    """KAZOO stringifies causes; JSON objects are JSON-encoded."""
    if cause is None or isinstance(cause, str):
        return cause
    if isinstance(cause, dict | list):
        return json.dumps(cause, sort_keys=True)
    return str(cause)


def not_found() -> KnmError:
    """The bare ``not_found`` reason of bulk operations."""
    return KnmError("not_found")


def not_reconcilable() -> KnmError:
    """The bare ``not_reconcilable`` reason, keyed by the caller's original input."""
    return KnmError("not_reconcilable")


def number_is_porting(number: str) -> KnmError:
    return KnmError("number_is_porting", 400, f"number {number} is porting", number)


def number_exists(number: str) -> KnmError:
    return KnmError("number_exists", 409, f"number {number} already exists", number)


def request_id_conflict(cause: str) -> KnmError:
    """A request id already used by another request (requester, operation, options, numbers).

    Never retried: the same key will always belong to that other request.
    """
    return KnmError(
        "request_id_conflict", 409, "request_id is already used by another request", cause
    )


def unauthorized(cause: str | None = None) -> KnmError:
    return KnmError("forbidden", 403, "requestor is unauthorized to perform operation", cause)


def no_change_required(number: str) -> KnmError:
    return KnmError("no_change_required", 400, "no change required", number)


def invalid_state_transition(
    from_state: str | None = None, to_state: str | None = None
) -> KnmError:
    """``cause`` is ``from X to Y``; without states (unsupported target) there is no cause."""
    if from_state is None and to_state is None:
        return KnmError("invalid_state_transition", 400, "invalid state transition")
    return KnmError(
        "invalid_state_transition",
        400,
        "invalid state transition",
        f"from {from_state or '(nothing)'} to {to_state}",
    )


def assign_failure(cause: Any = "field_undefined") -> KnmError:
    return KnmError("assign_failure", 400, "invalid account to assign to", _stringify(cause))


def invalid(cause: str) -> KnmError:
    return KnmError("invalid", 400, "invalid", cause)


def invalid_field(path: str, rule: str) -> KnmError:
    """A field the caller sent that cannot be stored: ``path`` names it, ``rule`` says why."""
    return KnmError("invalid_field", 400, f"invalid field {path}: {rule}", path)


def by_carrier(
    number: str, detail: str | None = None, carrier: str | None = None, *, retryable: bool = False
) -> KnmError:
    """A carrier module failed (acquire, disconnect, ...); ``detail`` is the provider's message.

    KAZOO's cause is the number; with a detail (and the module) the cause is a JSON object
    ``{"number", "detail"[, "carrier"]}`` so the provider's own words reach the caller.
    """
    if detail is None and carrier is None:
        error = KnmError("unspecified_fault", 500, "fault by carrier", number)
    else:
        cause: dict[str, Any] = {"number": number, "detail": detail}
        if carrier is not None:
            cause["carrier"] = carrier
        error = KnmError("unspecified_fault", 500, "fault by carrier", _stringify(cause))
    error.retryable = retryable
    return error


def carrier_not_found(module: str) -> KnmError:
    """Acquiring through a module knm does not know fails instead of skipping."""
    return KnmError("carrier_not_found", 400, f"carrier module {module} is not known", module)


def internal_error() -> KnmError:
    return KnmError("internal_error", 500, "internal_error")


def unspecified(reason: str, cause: Any = None) -> KnmError:
    """KAZOO's catch-all "funky 500": the reason name becomes the message."""
    return KnmError("unspecified_fault", 500, reason, _stringify(cause))
