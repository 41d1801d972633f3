"""``knm.services.dispatch`` with a fake broker: where each share runs, what is published, the
retries and re-queues it decides, with no server (the store and the operations are faked too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from carriers.registry import CarrierRegistry
from carriers.retry import CircuitOpenError
from config.settings import Settings
from knm.domain import errors
from knm.domain.batch import Batch
from knm.domain.number import PhoneNumber
from knm.services import dispatch
from knm.services import numbers_requests as requests
from knm.services.dispatch import Done, Forwarded, Requeue, Share
from knm.services.events import NumberEvent
from knm.services.numbers_requests import NumbersRequest, Operation

ACCOUNT = "a0" * 16
LOCAL = "+13125550101"
TELNYX = "+16465550102"
INUM = "+13035550103"
MODULES = {LOCAL: "knm_local", TELNYX: "knm_telnyx", INUM: "knm_inum"}


@dataclass
class FakeBroker:
    """The two methods dispatch calls, recorded."""

    published: list[dict[str, Any]] = field(default_factory=list)
    emitted: list[tuple[list[NumberEvent], str | None]] = field(default_factory=list)

    def publish(
        self,
        task: str,
        kwargs: dict[str, Any],
        queue: str,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> None:
        self.published.append(
            {"task": task, "kwargs": kwargs, "queue": queue, "id": task_id, "in": countdown}
        )

    def emit(self, events: Sequence[NumberEvent], reply_to: str | None) -> None:
        self.emitted.append((list(events), reply_to))


class FakeOutcomes:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def for_request(self, request_id: str) -> list[dict[str, Any]]:
        return [r for (rid, _), r in self.records.items() if rid == request_id]

    def get_record(self, request_id: str, part: str) -> dict[str, Any] | None:
        return self.records.get((request_id, part))

    def put(
        self, request_id: str, part: str, operation: str, result: dict[str, Any], **kw: Any
    ) -> None:
        self.records[(request_id, part)] = {"result": result, "part": part, **kw}


class FakeKeys:
    def __init__(self) -> None:
        self.claimed: set[str] = set()

    def claim_fresh(self, request_id: str, **_: Any) -> tuple[str | None, bool]:
        fresh = request_id not in self.claimed
        self.claimed.add(request_id)
        return None, fresh

    def claim(self, request_id: str, **kw: Any) -> str | None:
        return self.claim_fresh(request_id, **kw)[0]


@pytest.fixture
def knm() -> Any:
    settings = Settings(task_max_retries=2, carrier_retry_base_s=1, carrier_retry_max_s=4)
    registry = CarrierRegistry()
    return SimpleNamespace(
        settings=settings,
        request_keys=FakeKeys(),
        outcomes=FakeOutcomes(),
        dead_letters=SimpleNamespace(put=lambda *a: knm_letters.append(a)),
        numbers=SimpleNamespace(carriers=registry),
        # max_in 0: no number fits one share read, so each step reads (and fakes) its own
        store=SimpleNamespace(find_numbers=lambda numbers: {}, max_in=0),
    )


#: What the fake dead-letter store received.
knm_letters: list[tuple[Any, ...]] = []
#: How the fake operation treats a number: "breaker" (raises), "transient" (fails retryably).
BEHAVIOUR: dict[str, str] = {}


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Routes by the table above; runs succeed (or do what ``behaviour`` says)."""
    runs: list[list[str]] = []
    knm_letters.clear()

    def routes(knm: Any, op: Operation, request: NumbersRequest, docs: Any = None) -> Any:
        out: dict[str | None, list[str]] = {}
        for number in request.numbers:
            out.setdefault(MODULES.get(number), []).append(number)
        return out

    def run(knm: Any, op: Operation, request: NumbersRequest, request_id: Any = None) -> Batch:
        runs.append(list(request.numbers))
        batch = Batch()
        for number in request.numbers:
            behaviour = BEHAVIOUR.get(number)
            if behaviour == "breaker":
                raise CircuitOpenError(MODULES[number], 0.2)
            if behaviour == "transient":
                batch.fail(number, errors.by_carrier(number, "503", retryable=True))
                continue
            registry = knm.numbers.carriers
            pn = PhoneNumber.new(number, MODULES[number], modules=registry.modules("knm_local"))
            batch.succeed(pn)
        return batch

    monkeypatch.setattr(requests, "carrier_routes", routes)
    monkeypatch.setattr(requests, "run", run)
    monkeypatch.setattr(requests, "carrier_refusal", lambda knm, request: None)
    monkeypatch.setattr(dispatch, "get_settings", lambda: Settings(task_max_retries=2))
    BEHAVIOUR.clear()
    return runs


def _request(*numbers: str) -> NumbersRequest:
    return NumbersRequest(numbers=list(numbers), account=ACCOUNT)


def _route(knm: Any, broker: FakeBroker, *numbers: str, queue: str = "knm") -> Any:
    return dispatch.route_request(
        knm, broker, Operation.ACTIVATE, _request(*numbers), task_id="t1", queue=queue
    )


def test_a_local_carrier_runs_where_received_in_one_hop(knm: Any, fakes: list[list[str]]) -> None:
    broker = FakeBroker()
    decision = _route(knm, broker, LOCAL)
    assert isinstance(decision, Done)
    assert list(decision.result["succeeded"]) == [LOCAL]
    assert broker.published == []
    assert fakes == [[LOCAL]]
    assert len(knm.outcomes.records) == 1  # recorded before the message is acknowledged
    [(events, _reply_to)] = broker.emitted
    assert [(e.number, e.outcome) for e in events] == [(LOCAL, "succeeded")]


