"""KAZOO's eunit fixtures in knm's stored format, for the integration tests.

Accounts: MASTER (superduper admin, allow additions, reseller), RESELLER (allow additions,
reseller), CHILD, ACCOUNT_4 and UNRELATED (a valid 32-character id with no document).

Number documents use knm's stored format: ``pvt_carrier_module``, datetimes for
``pvt_created``/``pvt_modified`` and ``pvt_rev: 1``. The MongoDB wire server of the test rig costs
several milliseconds per inserted document, so tests load only the documents they need with
``load_kazoo(db, [numbers...])``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pymongo.database import Database

from carriers.registry import CarrierRegistry
from knm.domain.accounts import Account, NumberManagerConfig
from knm.domain.carrier_modules import CarrierModules

Doc = dict[str, Any]

#: What the built-in carrier modules are to the number rules, with KAZOO's default module
#: (records a test builds itself use it, as the services do with the registry's).
MODULES: Final[CarrierModules] = CarrierRegistry().modules("knm_local")

# ------------------------------------------------------------------------------------ accounts
MASTER: Final = "account0000000000000000000000001"
RESELLER: Final = "account0000000000000000000000002"
CHILD: Final = "account0000000000000000000000003"
ACCOUNT_4: Final = "account0000000000000000000000004"
UNRELATED: Final = "unrelated_account_b113394f16cb71"
#: A random 32-hex account id (no document), as knm_number_tests uses.
RANDOM_HEX: Final = "5f1c1a8b9e2d4c7fa0b3e6d9c2f5a8b1"

# ------------------------------------------------------------------------------------ numbers
TEST_CREATE_NUM: Final = "+15559871234"
TEST_AVAILABLE_NUM: Final = "+15551239876"
TEST_IN_SERVICE_NUM: Final = "+15551233322"
TEST_IN_SERVICE_MDN: Final = "+15551233324"
TEST_IN_SERVICE_BAD_CARRIER_NUM: Final = "+15551233337"
TEST_IN_SERVICE_WITH_HISTORY_NUM: Final = "+15551255693"
TEST_RESERVED_NUM: Final = "+14252151010"
TEST_PORT_IN_NUM: Final = "+14252151007"
TEST_PORT_IN2_NUM: Final = "+14252151008"
TEST_PORT_IN3_NUM: Final = "+14252151009"
TEST_NEW_PORT_NUM: Final = "+19042471591"
TEST_NEW_PORT_IN_NUM: Final = "+19042471592"
TEST_TELNYX_NUM: Final = "+14352154006"
TEST_VITELITY_NUM: Final = "+18122154006"
TEST_AVAILABLE_NON_LOCAL_NUM: Final = "+19162154006"
BW_EXISTING_DID: Final = "+14122065197"
TEST_EXISTING_TOLL: Final = "+18005551212"
TEST_OLD5_1_NUM: Final = "+19377038881"
TEST_OLD6_NUM: Final = "+12156774700"
TEST_OLD7_NUM: Final = "+13977031887"
TEST_OLD7_1_NUM: Final = "+13977031888"

#: The active port request listing TEST_NEW_PORT_NUM.
PORT_REQUEST_ID: Final = "port_request_0000000000000000001"

CREATED: Final = datetime(2017, 2, 7, 13, 20, 55, tzinfo=UTC)
MODIFIED: Final = datetime(2017, 2, 7, 16, 29, 15, tzinfo=UTC)


def account_docs(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Doc]:
    """The fixture account documents by id; ``overrides`` patches fields of chosen accounts."""
    accounts = [
        Account(
            id=MASTER,
            name="Master",
            tree=[],
            superduper_admin=True,
            allow_additions=True,
            is_reseller=True,
            reseller_id=MASTER,
            created=CREATED,
        ),
        Account(
            id=RESELLER,
            name="Reseller",
            parent=MASTER,
            tree=[MASTER],
            allow_additions=True,
            is_reseller=True,
            reseller_id=RESELLER,
            created=CREATED,
        ),
        Account(
            id=CHILD,
            name="Child",
            parent=RESELLER,
            tree=[MASTER, RESELLER],
            reseller_id=RESELLER,
            number_manager=NumberManagerConfig(carrier_modules=["knm_local", "knm_bandwidth2"]),
            created=CREATED,
        ),
        Account(
            id=ACCOUNT_4,
            name="Grandchild",
            parent=CHILD,
            tree=[MASTER, RESELLER, CHILD],
            reseller_id=RESELLER,
            created=CREATED,
        ),
    ]
    docs = {a.id: a.to_document() for a in accounts}
    for account_id, fields in (overrides or {}).items():
        docs[account_id].update(fields)
    return docs


def number_doc(
    number: str,
    state: str,
    module: str = "knm_local",
    *,
    assigned_to: str | None = None,
    previously_assigned_to: str | None = None,
    history: Iterable[str] = (),
    features: Mapping[str, Any] | None = None,
    used_by: str | None = None,
    public: Mapping[str, Any] | None = None,
    rev: int = 1,
    **private: Any,
) -> Doc:
    """A number document in knm's stored format (``private`` adds other ``pvt_*`` keys)."""
    if features is None:
        features = {"local": {}} if module in ("knm_local", "knm_mdn") else {}
    doc: Doc = dict(copy.deepcopy(dict(public or {})))
    doc.update(
        {
            "_id": number,
            "pvt_type": "number",
            "pvt_state": state,
            "pvt_carrier_module": module,
            "pvt_ported_in": False,
            "pvt_created": CREATED,
            "pvt_modified": MODIFIED,
            "pvt_rev": rev,
        }
    )
    optional: Doc = {
        "pvt_assigned_to": assigned_to,
        "pvt_previously_assigned_to": previously_assigned_to,
        "pvt_reserve_history": list(history),
        "pvt_features": copy.deepcopy(dict(features)),
        "pvt_used_by": used_by,
    }
    doc.update({k: v for k, v in optional.items() if v not in (None, [], {})})
    doc.update(copy.deepcopy(private))
    return doc


