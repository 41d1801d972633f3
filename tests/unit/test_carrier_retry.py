"""The retry module on its own (no server, a fake clock, deterministic jitter): the backoff
formula, the one-request retry loop, and the send-then-confirm loop of non-idempotent calls."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from carriers.retry import (
    AmbiguousCallError,
    FailureKind,
    MalformedAnswerError,
    PermanentCallError,
    ProviderRefusalError,
    RetryPolicy,
    SendThenConfirm,
    TransientCallError,
    UnresolvedOutcomeError,
    ask,
    backoff_delay,
    call_with_retries,
)

C = "knm_test"


# ---------------------------------------------------------------------------- backoff
def test_backoff_doubles_per_try_up_to_the_cap() -> None:
    ceilings = [backoff_delay(n, 0.5, 6.0, rng=lambda: 1.0) for n in range(1, 7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]


def test_backoff_jitter_is_a_share_of_the_ceiling_drawn_from_the_random_source() -> None:
    draws = iter([0.25, 0.0, 0.999])
    assert [backoff_delay(3, 1.0, 60.0, rng=lambda: next(draws)) for _ in range(3)] == [
        1.0,
        0.0,
        pytest.approx(3.996),
    ]


def test_backoff_never_waits_less_than_its_floor() -> None:
    assert backoff_delay(1, 10.0, 600.0, min_s=0.1, rng=lambda: 0.0) == 0.1
    assert backoff_delay(1, 10.0, 600.0, min_s=0.1, rng=lambda: 0.5) == 5.0


def test_backoff_draws_from_random_random_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.5)
    assert backoff_delay(4, 1.0, 60.0) == 4.0


def test_the_policy_waits_the_backoff_and_retry_after_wins() -> None:
    policy = RetryPolicy(max_attempts=4, base_s=2.0, max_s=5.0, rng=lambda: 0.5)
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 2.5]
    assert policy.delay(2, retry_after=9.0) == 9.0
    assert policy.delay(4) is None


# ---------------------------------------------------------------------------- one request
def test_call_with_retries_masks_reasons_and_counts_tries() -> None:
    slept: list[float] = []
    tries: list[int] = []

    def send(number: int) -> httpx.Response:
        tries.append(number)
        raise httpx.ConnectError("no route to user:pw@host")

    with pytest.raises(TransientCallError) as caught:
        call_with_retries(
            send,
            carrier=C,
            idempotent=False,  # not sent: safe to send again, whatever the call
            policy=RetryPolicy(max_attempts=3, base_s=1.0, max_s=10.0, rng=lambda: 1.0),
            sleep=slept.append,
            mask=lambda text: text.replace("pw", "***"),
        )
    assert tries == [1, 2, 3]
    assert slept == [1.0, 2.0]
    assert caught.value.kind is FailureKind.NOT_SENT
    assert caught.value.reason == "ConnectError: no route to user:***@host (after 3 attempts)"


# ---------------------------------------------------------------------------- send, confirm
class Provider:
    """A scripted provider: each send and each question takes the next step of its script
    (a value to return, or an exception to raise); ``log`` keeps the order of everything."""

    def __init__(self, sends: list[Any], answers: list[Any] | None = None) -> None:
        self.sends = list(sends)
        self.answers = list(answers or [])
        self.log: list[str] = []

    def send(self) -> Any:
        self.log.append("send")
        return self._step(self.sends)

    def confirm(self) -> Any:
        self.log.append("ask")
        return self._step(self.answers)

    def sleep(self, seconds: float) -> None:
        self.log.append(f"sleep {seconds:g}")

    @staticmethod
    def _step(script: list[Any]) -> Any:
        step = script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def _loop(provider: Provider, *, max_attempts: int = 4, ask_first: bool = False) -> SendThenConfirm:
    policy = RetryPolicy(max_attempts=max_attempts, base_s=1.0, max_s=30.0, rng=lambda: 1.0)
    return SendThenConfirm(C, policy, provider.sleep, label="order +1415", ask_first=ask_first)


def _timeout() -> AmbiguousCallError:
    return AmbiguousCallError(C, "ReadTimeout: timed out", FailureKind.AMBIGUOUS)


def test_a_change_that_succeeds_is_sent_once_and_nothing_is_asked() -> None:
    provider = Provider(["done"])
    loop = _loop(provider)
    assert loop.run(provider.send, provider.confirm) == "done"
    assert provider.log == ["send"]
    assert (loop.reconciled, loop.uncertain) == (False, False)


def test_after_an_ambiguous_failure_the_provider_is_asked_before_anything_is_resent() -> None:
    provider = Provider([_timeout()], answers=["it is ours"])
    loop = _loop(provider)
    assert loop.run(provider.send, provider.confirm) == "it is ours"
    assert provider.log == ["send", "sleep 1", "ask"]  # backoff, then the question, no resend
    assert (loop.reconciled, loop.uncertain) == (True, True)


def test_a_change_that_did_not_take_effect_is_sent_again_after_the_question() -> None:
    provider = Provider([_timeout(), _timeout(), "done"], answers=[None, None])
    loop = _loop(provider)
    assert loop.run(provider.send, provider.confirm) == "done"
    assert provider.log == ["send", "sleep 1", "ask", "send", "sleep 2", "ask", "send"]
    assert (loop.reconciled, loop.uncertain) == (False, True)


def test_an_unreadable_answer_is_ambiguous_too() -> None:
    provider = Provider([MalformedAnswerError(C, "empty body")], answers=["it is ours"])
    assert _loop(provider).run(provider.send, provider.confirm) == "it is ours"
    assert provider.log == ["send", "sleep 1", "ask"]


def test_ambiguous_failures_that_use_up_the_attempts_are_transient_and_ambiguous() -> None:
    provider = Provider([_timeout()] * 3, answers=[None, None])
    loop = _loop(provider, max_attempts=3)
    with pytest.raises(TransientCallError) as caught:
        loop.run(provider.send, provider.confirm)
    assert caught.value.kind is FailureKind.AMBIGUOUS
    assert caught.value.reason == "ReadTimeout: timed out (after 3 attempts)"
    assert provider.log == ["send", "sleep 1", "ask", "send", "sleep 2", "ask", "send"]
    assert loop.uncertain


def test_a_question_without_an_answer_leaves_the_outcome_unknown_and_sends_nothing() -> None:
    provider = Provider(
        [_timeout()], answers=[PermanentCallError(C, "HTTP 404", FailureKind.PERMANENT)]
    )
    with pytest.raises(UnresolvedOutcomeError) as caught:
        _loop(provider).run(provider.send, provider.confirm)
    assert caught.value.kind is FailureKind.AMBIGUOUS
    assert caught.value.reason == (
        "cannot tell whether an earlier attempt took effect "
        "(the attempt sent: ReadTimeout: timed out): HTTP 404"
    )
    assert provider.log == ["send", "sleep 1", "ask"]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ("it is ours", "it is ours"),
        (None, "refused"),
        (TransientCallError(C, "x", FailureKind.NOT_SENT), "refused"),
    ],
)
def test_a_refusal_after_an_ambiguous_attempt_asks_whether_that_attempt_worked(
    answer: Any, outcome: str
) -> None:
    provider = Provider([_timeout(), ProviderRefusalError(C, "number taken")], [None, answer])
    loop = _loop(provider)
    if outcome == "refused":
        with pytest.raises(ProviderRefusalError):
            loop.run(provider.send, provider.confirm)
        assert not loop.reconciled
    else:
        assert loop.run(provider.send, provider.confirm) == outcome
        assert loop.reconciled
    assert provider.log == ["send", "sleep 1", "ask", "send", "ask"]


def test_a_refusal_with_nothing_uncertain_before_it_is_final() -> None:
    provider = Provider([ProviderRefusalError(C, "number taken")])
    with pytest.raises(ProviderRefusalError):
        _loop(provider).run(provider.send, provider.confirm)
    assert provider.log == ["send"]


def test_a_failure_before_sending_is_not_uncertain_and_asks_nothing() -> None:
    provider = Provider([TransientCallError(C, "HTTP 503 (after 4 attempts)", FailureKind.REFUSED)])
    loop = _loop(provider)
    with pytest.raises(TransientCallError):
        loop.run(provider.send, provider.confirm)
    assert provider.log == ["send"]
    assert not loop.uncertain


@pytest.mark.parametrize(("answer", "log"), [("ours", ["ask"]), (None, ["ask", "send"])])
def test_an_earlier_unknown_outcome_is_asked_about_first(answer: Any, log: list[str]) -> None:
    provider = Provider(["done"], answers=[answer])
    loop = _loop(provider, ask_first=True)
    assert loop.run(provider.send, provider.confirm) == (answer or "done")
    assert provider.log == log
    assert loop.reconciled is (answer is not None)
    assert not loop.uncertain


def test_a_change_without_a_question_is_simply_sent_again() -> None:
    provider = Provider([_timeout(), "set"])
    assert _loop(provider).run(provider.send) == "set"
    assert provider.log == ["send", "sleep 1", "send"]


def test_ask_turns_any_failure_into_an_unknown_outcome() -> None:
    def refuse() -> None:
        raise ProviderRefusalError(C, "no such number")

    with pytest.raises(UnresolvedOutcomeError) as caught:
        ask(refuse, C)
    assert (
        caught.value.reason == "cannot tell whether an earlier attempt took effect: no such number"
    )
    assert ask(lambda: "yes", C) == "yes"
