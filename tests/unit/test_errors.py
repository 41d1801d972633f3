"""KAZOO's error objects: names, codes, messages, causes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from knm.domain import errors
from knm.domain.errors import KnmError

NUM = "+15559871234"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            errors.number_is_porting(NUM),
            {
                "code": 400,
                "error": "number_is_porting",
                "message": f"number {NUM} is porting",
                "cause": NUM,
            },
        ),
        (
            errors.number_exists(NUM),
            {
                "code": 409,
                "error": "number_exists",
                "message": f"number {NUM} already exists",
                "cause": NUM,
            },
        ),
        (
            errors.unauthorized(),
            {
                "code": 403,
                "error": "forbidden",
                "message": "requestor is unauthorized to perform operation",
            },
        ),
        (
            errors.unauthorized("can not assign to self"),
            {
                "code": 403,
                "error": "forbidden",
                "message": "requestor is unauthorized to perform operation",
                "cause": "can not assign to self",
            },
        ),
        (
            errors.no_change_required(NUM),
            {
                "code": 400,
                "error": "no_change_required",
                "message": "no change required",
                "cause": NUM,
            },
        ),
        (
            errors.invalid_state_transition("available", "available"),
            {
                "code": 400,
                "error": "invalid_state_transition",
                "message": "invalid state transition",
                "cause": "from available to available",
            },
        ),
        (
            errors.invalid_state_transition(None, "reserved"),
            {
                "code": 400,
                "error": "invalid_state_transition",
                "message": "invalid state transition",
                "cause": "from (nothing) to reserved",
            },
        ),
        (
            errors.invalid_state_transition("'MDN'", "reserved"),
            {
                "code": 400,
                "error": "invalid_state_transition",
                "message": "invalid state transition",
                "cause": "from 'MDN' to reserved",
            },
        ),
        (
            errors.invalid_state_transition(),
            {
                "code": 400,
                "error": "invalid_state_transition",
                "message": "invalid state transition",
            },
        ),
        (
            errors.assign_failure(),
            {
                "code": 400,
                "error": "assign_failure",
                "message": "invalid account to assign to",
                "cause": "field_undefined",
            },
        ),
        (
            errors.invalid("'blipblop' is not known by the system"),
            {
                "code": 400,
                "error": "invalid",
                "message": "invalid",
                "cause": "'blipblop' is not known by the system",
            },
        ),
        (
            errors.by_carrier(NUM),
            {
                "code": 500,
                "error": "unspecified_fault",
                "message": "fault by carrier",
                "cause": NUM,
            },
        ),
        (
            errors.internal_error(),
            {"code": 500, "error": "internal_error", "message": "internal_error"},
        ),
        (
            errors.unspecified("database_error", "conflict"),
            {
                "code": 500,
                "error": "unspecified_fault",
                "message": "database_error",
                "cause": "conflict",
            },
        ),
        (
            errors.unspecified("carrier_not_specified"),
            {"code": 500, "error": "unspecified_fault", "message": "carrier_not_specified"},
        ),
        (
            errors.carrier_not_found("knm_pacwest"),
            {
                "code": 400,
                "error": "carrier_not_found",
                "message": "carrier module knm_pacwest is not known",
                "cause": "knm_pacwest",
            },
        ),
    ],
    ids=lambda v: v.error if isinstance(v, KnmError) else "",
)
def test_to_json(error: KnmError, expected: dict[str, Any]) -> None:
    """Error objects carry error, code, message and cause; absent ones are null (CLI contract)."""
    assert error.to_json() == {"cause": None, "message": None, "code": None, **expected}
    assert list(error.to_json()) == ["error", "code", "message", "cause"]
    assert not error.is_plain


@pytest.mark.parametrize(
    ("factory", "name"),
    [(errors.not_found, "not_found"), (errors.not_reconcilable, "not_reconcilable")],
)
def test_plain_reasons(factory: Any, name: str) -> None:
    error = factory()
    assert error.is_plain
    assert error.to_json() == {"error": name}
    assert error.code is None


class TestCauseStringification:
    def test_object_cause_is_json_encoded(self) -> None:
        error = errors.assign_failure({"reason": "db", "status": 500})
        assert error.to_json()["cause"] == '{"reason": "db", "status": 500}'
        assert json.loads(error.to_json()["cause"]) == {"reason": "db", "status": 500}

    def test_list_cause_is_json_encoded(self) -> None:
        assert errors.unspecified("billing_issue", [1, "a"]).to_json()["cause"] == '[1, "a"]'

    def test_scalar_cause_is_stringified(self) -> None:
        assert errors.unspecified("not_enough_credit", 42).to_json()["cause"] == "42"
        assert errors.assign_failure("field_undefined").to_json()["cause"] == "field_undefined"

    def test_multiple_choice(self) -> None:
        cause = {
            "cause": {"street_address": "1 Main"},
            "details": [{"street_address": "1 Main N"}, {"street_address": "1 Main S"}],
            "message": "more than one address found",
        }
        out = errors.unspecified("multiple_choice", cause).to_json()
        assert out["error"] == "unspecified_fault"
        assert out["code"] == 500
        assert out["message"] == "multiple_choice"
        assert json.loads(out["cause"]) == cause

    def test_by_carrier_with_detail(self) -> None:
        out = errors.by_carrier(NUM, "HTTP 502").to_json()
        assert out["message"] == "fault by carrier"
        assert json.loads(out["cause"]) == {"number": NUM, "detail": "HTTP 502"}


class TestKnmError:
    def test_is_an_exception_with_the_message(self) -> None:
        with pytest.raises(KnmError, match="requestor is unauthorized") as caught:
            raise errors.unauthorized()
        assert caught.value.code == 403

    def test_plain_exception_text_is_the_name(self) -> None:
        assert str(errors.not_found()) == "not_found"

    def test_equality_and_hash_by_wire_form(self) -> None:
        assert errors.number_exists(NUM) == errors.number_exists(NUM)
        assert errors.number_exists(NUM) != errors.number_exists("+1")
        assert errors.number_exists(NUM) != "number_exists"
        assert len({errors.not_found(), errors.not_found(), errors.unauthorized()}) == 2

    def test_repr(self) -> None:
        assert repr(errors.not_found()) == "KnmError({'error': 'not_found'})"

    def test_json_serialisable(self) -> None:
        for error in (errors.unauthorized(), errors.assign_failure({"a": 1}), errors.not_found()):
            assert json.loads(json.dumps(error.to_json())) == error.to_json()
