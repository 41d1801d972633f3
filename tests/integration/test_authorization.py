"""Authorization at the in-process entrances: the carrier choice, unknown carrier modules, who
may run or read a CSV job, and whose a request id is.

The CLI runs in process (``knm.cli.root.cli``) against this test's database; jobs run as a worker's
``knm.jobs.chunk`` does (``run_chunk``); request ids are claimed as the ``knm.numbers.*`` tasks
claim them. The accounts are KAZOO's fixtures: MASTER (superduper admin) > RESELLER (allowed
additions) > CHILD > ACCOUNT_4, plus SIBLING beside CHILD (allowed additions). The broker
entrances (``--via-broker``, ``send_task``) are in test_worker_authorization.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from pymongo.database import Database
from typer.testing import CliRunner, Result

from carriers.registry import default_registry
from config.settings import Settings
from knm.domain import errors
from knm.domain.options import Options
from knm.services import numbers_requests as requests
from knm.services.facade import Knm
from knm.services.jobs import JobStatus, JobStore, create_job, run_chunk
from knm.services.numbers_requests import InvalidRequestError, NumbersRequest, Operation
from knm.store.numbers import Store
from knm.store.outcomes import RequestKeys
from tests.fixtures_kazoo import (
    ACCOUNT_4,
    CHILD,
    MASTER,
    RESELLER,
    Doc,
    load_kazoo,
    number_doc,
    stored,
)

pytestmark = pytest.mark.integration

SIBLING = "account0000000000000000000000005"
N1, N2, N3 = "+14155550301", "+14155550302", "+14155550303"
FORBIDDEN = "requestor is unauthorized to perform operation"
CARRIER_CHOICE = "only system or a superduper admin may choose the carrier module ('{}')"

Run = Callable[..., Result]


@pytest.fixture
def knm(mongo_db: Database[Doc]) -> Knm:
    load_kazoo(mongo_db)
    store = Store(mongo_db)
    store.ensure_indexes()
    app = Knm(store, Settings())
    app.create_account(SIBLING, "Sibling", parent=RESELLER, allow_additions=True)
    return app


@pytest.fixture
def cli(knm: Knm, mongo_url: str, mongo_db: Database[Doc]) -> Run:
    """``knm ARGS`` in process on this test's database; checks the exit code."""
    from knm.cli import root

    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(root.cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def forbidden(cause: str) -> Doc:
    return {"error": "forbidden", "code": 403, "message": FORBIDDEN, "cause": cause}


def carrier_not_found(module: str) -> Doc:
    return errors.carrier_not_found(module).to_json()


def numbers_of(knm: Knm) -> list[Doc]:
    return list(knm.store.numbers.find({}).sort("_id", 1))


# ===================================================================== 1. the carrier choice
def test_a_non_admin_naming_a_carrier_module_gets_403_and_nothing_is_stored(
    cli: Run, knm: Knm
) -> None:
    """The review's example: an account allowed additions claims a provider's number."""
    for module in ("knm_vitelity", "knm_local"):
        out = as_json(
            cli(
                *("numbers", "create", N1, "--account", RESELLER, "--auth-by", RESELLER),
                *("--carrier", module, "--json"),
                code=1,
            )
        )
        assert out == {"succeeded": {}, "failed": {N1: forbidden(CARRIER_CHOICE.format(module))}}
    # without --carrier the same account creates the number (allow_additions)
    out = as_json(
        cli("numbers", "create", N1, "--account", RESELLER, "--auth-by", RESELLER, "--json")
    )
    assert out["succeeded"][N1]["pvt_carrier_module"] == "knm_local"
    assert [d["_id"] for d in numbers_of(knm)] == [N1]


def test_a_non_admin_naming_a_carrier_module_on_activate_gets_403(cli: Run, knm: Knm) -> None:
    knm.store.numbers.insert_one(number_doc(N1, "available", "knm_inventory"))
    before = numbers_of(knm)
    out = as_json(
        cli(
            *("numbers", "activate", N1, "--account", CHILD, "--auth-by", RESELLER),
            *("--carrier", "knm_telnyx", "--json"),
            code=1,
        )
    )
    assert out["failed"] == {N1: forbidden(CARRIER_CHOICE.format("knm_telnyx"))}
    assert numbers_of(knm) == before
    # an admin may: the number moves to the module it names
    out = as_json(
        cli(
            *("numbers", "activate", N1, "--account", CHILD, "--auth-by", MASTER),
            *("--carrier", "knm_telnyx", "--json"),
        )
    )
    assert out["succeeded"][N1]["pvt_carrier_module"] == "knm_telnyx"


@pytest.mark.parametrize("auth_by", ["system", MASTER])
def test_an_admin_names_a_registered_carrier_module(cli: Run, knm: Knm, auth_by: str) -> None:
    out = as_json(
        cli(
            *("numbers", "create", N1, "--account", RESELLER, "--auth-by", auth_by),
            *("--carrier", "knm_inventory", "--json"),
        )
    )
    assert out["failed"] == {}
    assert stored(knm.store.db, N1)["pvt_carrier_module"] == "knm_inventory"  # type: ignore[index]


def test_a_task_payload_naming_a_carrier_module_is_checked_the_same_way(knm: Knm) -> None:
    """``requests.execute`` is what a worker's share runs: the rule holds there too."""
    payload = {"numbers": [N1], "account": RESELLER, "auth_by": RESELLER, "carrier_module": "x"}
    refused = requests.execute(knm, Operation.CREATE, requests.parse(Operation.CREATE, payload))
    assert refused == {"succeeded": {}, "failed": {N1: carrier_not_found("x")}}
    payload["carrier_module"] = "knm_vitelity"
    refused = requests.execute(knm, Operation.CREATE, requests.parse(Operation.CREATE, payload))
    assert refused["failed"] == {N1: forbidden(CARRIER_CHOICE.format("knm_vitelity"))}
    assert numbers_of(knm) == []


def test_a_csv_carrier_name_cell_of_a_non_admin_fails_its_row_saying_why(knm: Knm) -> None:
    job = create_job(
        knm,
        "import",
        io.BytesIO(f"e164,carrier_name\n{N1},vitelity\n{N2},\n".encode()),
        account_id=RESELLER,
        auth_by=RESELLER,
    )
    run_chunk(knm, job.id, 0)
    rows = {r["e164"]: r["error"] for r in JobStore(knm).result_rows(job.id)}
    assert rows == {
        N1: f"{FORBIDDEN}: feature 'carrier_name' is not allowed on {N1}: denied by the admin "
        "rule (only system or a superduper admin may use it)",
        N2: "",
    }
    assert stored(knm.store.db, N1) is None
    assert stored(knm.store.db, N2)["pvt_carrier_module"] == "knm_local"  # type: ignore[index]


# ===================================================================== 2. unknown modules
@pytest.mark.parametrize("auth_by", ["system", MASTER, RESELLER])
@pytest.mark.parametrize("module", ["knm_bogus", "knm_simwood"])
def test_an_unknown_carrier_module_is_400_for_everyone_on_create_and_activate(
    cli: Run, knm: Knm, auth_by: str, module: str
) -> None:
    """``knm_simwood`` is a module KAZOO has and knm does not: no worker owns its queue."""
    knm.store.numbers.insert_one(number_doc(N2, "available", "knm_inventory"))
    before = numbers_of(knm)
    for op, number in (("create", N1), ("activate", N2)):
        out = as_json(
            cli(
                *("numbers", op, number, "--account", RESELLER, "--auth-by", auth_by),
                *("--carrier", module, "--json"),
                code=1,
            )
        )
        assert out == {"succeeded": {}, "failed": {number: carrier_not_found(module)}}
    assert numbers_of(knm) == before


def test_an_unknown_csv_carrier_module_cell_fails_only_its_row(knm: Knm) -> None:
    job = create_job(
        knm,
        "import",
        io.BytesIO(
            f"e164,carrier_module,state\n{N1},knm_bogus,\n{N2},knm_simwood,bogus\n{N3},,\n".encode()
        ),
        account_id=RESELLER,
        auth_by=MASTER,
    )
    assert (job.rows, job.failed) == (3, 2)  # refused when the job was stored
    run_chunk(knm, job.id, 0)
    rows = {r["e164"]: r["error"] for r in JobStore(knm).result_rows(job.id)}
    assert rows == {
        N1: "carrier_not_found: carrier module knm_bogus is not known",
        N2: "bad field(s) state; carrier_not_found: carrier module knm_simwood is not known",
        N3: "",
    }
    assert [d["_id"] for d in numbers_of(knm)] == [N3]


def test_carriers_convert_to_an_unknown_module_changes_nothing(cli: Run, knm: Knm) -> None:
    knm.store.numbers.insert_one(number_doc(N1, "in_service", "knm_local", assigned_to=CHILD))
    before = numbers_of(knm)
    result = cli("carriers", "convert", "knm_local", "knm_simwood", code=2)
    assert "carrier_not_found: carrier module knm_simwood is not known" in result.stderr
    assert numbers_of(knm) == before


def test_a_stored_unknown_module_routes_to_the_default_queue(knm: Knm) -> None:
    """A KAZOO document with a module knm has no carrier for: its work never goes to that
    module's queue (nobody consumes it); it runs on knm's own queue."""
    knm.store.numbers.insert_many(
        [
            number_doc(N1, "in_service", "knm_simwood", assigned_to=CHILD),
            number_doc(N2, "in_service", "knm_inventory", assigned_to=CHILD),
        ]
    )
    request = NumbersRequest(numbers=[N1, N2, "12"])
    routes = requests.carrier_routes(knm, Operation.RELEASE, request)
    assert routes == {None: [N1, "12"], "knm_inventory": [N2]}
    registered = default_registry()
    assert all(module is None or module in registered for module in routes)


def test_the_producer_refuses_to_publish_an_unknown_module() -> None:
    from workers import producer

    request = NumbersRequest(numbers=[N1], carrier_module="knm_bogus")
    with pytest.raises(InvalidRequestError, match="carrier_not_found: carrier module knm_bogus"):
        producer.publish(Operation.CREATE, request, app=object())  # type: ignore[arg-type]


# ===================================================================== 3. jobs
@pytest.fixture
def tree_numbers(knm: Knm) -> Knm:
    knm.store.numbers.insert_many(
        [
            number_doc(N1, "in_service", assigned_to=CHILD),
            number_doc(N2, "in_service", assigned_to=ACCOUNT_4),
            number_doc(N3, "in_service", assigned_to=SIBLING),
        ]
    )
    return knm


def _listing(knm: Knm, action: str, account: str, auth_by: str) -> tuple[Any, list[dict[str, str]]]:
    job = create_job(knm, action, None, account_id=account, auth_by=auth_by)
    run_chunk(knm, job.id, 0)
    final = JobStore(knm).get(job.id)
    return final, list(JobStore(knm).result_rows(job.id))


@pytest.mark.parametrize("action", ["list", "list_all"])
def test_a_sibling_lists_nothing_of_another_accounts_subtree(
    tree_numbers: Knm, action: str
) -> None:
    """The review's example: ``jobs submit list_all --account CHILD --auth-by SIBLING``."""
    job, rows = _listing(tree_numbers, action, CHILD, SIBLING)
    assert (job.status, job.rows, job.succeeded, job.failed) == (JobStatus.FAILED, 1, 0, 1)
    assert rows == [
        {
            "error": f"{FORBIDDEN}: account '{SIBLING}' may not list the numbers of account "
            f"'{CHILD}': it is not that account or one of its ancestors (nor system or a "
            "superduper admin)"
        }
    ]
    assert not any(N1 in json.dumps(r) or N2 in json.dumps(r) for r in rows)


@pytest.mark.parametrize("auth_by", [CHILD, RESELLER, MASTER, "system"])
def test_the_account_and_its_ancestors_list_its_subtree(tree_numbers: Knm, auth_by: str) -> None:
    job, rows = _listing(tree_numbers, "list_all", CHILD, auth_by)
    assert job.status == JobStatus.SUCCEEDED
    assert [r["e164"] for r in rows] == [N1, N2]


def test_a_descendant_may_not_list_its_ancestor(tree_numbers: Knm) -> None:
    job, rows = _listing(tree_numbers, "list_all", CHILD, ACCOUNT_4)
    assert job.status == JobStatus.FAILED
    assert [r.get("e164", "") for r in rows] == [""]


def test_find_rows_of_a_siblings_numbers_fail_403_saying_why(tree_numbers: Knm) -> None:
    job = create_job(
        tree_numbers,
        "find",
        io.BytesIO(f"e164\n{N1}\n{N3}\n".encode()),
        account_id=SIBLING,
        auth_by=SIBLING,
    )
    run_chunk(tree_numbers, job.id, 0)
    rows = {r["e164"]: r for r in JobStore(tree_numbers).result_rows(job.id)}
    assert rows[N3]["error"] == ""
    assert rows[N1]["error"] == (
        f"{FORBIDDEN}: number {N1} is in_service and account '{SIBLING}' is not its account "
        f"'{CHILD}' or one of its ancestors (nor system or a superduper admin)"
    )
    assert set(rows[N1]) == {"e164", "error"}  # the input row, nothing of the stored number


def test_jobs_status_results_and_list_of_someone_elses_job(cli: Run, tree_numbers: Knm) -> None:
    job = create_job(tree_numbers, "list_all", None, account_id=CHILD, auth_by=CHILD)
    run_chunk(tree_numbers, job.id, 0)
    for command in (("jobs", "status", job.id), ("jobs", "results", job.id)):
        for reader in (CHILD, RESELLER, MASTER, "system"):
            cli(*command, "--auth-by", reader)
        for stranger in (SIBLING, ACCOUNT_4):
            result = cli(*command, "--auth-by", stranger, code=1)
            assert result.stdout == ""
            assert result.stderr.strip() == (
                f"knm: error: forbidden: {FORBIDDEN} (account '{stranger}' may not read job "
                f"{job.id}: it did not submit it and is not the job's account '{CHILD}' or one "
                "of its ancestors (nor system or a superduper admin))"
            )
    mine = create_job(tree_numbers, "list", None, account_id=SIBLING, auth_by=SIBLING)
    listed = {j["id"] for j in as_json(cli("jobs", "list", "--auth-by", SIBLING, "--json"))}
    assert listed == {mine.id}
    listed = {j["id"] for j in as_json(cli("jobs", "list", "--auth-by", RESELLER, "--json"))}
    assert listed == {job.id, mine.id}
    # the submitter may read its job even when it cannot read the account (the 403 row)
    refused = create_job(tree_numbers, "list", None, account_id=CHILD, auth_by=SIBLING)
    run_chunk(tree_numbers, refused.id, 0)
    assert as_json(cli("jobs", "status", refused.id, "--auth-by", SIBLING, "--json"))["failed"] == 1


# ===================================================================== 4. request ids
def _key(knm: Knm, op: Operation, request: NumbersRequest, request_id: str) -> str | None:
    return knm.request_keys.claim(
        request_id,
        scope=requests.request_scope(op, request),
        auth_by=request.auth_by,
        operation=op.value,
        numbers=request.numbers,
        record=not request.dry_run,
    )


def test_a_request_id_belongs_to_its_first_request(knm: Knm) -> None:
    first = NumbersRequest(numbers=[N1, N2], account=CHILD, auth_by=RESELLER)
    assert _key(knm, Operation.ACTIVATE, first, "k-1") is None
    # the same request again, some of its numbers, a dry run of it: the same request
    assert _key(knm, Operation.ACTIVATE, first, "k-1") is None
    assert _key(knm, Operation.ACTIVATE, first.for_numbers([N2]), "k-1") is None
    dry = first.model_copy(update={"dry_run": True, "reply_to": "q"})
    assert _key(knm, Operation.ACTIVATE, dry, "k-1") is None
    owner = "request_id 'k-1' belongs to"
    other = NumbersRequest(numbers=[N1, N2], account=CHILD, auth_by=SIBLING)
    assert _key(knm, Operation.ACTIVATE, other, "k-1") == f"{owner} another requester's request"
    assert (
        _key(knm, Operation.RELEASE, first, "k-1")
        == f"{owner} a request to activate, not to release"
    )
    moved = NumbersRequest(numbers=[N1], account=ACCOUNT_4, auth_by=RESELLER)
    assert (
        _key(knm, Operation.ACTIVATE, moved, "k-1")
        == f"{owner} a request to activate with other options"
    )
    more = first.for_numbers([N1, N3])
    assert (
        _key(knm, Operation.ACTIVATE, more, "k-1") == f"{owner} a request to activate other numbers"
    )
    # a dry run claims nothing: the id stays free for the real request
    assert _key(knm, Operation.RELEASE, first.model_copy(update={"dry_run": True}), "k-2") is None
    assert _key(knm, Operation.ACTIVATE, first, "k-2") is None
    assert knm.store.db["request_keys"].count_documents({}) == 2


def test_claims_expire_with_the_outcomes(knm: Knm) -> None:
    keys = RequestKeys(knm.store.db["request_keys"], 60)
    request = NumbersRequest(numbers=[N1])
    assert _key(knm, Operation.RELEASE, request, "k") is None
    assert keys.claim("k2", scope="s", auth_by="system", operation="get", numbers=[N1]) is None
    doc = knm.store.db["request_keys"].find_one({"_id": "k2"})
    assert doc is not None
    assert (doc["expires_at"] - doc["claimed"]).total_seconds() == 60
    ttl = {i["name"]: i for i in knm.store.db["request_keys"].list_indexes()}["ttl"]
    assert ttl["expireAfterSeconds"] == 0


def test_numbers_written_under_a_request_id_are_not_done_for_another_scope(knm: Knm) -> None:
    """Documents keep ``<request id>/<scope>``: the same id with another requester or
    operation never finds them done (it is authorized afresh), nor does a job chunk's key."""
    activate = NumbersRequest(numbers=[N1], account=CHILD, auth_by=RESELLER)
    knm.store.numbers.insert_one(number_doc(N1, "available", "knm_inventory"))
    done = requests.run(knm, Operation.ACTIVATE, activate, "k-1")
    assert list(done.succeeded) == [N1]
    doc = stored(knm.store.db, N1)
    assert doc is not None
    key = requests.request_key("k-1", Operation.ACTIVATE, activate)
    assert (doc["pvt_request_id"], doc["pvt_request_ids"]) == ("k-1", [key])
    assert key.startswith("k-1/")
    other_requester = activate.model_copy(update={"auth_by": SIBLING})
    assert key != requests.request_key("k-1", Operation.ACTIVATE, other_requester)
    # the same id, another requester: not "already done", but refused on its own merits
    stranger = NumbersRequest(numbers=[N1], auth_by=SIBLING)
    refused = requests.run(knm, Operation.RELEASE, stranger, "k-1")
    assert refused.succeeded == {}
    assert refused.failed[N1].error == "forbidden"
    assert stored(knm.store.db, N1) == doc
    # a job chunk's key is never a request's key: a chunk that wrote N2 ...
    job_key = "0123456789abcdef0123456789abcdef:0"
    created = knm.numbers.create(
        [N2], Options(auth_by=RESELLER, assign_to=CHILD, request_id=job_key)
    )
    assert list(created.succeeded) == [N2]
    # ... is not the request that sends that key as its id
    release = requests.run(
        knm, Operation.RELEASE, NumbersRequest(numbers=[N2], auth_by=SIBLING), job_key
    )
    assert release.failed[N2].error == "forbidden"
    assert stored(knm.store.db, N2)["pvt_state"] == "in_service"  # type: ignore[index]
    # ... nor the other way round: a request that sent a chunk's key as its id (N3) ...
    mine = NumbersRequest(numbers=[N3], account=RESELLER, auth_by=RESELLER)
    assert list(requests.run(knm, Operation.CREATE, mine, job_key).succeeded) == [N3]
    assert stored(knm.store.db, N3)["pvt_request_id"] == job_key  # type: ignore[index]
    # ... did not do that chunk's work: the chunk decides for itself (its requester may not)
    chunk = knm.numbers.get([N3], Options(auth_by=SIBLING, request_id=job_key))
    assert chunk.failed[N3].error == "forbidden"