def _fixture_numbers() -> dict[str, Doc]:
    cnam = {"display_name": "KAZOO", "inbound_lookup": True}
    prepend = {"enabled": True, "name": "Vitelity", "number": "+1"}
    docs = [
        number_doc(
            TEST_AVAILABLE_NUM,
            "available",
            previously_assigned_to=RESELLER,
            public={"my_key": "my string"},
        ),
        number_doc(
            TEST_IN_SERVICE_NUM,
            "in_service",
            assigned_to=RESELLER,
            history=[RESELLER],
            used_by="callflow",
        ),
        number_doc(
            TEST_IN_SERVICE_MDN,
            "in_service",
            "knm_mdn",
            assigned_to=RESELLER,
            history=[RESELLER],
        ),
        number_doc(
            TEST_IN_SERVICE_BAD_CARRIER_NUM,
            "in_service",
            "knm_pacwest",
            assigned_to=RESELLER,
            history=[RESELLER],
            used_by="callflow",
        ),
        number_doc(
            TEST_IN_SERVICE_WITH_HISTORY_NUM,
            "in_service",
            assigned_to=RESELLER,
            history=[RESELLER, MASTER],
        ),
        number_doc(TEST_RESERVED_NUM, "reserved", assigned_to=RESELLER, history=[RESELLER]),
        number_doc(TEST_PORT_IN_NUM, "port_in", assigned_to=RESELLER, history=[RESELLER]),
        number_doc(TEST_PORT_IN2_NUM, "port_in", assigned_to=RESELLER, history=[RESELLER]),
        number_doc(
            TEST_PORT_IN3_NUM, "port_in", "knm_bandwidth2", assigned_to=RESELLER, history=[RESELLER]
        ),
        number_doc(
            TEST_TELNYX_NUM,
            "available",
            "knm_telnyx",
            assigned_to=RESELLER,
            history=[RESELLER],
            pvt_features_allowed=[
                "cnam",
                "e911",
                "failover",
                "force_outbound",
                "prepend",
                "ringback",
                "carrier_name",
            ],
            pvt_features_denied=["port", "failover"],
        ),
        number_doc(
            TEST_VITELITY_NUM,
            "in_service",
            "knm_vitelity",
            assigned_to=RESELLER,
            history=[RESELLER],
            features={
                "inbound_cnam": {"inbound_lookup": True},
                "outbound_cnam": {"display_name": "KAZOO"},
                "prepend": prepend,
            },
            public={"cnam": cnam, "prepend": prepend},
            pvt_features_allowed=["cnam", "e911", "force_outbound", "prepend", "carrier_name"],
        ),
        number_doc(
            TEST_AVAILABLE_NON_LOCAL_NUM,
            "available",
            "knm_telnyx",
            previously_assigned_to=RESELLER,
        ),
        number_doc(
            BW_EXISTING_DID,
            "discovery",
            "knm_bandwidth2",
            assigned_to=RESELLER,
            pvt_features_denied=["e911"],
        ),
        number_doc(TEST_EXISTING_TOLL, "available", assigned_to=RESELLER),
        number_doc(
            TEST_OLD5_1_NUM,
            "in_service",
            "knm_bandwidth2",
            assigned_to=RESELLER,
            features={
                "e911": {"street_address": "140 Main St", "locality": "Lake Lure"},
                "outbound_cnam": {"display_name": "KAZOO"},
            },
            public={
                "e911": {"street_address": "140 Main St", "locality": "Lake Lure"},
                "cnam": {"display_name": "KAZOO"},
            },
            pvt_features_allowed=["cnam", "e911", "force_outbound", "carrier_name"],
            pvt_features_denied=["failover"],
        ),
        number_doc(
            TEST_OLD6_NUM,
            "in_service",
            assigned_to=RESELLER,
            used_by="trunkstore",
            features={
                "failover": {"e164": "+14158867900"},
                "local": {},
                "prepend": {"enabled": True, "name": "pre"},
            },
            public={
                "failover": {"e164": "+14158867900"},
                "prepend": {"enabled": True, "name": "pre"},
            },
        ),
        number_doc(
            TEST_OLD7_NUM,
            "in_service",
            assigned_to=CHILD,
            history=[CHILD],
            used_by="trunkstore",
            features={
                "local": {},
                "inbound_cnam": {"inbound_lookup": True},
                "outbound_cnam": {"display_name": "CHILD"},
            },
        ),
        number_doc(
            TEST_OLD7_1_NUM,
            "in_service",
            "knm_vitelity",
            assigned_to=RESELLER,
            history=[RESELLER],
            used_by="callflow",
            features={"outbound_cnam": {"display_name": "RESELLER"}},
            public={"cnam": {"display_name": "RESELLER"}},
        ),
    ]
    return {doc["_id"]: doc for doc in docs}


