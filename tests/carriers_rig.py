"""The carrier sandbox for tests: a real HTTP server on loopback, and knm pointed at it.

``sandbox`` (one server per test module, reset before each test) serves every fake provider;
``sandbox_env`` sets the environment ``knm sandbox serve`` prints plus a fast retry policy, so a
test's transient failures cost milliseconds; ``knm_on(mongo_db)`` is a ``Knm`` on a test's
database with those settings.

``CarrierCase``/``CASES`` describe each HTTP carrier integration for the scenarios they all share
(``tests/integration/test_carrier_contract.py``); ``open_account``, ``discover``, ``buy`` and
``ledger`` are the steps those scenarios and the per-carrier modules are written in;
``knm_with_carrier`` and the ``wrong_secret`` fixture vary one carrier's settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from carriers.coordination import reset_coordinators
from carriers.http import close_clients
from carriers.sandbox import Sandbox, SandboxClient
from carriers.sandbox.bandwidth2 import COMPLETE_AFTER_POLLS
from config.settings import Settings, reset_settings
from knm.domain.batch import Batch
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from knm.store.numbers import Store
from tests import workers_rig as rig

#: Real provider answers captured by KAZOO's tests.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "carriers"

#: Fast, bounded retries for tests: transient failures cost milliseconds, timeouts one second.
FAST_HTTP = {
    "KNM_CARRIER_HTTP__BACKOFF_BASE_S": "0.01",
    "KNM_CARRIER_HTTP__BACKOFF_MAX_S": "0.05",
    "KNM_CARRIER_HTTP__TIMEOUT_S": "1",
    "KNM_CARRIER_HTTP__CONNECT_TIMEOUT_S": "1",
    "KNM_CARRIER_HTTP__MAX_ATTEMPTS": "4",
    "KNM_CARRIER_HTTP__ORDER_LEASE_S": "5",
}


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[Sandbox]:
    if os.environ.get("KNM_TEST_NO_SERVERS"):
        pytest.fail(
            "the carrier sandbox is a server: a test that needs one belongs in tests/integration"
        )
    with Sandbox() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[SandboxClient]:
    client = SandboxClient(sandbox_server.url)
    client.reset()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def sandbox_env(
    sandbox_server: Sandbox, sandbox: SandboxClient, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {**sandbox_server.env(), **FAST_HTTP}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    close_clients()
    reset_coordinators()  # no breaker state or rate slots carried over from another test
    return env


def sandbox_worker_env(
    sandbox_server: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    broker: str,
    mongo_url: str,
    db_name: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The environment of a real worker buying from the sandbox (``FAST_HTTP`` and ``extra``
    on top); this test process gets the same settings, so its own knm sees the same carriers."""
    values = {**sandbox_server.env(), **FAST_HTTP, **extra}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    close_clients()
    reset_coordinators()
    return rig.worker_env(broker, mongo_url, db_name, data_dir, values)


def knm_on(db: Database[dict[str, Any]], **overrides: Any) -> Knm:
    """knm on ``db`` with the environment's settings (``sandbox_env``) and ``overrides``."""
    settings = Settings(**overrides) if overrides else Settings()
    store = Store(db)
    store.ensure_indexes()
    return Knm(store, settings)


@pytest.fixture
def knm(mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str]) -> Knm:
    return knm_on(mongo_db)


def knm_with_carrier(db: Database[dict[str, Any]], key: str, **changes: Any) -> Knm:
    """knm on ``db`` whose ``carriers.<key>`` section is the environment's with ``changes``
    (provisioning gates, a missing setting); the other carriers keep their defaults."""
    from config.carrier_settings import CarriersSettings

    base = getattr(Settings().carriers, key)
    return knm_on(db, carriers=CarriersSettings(**{key: base.model_copy(update=changes)}))


#: A credential no fake provider accepts; it must never reach a log or an error.
WRONG_SECRET = "wrong-secret-value"


