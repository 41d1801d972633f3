"""The per-number batch (KAZOO's collection): one failure never stops the others."""

from __future__ import annotations

from typing import Any

import pytest

from knm.domain import errors
from knm.domain.batch import Batch
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber


def pn(number: str) -> PhoneNumber:
    return PhoneNumber(number=number, state=NumberState.AVAILABLE)


def render(p: PhoneNumber) -> dict[str, Any]:
    return {"id": p.number}


def test_empty() -> None:
    batch = Batch()
    assert batch.todo == []
    assert batch.succeeded == {}
    assert batch.failed == {}
    batch.finish()
    assert batch.to_json(render) == {"succeeded": {}, "failed": {}}


def test_step_fails_only_the_raising_number() -> None:
    numbers = [pn("+15550000001"), pn("+15550000002"), pn("+15550000003")]
    batch = Batch(numbers)
    seen: list[str] = []

    def fn(p: PhoneNumber) -> None:
        seen.append(p.number)
        if p.number == "+15550000002":
            raise errors.unauthorized()

    batch.step(fn)
    assert seen == ["+15550000001", "+15550000002", "+15550000003"]
    assert [p.number for p in batch.todo] == ["+15550000001", "+15550000003"]
    assert batch.failed == {"+15550000002": errors.unauthorized()}
    batch.finish()
    assert set(batch.succeeded) == {"+15550000001", "+15550000003"}
    assert batch.todo == []


def test_steps_chain_on_the_remaining_todo() -> None:
    batch = Batch([pn("+15550000001"), pn("+15550000002")])
    batch.step(lambda p: p.set_state(NumberState.RESERVED))

    def second(p: PhoneNumber) -> None:
        if p.number.endswith("1"):
            raise errors.no_change_required(p.number)

    batch.step(second)
    calls: list[str] = []
    batch.step(lambda p: calls.append(p.number))
    assert calls == ["+15550000002"]
    assert batch.failed["+15550000001"].error == "no_change_required"


def test_non_knm_errors_propagate() -> None:
    batch = Batch([pn("+15550000001")])

    def boom(_: PhoneNumber) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):  # a bug is not a per-number failure
        batch.step(boom)


def test_fail_removes_a_success() -> None:
    batch = Batch()
    p = pn("+15550000001")
    batch.succeed(p)
    batch.fail(p.number, errors.unspecified("database_error"))
    assert batch.succeeded == {}
    assert batch.failed[p.number].message == "database_error"


def test_failed_keyed_by_input() -> None:
    batch = Batch()
    batch.fail("1000", errors.not_reconcilable())
    batch.fail("+14156301234", errors.not_found())
    assert batch.to_json(render)["failed"] == {
        "+14156301234": {"error": "not_found"},
        "1000": {"error": "not_reconcilable"},
    }


def test_to_json_sorted_and_rendered() -> None:
    batch = Batch([pn("+15550000002"), pn("+15550000001")])
    batch.finish()
    batch.fail("+15550000009", errors.number_exists("+15550000009"))
    out = batch.to_json(render)
    assert list(out["succeeded"]) == ["+15550000001", "+15550000002"]
    assert out["succeeded"]["+15550000001"] == {"id": "+15550000001"}
    assert out["failed"]["+15550000009"]["code"] == 409


def test_later_failure_replaces_earlier() -> None:
    batch = Batch()
    batch.fail("+1", errors.not_found())
    batch.fail("+1", errors.unauthorized())
    failure: KnmError = batch.failed["+1"]
    assert failure.code == 403