def test_a_provider_share_is_handed_to_its_queue_under_the_callers_id(
    knm: Any, fakes: list[list[str]]
) -> None:
    broker = FakeBroker()
    decision = _route(knm, broker, TELNYX)
    assert decision == Forwarded("carrier.knm_telnyx")
    assert fakes == []  # nothing ran here
    [message] = broker.published
    assert (message["task"], message["queue"], message["id"]) == (
        "knm.carrier.run",
        "carrier.knm_telnyx",
        "t1",
    )
    assert message["kwargs"]["module"] == "knm_telnyx"
    assert message["kwargs"]["previous"] is None
    assert "then" not in message["kwargs"]


def test_a_producer_naming_the_carrier_queue_is_served_there(
    knm: Any, fakes: list[list[str]]
) -> None:
    broker = FakeBroker()
    decision = _route(knm, broker, TELNYX, queue="carrier.knm_telnyx")
    assert isinstance(decision, Done)
    assert list(decision.result["succeeded"]) == [TELNYX]
    assert broker.published == []


def test_a_number_on_another_carriers_queue_is_forwarded_to_its_own(knm: Any) -> None:
    broker = FakeBroker()
    decision = _route(knm, broker, TELNYX, queue="carrier.knm_inum")
    assert decision == Forwarded("carrier.knm_telnyx")
    assert [m["queue"] for m in broker.published] == ["carrier.knm_telnyx"]


def test_shares_of_several_carriers_chain_behind_the_local_one(
    knm: Any, fakes: list[list[str]]
) -> None:
    broker = FakeBroker()
    decision = _route(knm, broker, TELNYX, INUM, LOCAL)
    assert decision == Forwarded("carrier.knm_inum")
    assert fakes == [[LOCAL]]
    [message] = broker.published
    kwargs = message["kwargs"]
    assert list(kwargs["previous"]["succeeded"]) == [LOCAL]
    assert kwargs["then"] == [{"module": "knm_telnyx", "payload": _request(TELNYX).to_payload()}]

    # the inum worker runs its share and publishes the next under the same id
    nxt = FakeBroker()
    then = [Share.from_json(s) for s in kwargs["then"]]
    decision = dispatch.run_carrier_share(
        knm,
        nxt,
        Operation.ACTIVATE,
        kwargs["payload"],
        "t1",
        "knm_inum",
        previous=kwargs["previous"],
        then=then,
        transient_attempts=0,
        task_id="t1",
    )
    assert decision == Forwarded("carrier.knm_telnyx")
    [last] = nxt.published
    assert sorted(last["kwargs"]["previous"]["succeeded"]) == sorted([LOCAL, INUM])
    assert "then" not in last["kwargs"]

    # the last share answers the caller with every share's result
    done = dispatch.run_carrier_share(
        knm,
        FakeBroker(),
        Operation.ACTIVATE,
        last["kwargs"]["payload"],
        "t1",
        "knm_telnyx",
        previous=last["kwargs"]["previous"],
        then=[],
        transient_attempts=0,
        task_id="t1",
    )
    assert isinstance(done, Done)
    assert sorted(done.result["succeeded"]) == sorted([LOCAL, INUM, TELNYX])


def test_a_redelivered_request_reruns_nothing_recorded(knm: Any, fakes: list[list[str]]) -> None:
    first = _route(knm, FakeBroker(), LOCAL)
    again = _route(knm, FakeBroker(), LOCAL)
    assert isinstance(first, Done)
    assert again == first
    assert fakes == [[LOCAL]]


def test_an_open_breaker_requeues_without_spending_an_attempt(knm: Any) -> None:
    BEHAVIOUR[TELNYX] = "breaker"
    outcome = dispatch.run_share(
        knm, FakeBroker(), Operation.ACTIVATE, _request(TELNYX), "r1", "knm_telnyx",
        transient_attempts=1,
    )  # fmt: skip
    assert outcome == Requeue(dispatch.BREAKER_MIN_WAIT_S, 1, breaker=True)
    assert knm.outcomes.records == {}


def test_transient_failures_are_retried_then_dead_lettered(knm: Any) -> None:
    BEHAVIOUR[TELNYX] = "transient"
    broker = FakeBroker()
    outcome = dispatch.run_share(
        knm, broker, Operation.ACTIVATE, _request(TELNYX), "r1", "knm_telnyx"
    )
    assert isinstance(outcome, Requeue)
    assert (outcome.transient_attempts, outcome.breaker) == (1, False)
    assert knm.outcomes.records == {}
    assert broker.emitted == []
    # the retries used up: recorded as failed, with a dead letter
    last = dispatch.run_share(
        knm, broker, Operation.ACTIVATE, _request(TELNYX), "r1", "knm_telnyx",
        transient_attempts=2,
    )  # fmt: skip
    assert isinstance(last, dict)
    assert list(last["failed"]) == [TELNYX]
    assert len(knm_letters) == 1
    assert len(knm.outcomes.records) == 1


def test_an_inline_share_needing_a_retry_goes_on_as_a_delayed_share(knm: Any) -> None:
    BEHAVIOUR[TELNYX] = "transient"
    broker = FakeBroker()
    decision = _route(knm, broker, TELNYX, queue="carrier.knm_telnyx")
    assert decision == Forwarded("carrier.knm_telnyx")
    [message] = broker.published
    assert message["kwargs"]["transient_attempts"] == 1
    assert message["in"] is not None
    assert message["in"] > 0


def test_queue_names() -> None:
    assert dispatch.module_of_queue("carrier.knm_telnyx") == "knm_telnyx"
    assert dispatch.module_of_queue("knm") is None
    assert dispatch.queue_of(None) == "knm"
    assert dispatch.queue_of("knm_local") == "carrier.knm_local"