@pytest.fixture
def wrong_secret(
    mongo_db: Database[dict[str, Any]],
    sandbox_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Callable[[str], Knm]:
    """``wrong_secret(variable)``: knm with the credential ``variable`` set to ``WRONG_SECRET``,
    every log record from then on captured by ``caplog`` (DEBUG)."""

    def with_wrong(variable: str) -> Knm:
        monkeypatch.setenv(variable, WRONG_SECRET)
        reset_settings()
        caplog.set_level("DEBUG")
        return knm_on(mongo_db)

    return with_wrong


# ============================================================================ the carrier cases
#: The account the carrier tests buy for.
ACCOUNT = "a" * 32


def _no_data(number: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class CarrierCase:
    """One HTTP carrier integration, as the scenarios every integration shares see it.

    Endpoint names are the sandbox's (``SandboxClient.requests``); every fake provider names its
    number search ``search``.
    """

    #: knm's carrier module (also the test id).
    module: str
    #: The sandbox's fake provider.
    provider: str
    #: The endpoint asked whether a number is ours (the reconciliation question).
    ask: str
    #: In the cause of a 401 answered to the order.
    auth_cause: str
    #: In the cause of a garbled answer to the order.
    malformed_cause: str
    #: A search prefix the sandbox has stock for.
    prefix: str = "415886"
    #: The endpoint that buys a number.
    order: str = "order"
    #: The endpoint of the upstream release; ``None``: disconnect sends nothing (KAZOO).
    release: str | None = None
    #: The endpoint polled after an order is accepted (Bandwidth2), and how many polls it takes.
    poll: str | None = None
    polls: int = 0
    #: The carrier-data key naming the order (kept by a rerun), and its value where it is fixed.
    order_key: str | None = None
    order_value: str | None = None
    #: Carrier-data entries a number keeps after a purchase was reconciled (nested dicts: a subset).
    reconciled_data: Callable[[str], dict[str, Any]] = field(default=_no_data, repr=False)
    #: The query string of the reconciliation question, where it carries the number.
    ask_query: Callable[[str], dict[str, str]] | None = field(default=None, repr=False)

    def requests(
        self, *, orders: int = 1, asks: int = 0, releases: int = 0, bought: bool = True
    ) -> dict[str, int]:
        """The sandbox's request counts after one search and a purchase that cost ``orders``
        order requests and ``asks`` questions (``bought``: it went through, so it was polled)."""
        counts = {"search": 1, self.order: orders, self.ask: asks}
        if self.poll is not None and bought:
            counts[self.poll] = self.polls
        if self.release is not None:
            counts[self.release] = releases
        return {endpoint: n for endpoint, n in counts.items() if n}


CASES: tuple[CarrierCase, ...] = (
    CarrierCase(
        module="knm_telnyx",
        provider="telnyx",
        ask="number",
        auth_cause="unauthenticated",
        malformed_cause="malformed JSON",
        order_key="order_id",
    ),
    CarrierCase(
        module="knm_vitelity",
        provider="vitelity",
        ask="listdids",
        auth_cause="unauthenticated",
        malformed_cause="failed_decode_resp",
        release="release",
    ),
    CarrierCase(
        module="knm_voip_innovations",
        provider="voip_innovations",
        ask="query",
        auth_cause="unauthenticated",
        malformed_cause="empty_response: malformed XML",
        release="release",
    ),
    CarrierCase(
        module="knm_bandwidth",
        provider="bandwidth",
        ask="number",
        auth_cause="authentication",
        malformed_cause="empty_response: malformed XML",
        reconciled_data=lambda number: {"number": {"e164": number}},
    ),
    CarrierCase(
        module="knm_bandwidth2",
        provider="bandwidth2",
        ask="order_lookup",
        auth_cause="Unable to acquire number: authentication",
        malformed_cause="Unable to acquire number: empty_response: malformed XML",
        poll="order_status",
        polls=COMPLETE_AFTER_POLLS,  # RECEIVED first, COMPLETE on the last poll
        # QUIRK kept: order_id is the customer order id (the acquiring account)
        order_key="order_id",
        order_value=ACCOUNT,
        reconciled_data=lambda number: {"order_id": ACCOUNT},
        ask_query=lambda number: {"tn": number[2:]},  # found by number: the POST's answer was lost
    ),
    CarrierCase(
        module="knm_other",
        provider="other",
        ask="status",
        auth_cause="lookup_failed: HTTP 401",
        malformed_cause="lookup_resp_error: malformed JSON",
        order_key="order_id",
        # the lost answer's opaque is unknown: the search's data stays
        reconciled_data=lambda number: {"rate_center": "SANDBOX"},
    ),
)


def case_of(module: str) -> CarrierCase:
    return next(case for case in CASES if case.module == module)


# ============================================================================ the shared steps
def open_account(knm: Knm) -> None:
    knm.create_account(ACCOUNT, "Buyer", allow_additions=True)


def search_numbers(
    knm: Knm, module: str, prefix: str = "415886", quantity: int = 3, query_id: str | None = None
) -> list[str]:
    """The numbers ``module`` offers for ``prefix`` (possibly none), all of them in discovery."""
    results = knm.search(
        SearchQuery(
            prefix=prefix,
            quantity=quantity,
            account_id=ACCOUNT,
            carriers=[module],
            query_id=query_id,
        )
    )
    assert {r.carrier_module for r in results} <= {module}
    assert {r.state for r in results} <= {NumberState.DISCOVERY}
    return [r.number for r in results]


def discover(
    knm: Knm, module: str, prefix: str = "415886", quantity: int = 3, query_id: str | None = None
) -> list[str]:
    """Like ``search_numbers``, and the sandbox offers some."""
    numbers = search_numbers(knm, module, prefix, quantity, query_id)
    assert numbers, "the sandbox offers numbers for this prefix"
    return numbers


def buy(knm: Knm, number: str, request_id: str | None = None) -> Batch:
    """Move ``number`` to ``ACCOUNT`` (a purchase, for a discovered number)."""
    return knm.numbers.move([number], ACCOUNT, Options(auth_by="system", request_id=request_id))


def bought(knm: Knm, module: str) -> PhoneNumber:
    """A number of ``module``'s, discovered and bought for ``ACCOUNT`` without a failure."""
    open_account(knm)
    number = discover(knm, module)[0]
    batch = buy(knm, number)
    assert batch.failed == {}, batch.failed
    return batch.succeeded[number]


def release(knm: Knm, number: str) -> Batch:
    return knm.numbers.release([number], Options(auth_by="system"))


def ledger(on: Knm | Database[dict[str, Any]], module: str, number: str) -> dict[str, Any]:
    """The provisioning ledger's document for ``number`` at ``module`` (knm's, or a database's)."""
    db = on.store.db if isinstance(on, Knm) else on
    doc = db["provisioning"].find_one({"_id": f"{module}:{number}"})
    assert doc is not None
    return doc


def last_event(doc: dict[str, Any]) -> str:
    return str(doc["events"][-1]["what"])


def releases(sandbox: SandboxClient, provider: str) -> dict[str, int]:
    """How many times the sandbox released each number of ``provider``."""
    return dict(sandbox.stats()["releases"].get(provider, {}))


def owned(sandbox: SandboxClient, provider: str) -> list[str]:
    """The numbers the sandbox account holds at ``provider``."""
    return list(sandbox.stats()["owned"].get(provider, []))


def assert_provisioning_gates(
    db: Database[dict[str, Any]], sandbox: SandboxClient, case: CarrierCase, **pretend: Any
) -> None:
    """KAZOO's provisioning gates for a gated carrier: with ``enable_provisioning``
    false and ``pretend`` (where ``sandbox_provisioning`` is not its default) a purchase succeeds
    without an order sent; with both flags false it is refused as ``provisioning_disabled``."""
    key = case.provider  # the carrier's settings section
    pretending = knm_with_carrier(db, key, enable_provisioning=False, **pretend)
    open_account(pretending)
    number = discover(pretending, case.module)[0]
    assert buy(pretending, number).failed == {}
    assert case.order not in sandbox.requests(case.provider)  # sandbox_provisioning: no HTTP

    refusing = knm_with_carrier(db, key, enable_provisioning=False, sandbox_provisioning=False)
    other = discover(refusing, case.module, "646555", query_id="gates")[0]
    error = buy(refusing, other).failed[other].to_json()
    assert error["message"] == "provisioning_disabled"
