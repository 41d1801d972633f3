"""The authorization rules as pure functions: the carrier choice, reading an account, why a
number or a feature is refused, the scope of a request id, and the queues ``knm status`` finds.

No server: accounts are KAZOO's fixtures in an ``AccountDirectory``; the feature environment
never connects; the embedded broker's queue folder is a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from carriers.base import CarrierContext
from config.settings import Settings
from knm.domain import errors
from knm.domain.accounts import SYSTEM, Account, AccountDirectory, NumberManagerConfig
from knm.domain.number import NumberState, PhoneNumber
from knm.services import features
from knm.services import numbers_requests as requests
from knm.services.csv_actions import ACTIONS, row_error
from knm.services.features import FeatureEnv
from knm.services.numbers_requests import REQUEST_ID_PATTERN, NumbersRequest, Operation
from knm.store.system_config import SystemConfig
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    CHILD,
    MASTER,
    MODULES,
    RESELLER,
    UNRELATED,
    account_docs,
    number_doc,
)
from workers.queue_depths import _message_queue, carrier_queues, queue_depths

NUM = "+15551233322"
RELATION = "or one of its ancestors (nor system or a superduper admin)"
_CLIENT: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9", connect=False)
CTX = CarrierContext(_CLIENT["unused"], Settings())


def directory(**number_manager: NumberManagerConfig) -> AccountDirectory:
    out = []
    for account_id, doc in account_docs().items():
        account = Account.from_document(doc)
        if account_id in number_manager:
            account.number_manager = number_manager[account_id]
        out.append(account)
    return AccountDirectory(out)


# ============================================================================ accounts
@pytest.mark.parametrize(
    ("auth_by", "may"),
    [(SYSTEM, True), (MASTER, True), (RESELLER, False), (CHILD, False), (None, False)],
)
def test_only_admins_choose_a_carrier_module(auth_by: str | None, may: bool) -> None:
    assert directory().may_choose_carrier(auth_by) is may


@pytest.mark.parametrize(
    ("auth_by", "may"),
    [
        (SYSTEM, True),
        (MASTER, True),  # a superduper admin
        (RESELLER, True),  # an ancestor
        (CHILD, True),  # the account itself
        (ACCOUNT_4, False),  # a descendant
        (UNRELATED, False),
        (None, False),
    ],
)
def test_who_may_read_an_account(auth_by: str | None, may: bool) -> None:
    assert directory().may_read_account(auth_by, CHILD) is may


def test_refusals_name_the_relation_they_wanted() -> None:
    accounts = directory()
    owned = PhoneNumber(number=NUM, state=NumberState.IN_SERVICE, assigned_to=CHILD)
    assert (
        accounts.refusal(owned, UNRELATED, None)
        == f"account '{UNRELATED}' is not '{CHILD}' {RELATION}"
    )
    # unassigned: the account it goes to counts; without one only an admin
    free = PhoneNumber(number=NUM, state=NumberState.AVAILABLE)
    assert (
        accounts.refusal(free, CHILD, RESELLER)
        == f"account '{CHILD}' is not '{RESELLER}' {RELATION}"
    )
    assert accounts.refusal(free, CHILD, None) == (
        f"number {NUM} is assigned to no account: only system or a superduper admin may do this"
    )
    assert accounts.refusal(owned, None, None) == "the requester is unknown"
    assert accounts.visibility_refusal(owned, ACCOUNT_4) == (
        f"number {NUM} is in_service and account '{ACCOUNT_4}' is not its account '{CHILD}' "
        + RELATION
    )


# ============================================================================ features
def feature_env(auth_by: str | None = RESELLER, **kwargs: Any) -> FeatureEnv:
    return FeatureEnv(
        system=kwargs.pop("system", SystemConfig()),
        carrier_ctx=CTX,
        accounts=kwargs.pop("accounts", directory()),
        auth_by=auth_by,
    )


def record(**extra: Any) -> PhoneNumber:
    assigned = extra.pop("assigned_to", CHILD)
    return PhoneNumber.from_document(
        number_doc(
            NUM, "in_service", extra.pop("module", "knm_telnyx"), assigned_to=assigned, **extra
        ),
        MODULES,
    )


@pytest.mark.parametrize(
    ("number", "env", "feature", "reason"),
    [
        (
            {"pvt_features_allowed": ["cnam"]},
            {},
            "prepend",
            "not in the number's pvt_features_allowed",
        ),
        (
            {"assigned_to": None},
            {},
            "e911",
            "denied by the unassigned rule (unassigned numbers get no paid feature)",
        ),
        (
            {},
            {"system": SystemConfig(features_deny=["sms"])},
            "sms",
            "denied by the system's features deny list",
        ),
        (
            {},
            {"accounts": directory(**{RESELLER: NumberManagerConfig(features_deny=["prepend"])})},
            "prepend",
            f"denied by reseller '{RESELLER}' features.deny",
        ),
        (
            {"module": "knm_local"},
            {},
            "cnam",
            "denied by the local-number rule (no paid feature unless KNM_LOCAL_FEATURE_OVERRIDE)",
        ),
        (
            {},
            {},
            "carrier_name",
            "denied by the admin rule (only system or a superduper admin may use it)",
        ),
        ({}, {}, "no_such_feature", "not a known feature"),
    ],
)
def test_a_features_refusal_names_the_list_or_rule(
    number: dict[str, Any], env: dict[str, Any], feature: str, reason: str
) -> None:
    cause = features.unavailable_cause([feature], record(**number), feature_env(**env))
    assert cause == f"feature '{feature}' is not allowed on {NUM}: {reason}"


def test_an_admin_is_not_refused_carrier_name() -> None:
    env = feature_env(auth_by=SYSTEM)
    assert "carrier_name" in features.available_features(record(), env)


# ============================================================================ request ids
BASE = NumbersRequest(numbers=["+14155550100"], account=CHILD, auth_by=RESELLER)


def test_a_requests_scope_ignores_numbers_delivery_and_dry_run() -> None:
    scope = requests.request_scope(Operation.ACTIVATE, BASE)
    same = BASE.model_copy(
        update={"numbers": ["+14155550101"], "reply_to": "q", "dry_run": True, "request_id": "x"}
    )
    assert requests.request_scope(Operation.ACTIVATE, same) == scope
    # an explicit default is the same request as an omitted one
    explicit = NumbersRequest(numbers=BASE.numbers, account=CHILD, auth_by=RESELLER, merge=True)
    assert requests.request_scope(Operation.ACTIVATE, explicit) == scope


@pytest.mark.parametrize(
    "change",
    [
        {"auth_by": CHILD},
        {"account": ACCOUNT_4},
        {"public_fields": {"a": 1}},
        {"ported_in": True},
        {"carrier_module": "knm_local"},
        {"mdn": True},
    ],
)
def test_a_requests_scope_is_its_requester_and_options(change: dict[str, Any]) -> None:
    scope = requests.request_scope(Operation.ACTIVATE, BASE)
    assert requests.request_scope(Operation.ACTIVATE, BASE.model_copy(update=change)) != scope
    assert requests.request_scope(Operation.RESERVE, BASE) != scope


def test_a_request_key_can_never_be_sent_as_a_request_id() -> None:
    import re

    key = requests.request_key("abc:1", Operation.RELEASE, BASE)
    assert key.startswith("abc:1/")
    assert re.match(REQUEST_ID_PATTERN, key) is None
    # a job chunk's key has no "/": no request key equals it
    assert "/" not in "0123456789abcdef0123456789abcdef:0"


def test_documents_remember_the_key_and_show_the_id() -> None:
    pn = PhoneNumber(number=NUM)
    key = requests.request_key("abc", Operation.RELEASE, BASE)
    pn.stamp_request(key)
    assert (pn.request_id, pn.recent_requests) == ("abc", [key])
    assert pn.written_by(key)
    assert not pn.written_by("abc")  # the id alone (another scope's key) is not this request
    assert not pn.written_by(requests.request_key("abc", Operation.DELETE, BASE))
    pn.stamp_request("job:7")  # a CSV chunk's key
    assert pn.written_by("job:7")
    assert pn.recent_requests == ["job:7", key]


def test_the_conflict_error_is_409_and_never_retried() -> None:
    error = errors.request_id_conflict("why")
    assert error.to_json() == {
        "error": "request_id_conflict",
        "code": 409,
        "message": "request_id is already used by another request",
        "cause": "why",
    }
    assert error.retryable is False


# ============================================================================ CSV cells
def test_an_unknown_carrier_module_cell_is_carrier_not_found_naming_it() -> None:
    action = ACTIONS["import"]
    assert row_error(action, {"e164": "+14155550100", "carrier_module": "knm_telnyx"}) is None
    assert row_error(action, {"e164": "+14155550100", "carrier_module": "knm_voxbone"}) == (
        "carrier_not_found: carrier module knm_voxbone is not known"
    )
    assert row_error(action, {"e164": "", "carrier_module": "x", "ported_in": "y"}) == (
        "bad field(s) e164 ported_in; carrier_not_found: carrier module x is not known"
    )


# ============================================================================ queues
@pytest.mark.parametrize(
    ("name", "queue"),
    [
        ("1700_0b6e.carrier.knm_local.msg", "carrier.knm_local"),
        ("1700_0b6e.knm.msg", "knm"),
        ("1700_0b6e.celery.msg", "celery"),
        (".1700_0b6e.knm.msg.partial", None),
        ("1700_0b6e.carrier.knm_local.msg.partial", None),
        ("stray", None),
    ],
)
def test_the_queue_of_an_embedded_message_file(name: str, queue: str | None) -> None:
    assert _message_queue(name) == queue


def test_the_embedded_broker_lists_and_counts_carrier_queues(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    folder = tmp_path.resolve() / "broker" / "queue"
    folder.mkdir(parents=True)
    for i, queue in enumerate(
        ["carrier.knm_local", "carrier.knm_bogus", "carrier.knm_bogus", "knm"]
    ):
        (folder / f"{1700 + i}_0b6e{i}.{queue}.msg").write_text("{}")
    assert carrier_queues(settings) == ["carrier.knm_bogus", "carrier.knm_local"]
    assert queue_depths(settings, ["knm", "carrier.knm_local", "carrier.knm_bogus", "celery"]) == {
        "knm": 1,
        "carrier.knm_local": 1,
        "carrier.knm_bogus": 2,
        "celery": 0,
    }
