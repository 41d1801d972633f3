"""CSV jobs in process: create_job, run_chunk, fail_chunk, results.

Every action once with its per-row semantics, the row checks made at creation, the result file,
and what makes chunks safe to run twice. Jobs run here by calling ``run_chunk`` for each chunk,
as a worker's ``knm.jobs.chunk`` task does.

The accounts are KAZOO's fixtures (tests/fixtures_kazoo.py): MASTER (superduper admin) >
RESELLER (allowed additions) > CHILD > ACCOUNT_4.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from pymongo.database import Database

from config.settings import Settings
from knm.domain.number import to_gregorian_seconds
from knm.domain.options import Options
from knm.services.csv_files import write_csv
from knm.services.facade import InputError, Knm
from knm.services.jobs import (
    RESULT_HEADER,
    ChunkReport,
    Job,
    JobStatus,
    JobStore,
    create_job,
    fail_chunk,
    run_chunk,
)
from knm.services.listing import LISTING_COLUMNS
from knm.store.numbers import Store
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    CHILD,
    CREATED,
    MASTER,
    MODIFIED,
    RESELLER,
    TEST_IN_SERVICE_NUM,
    TEST_OLD7_NUM,
    Doc,
    load_kazoo,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

FORBIDDEN = "requestor is unauthorized to perform operation"
#: KAZOO's result file shows the message; knm adds the cause: the rule that refused the row.
RELATION = "or one of its ancestors (nor system or a superduper admin)"
LOCAL_RULE = "denied by the local-number rule (no paid feature unless KNM_LOCAL_FEATURE_OVERRIDE)"


def refused(cause: str) -> str:
    """A result row's 403: KAZOO's message, then why."""
    return f"{FORBIDDEN}: {cause}"


def hidden_from(number: str, state: str, auth_by: str, owner: str) -> str:
    """The 403 row of a number the requester may not see."""
    return refused(
        f"number {number} is {state} and account '{auth_by}' is not its account '{owner}' "
        + RELATION
    )


N = [f"+1415555{i:04d}" for i in range(200, 220)]


# ------------------------------------------------------------------------------ fixtures
def make_knm(mongo_db: Database[Doc], **settings: Any) -> Knm:
    store = Store(mongo_db)
    store.ensure_indexes()
    return Knm(store, Settings(**settings))


@pytest.fixture
def knm(mongo_db: Database[Doc]) -> Knm:
    load_kazoo(mongo_db)  # the accounts only
    return make_knm(mongo_db)


def csv_bytes(*lines: str) -> io.BytesIO:
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def submit(
    knm: Knm,
    action: str,
    *lines: str,
    account: str = CHILD,
    auth_by: str = "system",
    chunk_size: int = 1000,
) -> Job:
    source = csv_bytes(*lines) if lines else None
    return create_job(
        knm, action, source, account_id=account, auth_by=auth_by, chunk_size=chunk_size
    )


def run(knm: Knm, job: Job) -> list[ChunkReport]:
    """Run every chunk of ``job`` (a listing job has one), as the workers would."""
    return [run_chunk(knm, job.id, chunk) for chunk in range(job.chunks)]


def status(knm: Knm, job: Job) -> Job:
    current = JobStore(knm).get(job.id)
    assert current is not None
    return current


def results(knm: Knm, job: Job) -> list[dict[str, str]]:
    return list(JobStore(knm).result_rows(job.id))


def by_number(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["e164"]: row for row in rows}


def errors_of(rows: list[dict[str, str]]) -> dict[str, str]:
    return {row["e164"]: row["error"] for row in rows}


def done(knm: Knm, action: str, *lines: str, **kwargs: Any) -> tuple[Job, list[dict[str, str]]]:
    """Create and run a job; its final state and result rows."""
    job = submit(knm, action, *lines, **kwargs)
    run(knm, job)
    return status(knm, job), results(knm, job)


def load(knm: Knm, *docs: Doc) -> None:
    knm.store.numbers.insert_many(list(docs))


# ============================================================================ import
def test_import_by_an_admin_takes_the_carrier_module_and_state_cells(knm: Knm) -> None:
    job, rows = done(
        knm,
        "import",
        "e164,carrier_module,state,ported_in",
        f"{N[0]},knm_inventory,reserved,",
        f"{N[1]},,,",
        f"{N[2]},,,true",
        auth_by=MASTER,
    )
    assert job.status == JobStatus.SUCCEEDED, rows
    assert errors_of(rows) == {N[0]: "", N[1]: "", N[2]: ""}
    first = stored(knm.store.db, N[0])
    assert first is not None
    assert (first["pvt_carrier_module"], first["pvt_state"]) == ("knm_inventory", "reserved")
    assert first["pvt_assigned_to"] == CHILD  # the job's account (no account_id cell)
    second = stored(knm.store.db, N[1])
    assert second is not None
    assert (second["pvt_carrier_module"], second["pvt_state"]) == ("knm_local", "in_service")
    assert stored(knm.store.db, N[2])["pvt_ported_in"] is True  # type: ignore[index]
    listing = by_number(rows)
    assert listing[N[0]]["carrier_module"] == "knm_inventory"
    assert listing[N[0]]["state"] == "reserved"
    assert listing[N[2]]["ported_in"] == "true"


def test_import_by_a_non_admin_ignores_those_cells_and_uses_the_configured_carrier(
    mongo_db: Database[Doc],
) -> None:
    load_kazoo(mongo_db)
    knm = make_knm(mongo_db, import_defaults_to_carrier="knm_inventory")
    job, rows = done(
        knm,
        "import",
        "e164,carrier_module,state",
        f"{N[0]},knm_telnyx,available",
        f"{N[1]},,",
        auth_by=RESELLER,
    )
    assert job.status == JobStatus.SUCCEEDED, rows
    for number in N[:2]:
        doc = stored(mongo_db, number)
        assert doc is not None
        assert doc["pvt_carrier_module"] == "knm_inventory"
        assert doc["pvt_state"] == "in_service"
        assert doc["pvt_assigned_to"] == CHILD


def test_import_assigns_to_the_row_account_and_its_features_take_effect(
    mongo_db: Database[Doc],
) -> None:
    load_kazoo(mongo_db)
    # a billable carrier: local numbers may not use paid features (CNAM, E911), see below
    knm = make_knm(mongo_db, import_defaults_to_carrier="knm_inventory")
    job, rows = done(
        knm,
        "import",
        "e164,account_id,cnam.outbound,cnam.inbound,e911.street_address,e911.postal_code,"
        "prepend.enabled,prepend.name,force_outbound,failover.e164,opaque.custom.key,"
        "previously_assigned_to,created,used_by",
        f'{N[0]},{ACCOUNT_4},"Acme, Inc.",true,"140 Main St, Suite 200",94105,'
        f"true,Sales,true,,hello,{RESELLER},63650000000,callflow",
        f"{N[1]},,,,,,,,,,,,,",
        # failover is only for numbers used by trunkstore (KAZOO): that row fails 403
        f"{N[2]},,,,,,,,,+14155550199,,,,",
        auth_by=RESELLER,
    )
    assert job.status == JobStatus.PARTIAL, rows
    trunkstore = "denied by the trunkstore rule (failover needs used_by trunkstore)"
    assert errors_of(rows) == {
        N[0]: "",
        N[1]: "",
        N[2]: refused(f"feature 'failover' is not allowed on {N[2]}: {trunkstore}"),
    }
    assert stored(knm.store.db, N[2]) is None
    doc = stored(knm.store.db, N[0])
    assert doc is not None
    assert doc["pvt_carrier_module"] == "knm_inventory"
    assert doc["pvt_assigned_to"] == ACCOUNT_4
    assert doc["cnam"] == {"display_name": "Acme, Inc.", "inbound_lookup": True}
    assert doc["e911"] == {"street_address": "140 Main St, Suite 200", "postal_code": "94105"}
    assert doc["prepend"] == {"enabled": True, "name": "Sales"}
    assert doc["force_outbound"] is True
    assert doc["custom"] == {"key": "hello"}
    # activated: CNAM (the notifier provider), prepend, force_outbound; knm_inventory has no
    # E911 provider, so the address is kept but nothing is provisioned
    assert doc["pvt_features"]["outbound_cnam"] == {"display_name": "Acme, Inc."}
    assert doc["pvt_features"]["inbound_cnam"] == {"inbound_lookup": True}
    assert doc["pvt_features"]["prepend"] == {"enabled": True, "name": "Sales"}
    assert doc["pvt_features"]["force_outbound"] is True
    assert "e911" not in doc["pvt_features"]
    # bookkeeping columns are ignored on import
    assert "pvt_previously_assigned_to" not in doc
    assert "pvt_used_by" not in doc
    plain = stored(knm.store.db, N[1])
    assert plain is not None
    assert plain["pvt_assigned_to"] == CHILD
    assert not {"cnam", "e911", "prepend", "failover"} & set(plain)
    listing = by_number(rows)
    assert listing[N[0]]["account_id"] == ACCOUNT_4
    assert listing[N[0]]["account_name"] == "Grandchild"
    assert listing[N[1]]["account_name"] == "Child"
    # the result rows show the activated features
    assert listing[N[0]]["cnam.outbound"] == "Acme, Inc."
    assert listing[N[0]]["cnam.inbound"] == "true"
    assert listing[N[0]]["prepend.enabled"] == "true"
    assert listing[N[0]]["prepend.name"] == "Sales"
    assert listing[N[0]]["force_outbound"] == "true"
    assert listing[N[0]]["e911.street_address"] == ""


def test_import_of_paid_features_on_local_numbers_fails_403_unless_overridden(
    mongo_db: Database[Doc],
) -> None:
    load_kazoo(mongo_db)
    header = "e164,cnam.outbound,e911.street_address,e911.postal_code"
    refused_job, rows = done(
        make_knm(mongo_db), "import", header, f"{N[0]},Acme,1 Main St,94105", auth_by=RESELLER
    )
    assert refused_job.status == JobStatus.FAILED
    assert errors_of(rows) == {
        N[0]: refused(
            f"feature 'cnam' is not allowed on {N[0]}: {LOCAL_RULE}; "
            f"feature 'e911' is not allowed on {N[0]}: {LOCAL_RULE}"
        )
    }
    assert stored(mongo_db, N[0]) is None
    allowed, rows = done(
        make_knm(mongo_db, local_feature_override=True),
        "import",
        header,
        f"{N[1]},Acme,1 Main St,94105",
        auth_by=RESELLER,
    )
    assert allowed.status == JobStatus.SUCCEEDED
    assert errors_of(rows) == {N[1]: ""}
    doc = stored(mongo_db, N[1])
    assert doc is not None
    assert doc["pvt_features"]["outbound_cnam"] == {"display_name": "Acme"}
    assert by_number(rows)[N[1]]["cnam.outbound"] == "Acme"


def test_import_by_an_account_without_additions_fails_every_row(knm: Knm) -> None:
    job, rows = done(knm, "import", "e164", N[0], N[1], auth_by=CHILD)
    assert job.status == JobStatus.FAILED
    assert (job.rows, job.succeeded, job.failed) == (2, 0, 2)
    assert set(errors_of(rows).values()) == {
        refused("creating number in state 'in_service' is not allowed")
    }
    assert knm.store.numbers.count_documents({}) == 0


def test_import_of_an_existing_number_fails_that_row(knm: Knm) -> None:
    load(knm, number_doc(N[0], "in_service", assigned_to=CHILD))
    job, rows = done(knm, "import", "e164", N[0], N[1])
    assert job.status == JobStatus.PARTIAL
    assert errors_of(rows) == {N[0]: f"number {N[0]} already exists", N[1]: ""}


# ============================================================================ row checks
def test_rows_are_checked_at_creation_and_only_bad_rows_fail(mongo_db: Database[Doc]) -> None:
    load_kazoo(mongo_db)
    # the first row asks for inbound CNAM on a local number: allowed only with the override
    knm = make_knm(mongo_db, local_feature_override=True)
    job = submit(
        knm,
        "import",
        "e164,account_id,cnam.inbound,state",
        "4155550100,,true,",  # 10 digits
        "14155550101,,,",  # 11 digits
        "+14155550102,,,",  # E.164
        "011442071838750,,,",  # international dialling
        "+14155550103,not-an-account,,",  # bad cell
        "+14155550104,,maybe,bogus",  # two bad cells
        ",,true,",  # no number
        "1000,,,",  # not reconcilable
        "+1 (415) 555-0105,,,",  # not reconcilable either (KAZOO does not strip)
        "+14155550100,,,",  # duplicate of the first row, in another form
        "+14155550101,,,",  # and another
    )
    assert (job.status, job.rows) == (JobStatus.PENDING, 11)
    assert (job.failed, job.done) == (7, 7)  # refused rows are counted at creation
    run(knm, job)
    job = status(knm, job)
    assert job.status == JobStatus.PARTIAL
    assert (job.rows, job.done, job.succeeded, job.failed) == (11, 11, 4, 7)
    rows = results(knm, job)
    assert [row["error"] for row in rows] == [
        "",
        "",
        "",
        "",
        "bad field(s) account_id",
        "bad field(s) state cnam.inbound",
        "bad field(s) e164",
        "not_reconcilable",
        "not_reconcilable",
        "duplicate of row 1 (+14155550100)",
        "duplicate of row 2 (+14155550101)",
    ]
    # a failed row is the input row; a successful one the listing of the number
    assert [row["e164"] for row in rows] == [
        "+14155550100",
        "+14155550101",
        "+14155550102",
        "+442071838750",
        "+14155550103",
        "+14155550104",
        "",
        "1000",
        "+1 (415) 555-0105",
        "+14155550100",
        "+14155550101",
    ]
    assert rows[4]["account_id"] == "not-an-account"
    assert rows[5]["state"] == "bogus"
    assert knm.store.numbers.count_documents({}) == 4  # each number once
    assert {d["_id"] for d in knm.store.numbers.find()} == {
        "+14155550100",
        "+14155550101",
        "+14155550102",
        "+442071838750",
    }


def test_a_missing_mandatory_column_refuses_the_job_and_leaves_nothing(knm: Knm) -> None:
    with pytest.raises(InputError) as refused:
        submit(knm, "release", "number,account_id", f"{N[0]},")
    assert str(refused.value) == (
        "missing mandatory column(s): e164 (the header has: number, account_id)"
    )
    assert knm.store.db["jobs"].count_documents({}) == 0
    assert knm.store.db["job_rows"].count_documents({}) == 0


@pytest.mark.parametrize(
    ("action", "source", "message"),
    [
        ("frobnicate", None, "unknown action 'frobnicate': expected one of import, "),
        ("import", None, "action import needs a CSV file"),
        ("list", b"e164\n", "action list takes no CSV file"),
        ("import", b"e164\n+1415\xe9\n", "input is not UTF-8 text (byte 0xe9 at offset 10, line 2"),
        ("import", b"\x00\x01\x02", "input is not a CSV file: it contains binary data"),
        ("import", b"", "input is empty: it has no header row"),
        ("import", b'e164\n"open\n+14155550100\n', "input is not a valid CSV file (line 3: "),
    ],
)
def test_jobs_that_cannot_be_taken_leave_nothing(
    knm: Knm, action: str, source: bytes | None, message: str
) -> None:
    stream = io.BytesIO(source) if source is not None else None
    with pytest.raises(InputError) as refused:
        create_job(knm, action, stream, account_id=CHILD)
    assert str(refused.value).startswith(message), str(refused.value)
    assert knm.store.db["jobs"].count_documents({}) == 0
    assert knm.store.db["job_rows"].count_documents({}) == 0


def test_a_bad_file_after_many_good_rows_leaves_nothing(knm: Knm) -> None:
    lines = b"e164\n" + b"".join(f"{n}\n".encode() for n in N) + b"+1415\xff\n"
    with pytest.raises(InputError, match=r"line 22"):
        create_job(knm, "import", io.BytesIO(lines), account_id=CHILD, chunk_size=5)
    assert knm.store.db["jobs"].count_documents({}) == 0
    assert knm.store.db["job_rows"].count_documents({}) == 0


def test_a_header_only_file_finishes_at_once(knm: Knm) -> None:
    job = submit(knm, "import", "e164,account_id")
    assert job.status == JobStatus.SUCCEEDED
    assert (job.rows, job.chunks, job.done, job.succeeded, job.failed) == (0, 0, 0, 0, 0)
    stored_job = status(knm, job)
    assert stored_job.status == JobStatus.SUCCEEDED
    assert stored_job.finished is not None
    assert results(knm, job) == []


# ============================================================================ other actions
def test_assign_to_moves_numbers_in_service(knm: Knm) -> None:
    load(
        knm,
        number_doc(N[0], "reserved", assigned_to=CHILD, history=[CHILD]),
        number_doc(N[1], "reserved", assigned_to=CHILD, history=[CHILD]),
        number_doc(N[2], "in_service", assigned_to=RESELLER),
    )
    job, rows = done(
        knm,
        "assign_to",
        "e164,account_id",
        f"{N[0]},{ACCOUNT_4}",
        f"{N[1]},",
        f"{N[2]},",
        N[3] + ",",
        auth_by=CHILD,
    )
    assert job.status == JobStatus.PARTIAL
    assert errors_of(rows) == {
        N[0]: "",
        N[1]: "",
        N[2]: hidden_from(N[2], "in_service", CHILD, RESELLER),
        N[3]: "not_found",
    }
    assert stored(knm.store.db, N[0])["pvt_assigned_to"] == ACCOUNT_4  # type: ignore[index]
    assert stored(knm.store.db, N[1])["pvt_assigned_to"] == CHILD  # type: ignore[index]
    listing = by_number(rows)
    assert listing[N[0]]["state"] == listing[N[1]]["state"] == "in_service"
    assert stored(knm.store.db, N[2])["pvt_assigned_to"] == RESELLER  # type: ignore[index]


def test_reserve_for_the_row_account_or_the_jobs(knm: Knm) -> None:
    load(
        knm,
        number_doc(N[0], "available"),
        number_doc(N[1], "available"),
        number_doc(N[2], "in_service", assigned_to=MASTER),
    )
    job, rows = done(
        knm,
        "reserve",
        "e164,account_id",
        f"{N[0]},{ACCOUNT_4}",
        f"{N[1]},",
        f"{N[2]},",
        auth_by=RESELLER,
    )
    assert errors_of(rows)[N[0]] == errors_of(rows)[N[1]] == ""
    for number, owner in ((N[0], ACCOUNT_4), (N[1], CHILD)):
        doc = stored(knm.store.db, number)
        assert doc is not None
        assert (doc["pvt_state"], doc["pvt_assigned_to"]) == ("reserved", owner)
        assert by_number(rows)[number]["state"] == "reserved"
    # RESELLER may not take its parent's number
    assert errors_of(rows)[N[2]] == hidden_from(N[2], "in_service", RESELLER, MASTER)
    assert stored(knm.store.db, N[2])["pvt_state"] == "in_service"  # type: ignore[index]
    assert job.status == JobStatus.PARTIAL


def test_release_unwinds_each_number(knm: Knm) -> None:
    load(
        knm,
        number_doc(N[0], "in_service", "knm_inventory", assigned_to=CHILD, history=[CHILD]),
        number_doc(N[1], "in_service", "knm_inventory", assigned_to=RESELLER),
    )
    job, rows = done(knm, "release", "e164", N[0], N[1], auth_by=CHILD)
    assert job.status == JobStatus.PARTIAL
    assert errors_of(rows) == {N[0]: "", N[1]: hidden_from(N[1], "in_service", CHILD, RESELLER)}
    released = stored(knm.store.db, N[0])
    assert released is not None
    assert released["pvt_state"] == "available"  # released_state
    assert "pvt_assigned_to" not in released
    assert by_number(rows)[N[0]]["state"] == "available"
    assert stored(knm.store.db, N[1])["pvt_state"] == "in_service"  # type: ignore[index]


def test_delete_is_for_admins_only(knm: Knm) -> None:
    load(
        knm,
        number_doc(N[0], "in_service", assigned_to=CHILD),
        number_doc(N[1], "in_service", assigned_to=CHILD),
    )
    job, rows = done(knm, "delete", "e164", N[0], N[1], auth_by=CHILD)
    assert job.status == JobStatus.FAILED
    admins_only = refused("only system or a superduper admin may hard-delete numbers")
    assert errors_of(rows) == {N[0]: admins_only, N[1]: admins_only}  # per row, not a crash
    assert knm.store.numbers.count_documents({}) == 2

    job, rows = done(knm, "delete", "e164", N[0], auth_by=MASTER)
    assert job.status == JobStatus.SUCCEEDED
    assert errors_of(rows) == {N[0]: ""}
    assert stored(knm.store.db, N[0]) is None
    assert stored(knm.store.db, N[1]) is not None


def _with_features(number: str) -> Doc:
    return number_doc(
        number,
        "in_service",
        "knm_inventory",  # billable: CNAM and E911 are allowed (not on local numbers)
        assigned_to=CHILD,
        public={
            "cnam": {"display_name": "Old", "inbound_lookup": True},
            "e911": {"street_address": "1 Old St", "postal_code": "10001"},
            "custom": "kept?",
        },
    )


def test_update_merge_keeps_what_empty_cells_do_not_mention(knm: Knm) -> None:
    load(knm, _with_features(N[0]))
    job, rows = done(
        knm,
        "update_merge",
        "e164,cnam.outbound,cnam.inbound,e911.postal_code,prepend.name,opaque.tag",
        f"{N[0]},New,,94105,,blue",
        auth_by=CHILD,
    )
    assert job.status == JobStatus.SUCCEEDED, rows
    doc = stored(knm.store.db, N[0])
    assert doc is not None
    assert doc["cnam"] == {"display_name": "New", "inbound_lookup": True}
    assert doc["e911"] == {"street_address": "1 Old St", "postal_code": "94105"}
    assert doc["custom"] == "kept?"
    assert doc["tag"] == "blue"
    assert "prepend" not in doc
    assert doc["pvt_rev"] == 2
    assert doc["pvt_features"]["outbound_cnam"] == {"display_name": "New"}
    assert doc["pvt_features"]["inbound_cnam"] == {"inbound_lookup": True}
    assert by_number(rows)[N[0]]["cnam.outbound"] == "New"


def test_update_overwrite_replaces_the_public_fields(knm: Knm) -> None:
    load(knm, _with_features(N[0]))
    job, rows = done(
        knm,
        "update_overwrite",
        "e164,cnam.outbound,cnam.inbound,e911.postal_code,opaque.tag",
        f"{N[0]},New,,,blue",
        auth_by=CHILD,
    )
    assert job.status == JobStatus.SUCCEEDED, rows
    doc = stored(knm.store.db, N[0])
    assert doc is not None
    assert doc["cnam"] == {"display_name": "New"}
    assert doc["tag"] == "blue"
    assert not {"e911", "custom"} & set(doc)
    assert doc["pvt_features"]["outbound_cnam"] == {"display_name": "New"}
    assert "inbound_cnam" not in doc["pvt_features"]  # overwritten without inbound lookup
    assert by_number(rows)[N[0]]["cnam.inbound"] == "false"
    assert (doc["pvt_state"], doc["pvt_assigned_to"]) == ("in_service", CHILD)  # private kept


def test_update_of_someone_elses_number_fails_that_row(knm: Knm) -> None:
    load(knm, number_doc(N[0], "in_service", assigned_to=RESELLER))
    job, rows = done(knm, "update_merge", "e164,cnam.outbound", f"{N[0]},X", auth_by=CHILD)
    assert job.status == JobStatus.FAILED
    assert errors_of(rows) == {N[0]: hidden_from(N[0], "in_service", CHILD, RESELLER)}
    assert "cnam" not in stored(knm.store.db, N[0])  # type: ignore[operator]


def test_find_lists_numbers_the_requester_may_see(knm: Knm) -> None:
    load_kazoo(knm.store.db, [TEST_OLD7_NUM, TEST_IN_SERVICE_NUM], accounts=False)
    job, rows = done(
        knm, "find", "e164", TEST_OLD7_NUM, TEST_IN_SERVICE_NUM, N[0], "1000", auth_by=CHILD
    )
    assert job.status == JobStatus.PARTIAL
    assert errors_of(rows) == {
        TEST_OLD7_NUM: "",
        TEST_IN_SERVICE_NUM: hidden_from(TEST_IN_SERVICE_NUM, "in_service", CHILD, RESELLER),
        N[0]: "not_found",
        "1000": "not_reconcilable",
    }
    # the listing shows the activated features (pvt_features), not the public fields
    assert {k: v for k, v in by_number(rows)[TEST_OLD7_NUM].items() if v} == {
        "e164": TEST_OLD7_NUM,
        "account_name": "Child",
        "account_id": CHILD,
        "state": "in_service",
        "created": str(to_gregorian_seconds(CREATED)),
        "modified": str(to_gregorian_seconds(MODIFIED)),
        "used_by": "trunkstore",
        "ported_in": "false",
        "carrier_module": "knm_local",
        "cnam.inbound": "true",
        "cnam.outbound": "CHILD",
        "force_outbound": "false",
    }
    assert stored(knm.store.db, TEST_OLD7_NUM)["pvt_rev"] == 1  # type: ignore[index]


# ============================================================================ listings
@pytest.fixture
def numbers_of_the_tree(knm: Knm) -> Knm:
    load(
        knm,
        number_doc(N[0], "in_service", assigned_to=CHILD),
        number_doc(N[1], "reserved", assigned_to=CHILD),
        number_doc(N[2], "in_service", assigned_to=ACCOUNT_4),
        number_doc(N[3], "in_service", assigned_to=RESELLER),
        number_doc(N[4], "available"),
    )
    return knm


def test_list_is_the_accounts_numbers(numbers_of_the_tree: Knm) -> None:
    knm = numbers_of_the_tree
    job, rows = done(knm, "list", auth_by=CHILD)
    assert (job.status, job.rows, job.succeeded, job.chunks) == (JobStatus.SUCCEEDED, 2, 2, 1)
    assert [row["e164"] for row in rows] == [N[0], N[1]]
    assert [row["state"] for row in rows] == ["in_service", "reserved"]
    assert {row["error"] for row in rows} == {""}
    # an account that may not read them (a descendant) gets none, and one row saying why
    job, rows = done(knm, "list", account=RESELLER, auth_by=CHILD)
    assert (job.status, job.rows, job.succeeded, job.failed) == (JobStatus.FAILED, 1, 0, 1)
    assert rows == [
        {
            "error": refused(
                f"account '{CHILD}' may not list the numbers of account '{RESELLER}': it is "
                f"not that account {RELATION}"
            )
        }
    ]


def test_list_all_includes_the_descendants(numbers_of_the_tree: Knm) -> None:
    knm = numbers_of_the_tree
    _job, rows = done(knm, "list_all", auth_by=CHILD)
    assert [row["e164"] for row in rows] == [N[0], N[1], N[2]]
    _job, rows = done(knm, "list_all", account=RESELLER)
    assert [row["e164"] for row in rows] == [N[0], N[1], N[2], N[3]]


def test_dump_is_for_the_master_account_only(numbers_of_the_tree: Knm) -> None:
    knm = numbers_of_the_tree
    for auth in (MASTER, "system"):
        job, rows = done(knm, "dump", account=MASTER, auth_by=auth)
        assert job.status == JobStatus.SUCCEEDED
        assert [row["e164"] for row in rows] == N[:5]
    job, rows = done(knm, "dump", account=RESELLER, auth_by=RESELLER)
    assert (job.status, job.rows, job.failed) == (JobStatus.FAILED, 1, 1)
    assert rows == [
        {
            "error": refused(
                "dump is for the master account only (system or a superduper admin at the "
                f"root), not '{RESELLER}'"
            )
        }
    ]


@pytest.mark.parametrize(
    ("action", "expected"),
    [("dump_in_service", [0, 2, 3]), ("dump_reserved", [1]), ("dump_available", [4])],
)
def test_dump_state_restricts_to_that_state(
    numbers_of_the_tree: Knm, action: str, expected: list[int]
) -> None:
    _job, rows = done(numbers_of_the_tree, action, account=MASTER, auth_by=MASTER)
    assert [row["e164"] for row in rows] == [N[i] for i in expected]
    assert {row["state"] for row in rows} == {action.removeprefix("dump_")}


def test_a_listing_run_twice_writes_its_rows_once(numbers_of_the_tree: Knm) -> None:
    knm = numbers_of_the_tree
    job = submit(knm, "list_all")
    first = run_chunk(knm, job.id, 0)
    second = run_chunk(knm, job.id, 0)
    assert (first.processed, second.processed) == (3, 0)
    assert len(results(knm, job)) == 3
    assert status(knm, job).rows == 3


# ============================================================================ results
def test_the_result_csv_is_the_listing_columns_plus_error_one_row_per_input(knm: Knm) -> None:
    load(knm, number_doc(N[0], "in_service", assigned_to=CHILD))
    lines = ["e164,account_id,opaque.extra", f"{N[0]},,x", f"{N[1]},bad,y", f"{N[0]},,z", "1000,,"]
    job, _ = done(knm, "find", *lines, auth_by=CHILD)
    out = io.StringIO(newline="")
    assert write_csv(out, RESULT_HEADER, JobStore(knm).result_rows(job.id)) == 4
    parsed = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert parsed[0] == [*LISTING_COLUMNS, "error"]
    assert len(parsed) == 1 + len(lines) - 1  # exactly one result per input row
    assert all(len(row) == len(RESULT_HEADER) for row in parsed)
    table = [dict(zip(parsed[0], row, strict=True)) for row in parsed[1:]]
    assert [(row["e164"], row["error"]) for row in table] == [
        (N[0], ""),
        (N[1], "bad field(s) account_id"),
        (N[0], "duplicate of row 1 (+14155550200)"),
        ("1000", "not_reconcilable"),
    ]
    assert table[0]["state"] == "in_service"
    assert table[1]["account_id"] == "bad"  # the input row
    assert (job.succeeded, job.failed) == (1, 3)


# ============================================================================ reruns
def _numbers(knm: Knm) -> dict[str, Doc]:
    return {doc["_id"]: doc for doc in knm.store.numbers.find()}


def test_a_chunk_run_twice_changes_nothing_and_counts_once(knm: Knm) -> None:
    job = submit(knm, "import", "e164", *N[:5], "+14155550200", chunk_size=3)
    assert job.chunks == 2
    first = run(knm, job)
    after_first = _numbers(knm)
    totals = status(knm, job)
    assert (totals.status, totals.succeeded, totals.failed) == (JobStatus.PARTIAL, 5, 1)
    rows = results(knm, job)

    again = run(knm, job)
    assert [r.processed for r in first] == [3, 2]
    assert [r.processed for r in again] == [0, 0]
    assert [r.skipped for r in again] == [3, 3]
    assert [r.counted for r in again] == [False, False]
    assert _numbers(knm) == after_first
    assert all(doc["pvt_rev"] == 1 for doc in after_first.values())
    current = status(knm, job)
    assert (current.done, current.succeeded, current.failed) == (6, 5, 1)
    assert current.finished == totals.finished
    assert results(knm, job) == rows


def test_numbers_written_before_a_crash_are_not_written_again(knm: Knm) -> None:
    """The worker wrote the numbers, then died before recording the rows' results."""
    job = submit(knm, "import", "e164", N[0], N[1])
    # what run_chunk does first: the operation, stamped with the chunk's request id
    knm.numbers.create(
        [N[0], N[1]], Options(auth_by="system", assign_to=CHILD, request_id=f"{job.id}:0")
    )
    written = _numbers(knm)
    assert status(knm, job).done == 0

    report = run_chunk(knm, job.id, 0)
    assert (report.processed, report.succeeded, report.failed) == (2, 2, 0)
    assert _numbers(knm) == written  # no second pvt_rev bump, no number_exists
    current = status(knm, job)
    assert (current.status, current.succeeded) == (JobStatus.SUCCEEDED, 2)
    assert {row["error"] for row in results(knm, job)} == {""}


