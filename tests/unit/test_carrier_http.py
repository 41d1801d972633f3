"""The carrier HTTP layer and its retry policy, over httpx's mock transport."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from carriers.http import (
    USER_AGENT,
    AmbiguousCallError,
    CarrierHttp,
    PermanentCallError,
    TransientCallError,
)
from carriers.retry import (
    FailureKind,
    RetryPolicy,
    classify_exception,
    classify_status,
    parse_retry_after,
)
from config.carrier_settings import CarrierHttpSettings

URL = "https://provider.example/api"
Step = httpx.Response | Exception


def _client(steps: list[Step], seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return httpx.Client(transport=httpx.MockTransport(handler), headers={"User-Agent": USER_AGENT})


def _http(
    steps: list[Step], *, secrets: tuple[str, ...] = (), max_attempts: int = 4
) -> tuple[CarrierHttp, list[httpx.Request], list[float]]:
    seen: list[httpx.Request] = []
    slept: list[float] = []
    settings = CarrierHttpSettings(max_attempts=max_attempts, backoff_base_s=1, backoff_max_s=3)
    http = CarrierHttp(
        "knm_test",
        settings,
        secrets=secrets,
        client=_client(steps, seen),
        sleep=slept.append,
        policy=RetryPolicy(max_attempts=max_attempts, base_s=1, max_s=3, rng=lambda: 1.0),
    )
    return http, seen, slept


# ---------------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), FailureKind.NOT_SENT),
        (httpx.ConnectTimeout("slow"), FailureKind.NOT_SENT),
        (httpx.PoolTimeout("busy"), FailureKind.NOT_SENT),
        (httpx.ReadTimeout("slow"), FailureKind.AMBIGUOUS),
        (httpx.RemoteProtocolError("closed"), FailureKind.AMBIGUOUS),
        (httpx.ReadError("reset"), FailureKind.AMBIGUOUS),
        (httpx.UnsupportedProtocol("ftp"), FailureKind.PERMANENT),
    ],
)
def test_transport_failures_are_classified(exc: httpx.HTTPError, kind: FailureKind) -> None:
    assert classify_exception(exc) is kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, FailureKind.REFUSED),
        (503, FailureKind.REFUSED),
        (500, FailureKind.AMBIGUOUS),
        (502, FailureKind.AMBIGUOUS),
        (504, FailureKind.AMBIGUOUS),
        (200, None),
        (401, None),
        (404, None),
    ],
)
def test_statuses_are_classified(status: int, kind: FailureKind | None) -> None:
    assert classify_status(status) is kind


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_doubles_up_to_the_cap_with_jitter_and_stops_at_max_attempts() -> None:
    draws = iter([1.0, 1.0, 1.0, 0.5])
    policy = RetryPolicy(max_attempts=5, base_s=0.5, max_s=1.5, rng=lambda: next(draws))
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 0.75]
    assert policy.delay(5) is None


def test_retry_after_wins_unless_it_is_too_long() -> None:
    policy = RetryPolicy(max_attempts=5, retry_after_max_s=60)
    assert policy.delay(1, retry_after=12) == 12
    assert policy.delay(1, retry_after=61) is None


# ---------------------------------------------------------------------------- calls
def test_a_read_is_retried_through_refusals_and_ambiguous_failures() -> None:
    http, seen, slept = _http(
        [
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.ReadTimeout("slow"),
            httpx.Response(502),
            httpx.Response(200, text="ok"),
        ]
    )
    response = http.call("GET", URL, idempotent=True)
    assert response.text == "ok"
    assert len(seen) == 4
    assert slept == [2.0, 2.0, 3.0]  # Retry-After, then 1 s doubling, capped at 3 s


def test_an_order_is_resent_only_when_the_provider_cannot_have_acted() -> None:
    http, seen, _slept = _http(
        [httpx.ConnectError("refused"), httpx.Response(429), httpx.Response(201)]
    )
    assert http.call("POST", URL, idempotent=False).status_code == 201
    assert len(seen) == 3


@pytest.mark.parametrize(
    "step", [httpx.ReadTimeout("slow"), httpx.Response(500), httpx.Response(504)]
)
def test_an_order_that_may_have_taken_effect_is_not_resent(step: Step) -> None:
    http, seen, slept = _http([step, httpx.Response(200)])
    with pytest.raises(AmbiguousCallError) as caught:
        http.call("POST", URL, idempotent=False)
    assert caught.value.kind is FailureKind.AMBIGUOUS
    assert len(seen) == 1
    assert slept == []


def test_permanent_answers_are_returned_for_the_carrier_to_judge() -> None:
    http, seen, _slept = _http([httpx.Response(401, text="no")])
    assert http.call("POST", URL, idempotent=False).status_code == 401
    assert len(seen) == 1


def test_a_permanent_transport_error_is_not_retried() -> None:
    http, seen, _slept = _http([httpx.UnsupportedProtocol("bad scheme")])
    with pytest.raises(PermanentCallError):
        http.call("GET", URL, idempotent=True)
    assert len(seen) == 1


def test_attempts_are_bounded() -> None:
    http, seen, slept = _http([httpx.Response(503)] * 3, max_attempts=3)
    with pytest.raises(TransientCallError, match=r"HTTP 503 \(after 3 attempts\)") as caught:
        http.call("GET", URL, idempotent=True)
    assert caught.value.status == 503
    assert len(seen) == 3
    assert len(slept) == 2


def test_a_retry_after_longer_than_allowed_fails_at_once() -> None:
    http, seen, slept = _http([httpx.Response(429, headers={"Retry-After": "3600"})])
    with pytest.raises(TransientCallError):
        http.call("GET", URL, idempotent=True)
    assert len(seen) == 1
    assert slept == []


def test_secrets_never_reach_error_texts() -> None:
    secret = "s3cr3t-token"
    http, _seen, _slept = _http(
        [httpx.ConnectError(f"cannot reach https://user:{secret}@host")] * 2,
        secrets=(secret,),
        max_attempts=2,
    )
    with pytest.raises(TransientCallError) as caught:
        http.call("GET", URL, idempotent=True)
    assert secret not in str(caught.value)
    assert "***" in caught.value.reason


def test_requests_name_knm_in_the_user_agent() -> None:
    http, seen, _slept = _http([httpx.Response(200)])
    http.call("GET", URL, idempotent=True)
    assert seen[0].headers["User-Agent"].startswith("knm/")


def test_one_pooled_client_per_carrier_per_process() -> None:
    settings = CarrierHttpSettings()
    first = CarrierHttp("knm_pool_a", settings)
    again = CarrierHttp("knm_pool_a", settings)
    other = CarrierHttp("knm_pool_b", settings)
    assert first.client is again.client
    assert first.client is not other.client