_NUMBERS: Final[dict[str, Doc]] = _fixture_numbers()

#: Every fixture number that has a document.
FIXTURE_NUMBERS: Final[tuple[str, ...]] = tuple(_NUMBERS)


def fixture_doc(number: str) -> Doc:
    """A fresh copy of one fixture number document."""
    return copy.deepcopy(_NUMBERS[number])


def port_request_doc() -> Doc:
    """The active (``submitted``) port request of RESELLER listing TEST_NEW_PORT_NUM."""
    return {
        "_id": PORT_REQUEST_ID,
        "numbers": [TEST_NEW_PORT_NUM],
        "pvt_port_state": "submitted",
        "account_id": RESELLER,
    }


def load_kazoo(
    db: Database[Doc],
    numbers: Iterable[str] = (),
    *,
    accounts: bool = True,
    account_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    port_request: bool = False,
    extra: Iterable[Doc] = (),
) -> None:
    """Insert the chosen fixture numbers (plus ``extra`` docs), the accounts, the port request."""
    if accounts:
        db["accounts"].insert_many(list(account_docs(account_overrides).values()))
    docs = [fixture_doc(n) for n in numbers]
    docs.extend(copy.deepcopy(list(extra)))
    if docs:
        db["numbers"].insert_many(docs)
    if port_request:
        db["port_requests"].insert_one(port_request_doc())


# ------------------------------------------------------------------------------------ helpers
def stored(db: Database[Doc], number: str) -> Doc | None:
    """The number's stored document, or None."""
    return db["numbers"].find_one({"_id": number})


def forbidden(cause: str | None = None) -> Doc:
    """The wire form of KAZOO's ``unauthorized`` error; absent keys are omitted."""
    out: Doc = {
        "error": "forbidden",
        "code": 403,
        "message": "requestor is unauthorized to perform operation",
    }
    if cause is not None:
        out["cause"] = cause
    return out


def not_related(auth_by: str, owner: str) -> Doc:
    """The 403 of a requester that is not the number's account (or assignee) or an ancestor."""
    return forbidden(
        f"account '{auth_by}' is not '{owner}' or one of its ancestors "
        "(nor system or a superduper admin)"
    )


def hidden(number: str, state: str, auth_by: str, owner: str) -> Doc:
    """The 403 of a number the requester may not see (not available, and not its own)."""
    return forbidden(
        f"number {number} is {state} and account '{auth_by}' is not its account '{owner}' or "
        "one of its ancestors (nor system or a superduper admin)"
    )


def invalid_transition(cause: str | None) -> Doc:
    """The wire form of ``invalid_state_transition`` (cause ``from X to Y`` or none)."""
    out: Doc = {
        "error": "invalid_state_transition",
        "code": 400,
        "message": "invalid state transition",
    }
    if cause is not None:
        out["cause"] = cause
    return out


def number_exists(number: str) -> Doc:
    return {
        "error": "number_exists",
        "code": 409,
        "message": f"number {number} already exists",
        "cause": number,
    }


def number_is_porting(number: str) -> Doc:
    return {
        "error": "number_is_porting",
        "code": 400,
        "message": f"number {number} is porting",
        "cause": number,
    }


def no_change_required(number: str) -> Doc:
    return {
        "error": "no_change_required",
        "code": 400,
        "message": "no change required",
        "cause": number,
    }


ASSIGN_FAILURE: Final[Doc] = {
    "error": "assign_failure",
    "code": 400,
    "message": "invalid account to assign to",
    "cause": "field_undefined",
}
NOT_FOUND: Final[Doc] = {"error": "not_found"}
NOT_RECONCILABLE: Final[Doc] = {"error": "not_reconcilable"}


def failures(batch: Any) -> dict[str, Doc]:
    """A ``Batch``'s failures in their wire form, keyed as the batch keys them.

    Absent keys (``cause: null``) are dropped, so the expectations read the same whether the
    wire form omits them (KAZOO) or writes them as null.
    """
    return {
        key: {k: v for k, v in error.to_json().items() if v is not None}
        for key, error in batch.failed.items()
    }