def test_a_row_reset_to_pending_reruns_to_success_without_a_second_write(knm: Knm) -> None:
    load(knm, number_doc(N[0], "available"))
    job = submit(knm, "reserve", "e164", N[0], N[1], auth_by=RESELLER)
    run(knm, job)
    before = stored(knm.store.db, N[0])
    assert before is not None
    assert (before["pvt_state"], before["pvt_rev"]) == ("reserved", 2)
    # the result of row 1 was never recorded, nor the chunk (row 1 and row 2) counted
    rows = JobStore(knm).rows
    rows.update_one(
        {"job_id": job.id, "row": 1},
        {"$set": {"status": "pending", "error": None}, "$unset": {"listing": ""}},
    )
    knm.store.db["jobs"].update_one(
        {"_id": job.id},
        {
            "$pull": {"chunks_done": 0},
            "$inc": {"done": -2, "succeeded": -1, "failed": -1},
            "$set": {"status": "running", "finished": None},
        },
    )
    report = run_chunk(knm, job.id, 0)
    assert (report.processed, report.skipped, report.counted) == (1, 1, True)
    # the request id stamp: not applied again (reserving it again would fail, or push history)
    assert stored(knm.store.db, N[0]) == before
    current = status(knm, job)
    assert (current.status, current.done, current.succeeded, current.failed) == (
        JobStatus.PARTIAL,
        2,
        1,
        1,
    )
    assert errors_of(results(knm, job)) == {N[0]: "", N[1]: "not_found"}


