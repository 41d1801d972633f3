"""knm_telnyx against the sandbox over real HTTP: what only Telnyx does (the data an order keeps,
credentials, provisioning gates). The scenarios every carrier shares (search, buy, release and the
failure paths) are in test_carrier_contract.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database

from carriers.sandbox import SandboxClient
from knm.services.facade import Knm
from tests.carriers_rig import (
    WRONG_SECRET,
    assert_provisioning_gates,
    bought,
    case_of,
    open_account,
    search_numbers,
)

pytestmark = pytest.mark.integration

MODULE = "knm_telnyx"


def test_the_order_keeps_the_search_data(knm: Knm, sandbox: SandboxClient) -> None:
    pn = bought(knm, MODULE)
    assert pn.carrier_data["order_id"]
    assert pn.carrier_data["number_e164"] == pn.number  # search data kept (existing keys win)


def test_wrong_credentials_fail_the_search_and_never_leak(
    wrong_secret: Callable[[str], Knm], sandbox: SandboxClient, caplog: pytest.LogCaptureFixture
) -> None:
    knm = wrong_secret("KNM_CARRIERS__TELNYX__TOKEN")
    open_account(knm)
    assert search_numbers(knm, MODULE) == []
    assert sandbox.requests("telnyx") == {"search": 1}  # a 401 is not retried
    assert WRONG_SECRET not in caplog.text


def test_provisioning_gates(
    mongo_db: Database[dict[str, Any]], sandbox_env: dict[str, str], sandbox: SandboxClient
) -> None:
    assert_provisioning_gates(mongo_db, sandbox, case_of(MODULE), sandbox_provisioning=True)