def test_fail_chunk_fails_the_pending_rows_and_the_job_finishes(knm: Knm) -> None:
    job = submit(
        knm, "import", "e164,account_id", f"{N[0]},", f"{N[1]},bad", f"{N[2]},", chunk_size=2
    )
    assert job.chunks == 2
    report = fail_chunk(knm, job.id, 0, "RuntimeError: boom")
    assert (report.succeeded, report.failed, report.counted) == (0, 2, True)
    assert status(knm, job).status == JobStatus.PENDING  # chunk 1 still to run
    run_chunk(knm, job.id, 1)
    current = status(knm, job)
    assert current.status == JobStatus.PARTIAL
    assert (current.done, current.succeeded, current.failed) == (3, 1, 2)
    assert errors_of(results(knm, job)) == {
        N[0]: "applier crashed: RuntimeError: boom",
        N[1]: "bad field(s) account_id",  # refused at creation: keeps its own error
        N[2]: "",
    }
    assert stored(knm.store.db, N[0]) is None
    # failing it again (a redelivered failure) changes nothing
    fail_chunk(knm, job.id, 0, "RuntimeError: again")
    assert status(knm, job).failed == 2
    assert results(knm, job)[0]["error"] == "applier crashed: RuntimeError: boom"


def test_fail_chunk_of_an_unknown_job_does_nothing(knm: Knm) -> None:
    report = fail_chunk(knm, "nope", 0, "x")
    assert (report.succeeded, report.failed, report.counted) == (0, 0, False)


def test_run_chunk_of_an_unknown_job_is_an_input_error(knm: Knm) -> None:
    with pytest.raises(InputError, match="job nope does not exist"):
        run_chunk(knm, "nope", 0)


# ============================================================================ statuses
def test_status_goes_pending_running_then_final(knm: Knm) -> None:
    job = submit(knm, "import", "e164", N[0], N[1], N[2], chunk_size=2)
    assert (job.status, job.started, job.finished) == (JobStatus.PENDING, None, None)
    assert status(knm, job).status == JobStatus.PENDING

    run_chunk(knm, job.id, 1)
    running = status(knm, job)
    assert running.status == JobStatus.RUNNING
    assert running.started is not None
    assert running.finished is None
    assert (running.done, running.chunks_done) == (1, [1])

    run_chunk(knm, job.id, 0)
    final = status(knm, job)
    assert final.status == JobStatus.SUCCEEDED
    assert final.finished is not None
    assert final.started == running.started
    assert (final.rows, final.done, final.succeeded, final.failed) == (3, 3, 3, 0)
    assert final.to_json()["chunks_done"] == 2


def test_a_job_whose_rows_all_fail_is_failed(knm: Knm) -> None:
    job, rows = done(knm, "release", "e164", N[0], "1000")
    assert job.status == JobStatus.FAILED
    assert errors_of(rows) == {N[0]: "not_found", "1000": "not_reconcilable"}


def test_job_json_and_listing(knm: Knm) -> None:
    first = submit(knm, "list")
    second = submit(knm, "import", "e164", N[0])
    data = second.to_json()
    assert {"id", "action", "status", "rows", "succeeded", "failed", "done"} <= set(data)
    assert (data["action"], data["status"], data["rows"]) == ("import", "pending", 1)
    assert "auth_is_admin" not in data
    assert [j.id for j in JobStore(knm).list()] == [second.id, first.id]
    assert JobStore(knm).get("missing") is None
