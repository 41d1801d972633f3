"""The HTTP API end to end: a real ``knm api serve`` process and a real worker, over httpx.

One stack for the module: a private ``redis-server`` (the broker and result backend), a database
on the MongoDB wire server, a worker consuming every queue, and the API process. Accounts: a
reseller with two sibling children, and a superduper admin; each has a key. Every test uses its
own numbers.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pymongo
import pytest
from typer.testing import CliRunner

from config.settings import Settings
from knm.cli.root import cli
from knm.services.facade import Knm
from knm.store.api_keys import ApiKeyStore, digest
from knm.store.numbers import connect
from tests import api_rig
from tests import workers_rig as rig
from workers.app import all_queues

pytestmark = pytest.mark.integration

RESELLER = "a1" * 16
CHILD = "b2" * 16
SIBLING = "c3" * 16
ADMIN = "d4" * 16
MAX_BODY = 8192
MAX_CSV = 64 * 1024


@dataclass
class Stack:
    api: api_rig.Api
    env: dict[str, str]
    db: str
    keys: dict[str, str]

    def client(self, account: str | None) -> httpx.Client:
        headers = {"X-Auth-Token": self.keys[account]} if account else {}
        return httpx.Client(base_url=self.api.url, headers=headers, timeout=60.0)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    mongo_url: str,
    mongo_client: pymongo.MongoClient[dict[str, Any]],
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("api")
    redis = rig.RedisServer(base / "redis")
    redis.start()
    db = f"knm_test_{uuid.uuid4().hex[:8]}"
    env = rig.worker_env(
        redis.url(0),
        mongo_url,
        db,
        base / "knm-data",
        {
            "KNM_API_WAIT_S": "60",
            "KNM_API_MAX_BODY_BYTES": str(MAX_BODY),
            "KNM_API_MAX_CSV_BYTES": str(MAX_CSV),
            "KNM_API_BODY_TIMEOUT_S": "3",
        },
    )
    settings = Settings(mongodb_url=mongo_url, mongodb_db=db, data_dir=base / "knm-data")
    knm = Knm(connect(settings), settings)
    knm.create_account(RESELLER, "Reseller", allow_additions=True)
    knm.create_account(CHILD, "Child", parent=RESELLER, allow_additions=True)
    knm.create_account(SIBLING, "Sibling", parent=RESELLER, allow_additions=True)
    knm.create_account(ADMIN, "Admin", admin=True)
    store = ApiKeyStore(knm.store.db)
    keys = {a: store.create(a, "test")[0] for a in (RESELLER, CHILD, SIBLING, ADMIN)}
    try:
        with (
            rig.run_worker(env, all_queues(settings), base / "logs"),
            api_rig.run_api(env, base / "logs") as api,
        ):
            yield Stack(api=api, env=env, db=db, keys=keys)
    finally:
        mongo_client.drop_database(db)
        redis.kill()


def _number() -> str:
    """A fresh US number for one test; its exchange starts with 2-9 as NANP's do, so its
    10-digit form reconciles to it too."""
    draw = uuid.uuid4().int
    return f"+1415{2 + draw % 8}{draw // 8 % 1_000_000:06d}"


def _path(number: str) -> str:
    return number.replace("+", "%2B")


def _error(response: httpx.Response, status: int, message: str) -> dict[str, Any]:
    """The crossbar error envelope; returns its data."""
    body = response.json()
    assert response.status_code == status, body
    assert body["status"] == "error"
    assert body["error"] == str(status)
    assert body["message"] == message
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert isinstance(body["data"], dict)
    return dict(body["data"])


def _ok(response: httpx.Response, status: int = 200) -> Any:
    body = response.json()
    assert response.status_code == status, body
    assert body["status"] == "success"
    assert body["request_id"] == response.headers["X-Request-Id"]
    return body["data"]


# ================================================================================ keys
def test_keys_created_listed_revoked_and_401s(stack: Stack) -> None:
    runner = CliRunner()
    env = {**stack.env}
    created = runner.invoke(cli, ["api-keys", "create", CHILD, "--name", "ci", "--json"], env=env)
    assert created.exit_code == 0, created.output
    shown = json.loads(created.stdout)
    key = shown["key"]
    listed = runner.invoke(cli, ["api-keys", "list", "--account", CHILD, "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert key not in listed.stdout
    assert digest(key) not in listed.stdout
    assert shown["id"] in {k["id"] for k in json.loads(listed.stdout)}

    with httpx.Client(base_url=stack.api.url, timeout=60) as http:
        path = f"/v2/accounts/{CHILD}/phone_numbers"
        _ok(http.get(path, headers={"X-Auth-Token": key}))
        _error(http.get(path), 401, "invalid_credentials")
        _error(http.get(path, headers={"X-Auth-Token": "nope"}), 401, "invalid_credentials")
        _error(http.get(path, headers={"X-Auth-Token": digest(key)}), 401, "invalid_credentials")
        revoked = runner.invoke(cli, ["api-keys", "revoke", shown["id"], "--json"], env=env)
        assert revoked.exit_code == 0, revoked.output
        assert json.loads(revoked.stdout)["revoked"]
        _error(http.get(path, headers={"X-Auth-Token": key}), 401, "invalid_credentials")

    unknown = runner.invoke(cli, ["api-keys", "create", "e5" * 16], env=env)
    assert unknown.exit_code == 1
    assert "does not exist" in unknown.output


# ================================================================================ one number
def test_number_lifecycle_through_every_single_number_route(stack: Stack) -> None:
    number = _number()
    base = f"/v2/accounts/{CHILD}/phone_numbers"
    with stack.client(CHILD) as http:
        created = _ok(http.put(f"{base}/{_path(number)}", json={"data": {"my_key": "v1"}}), 201)
        assert created["id"] == number
        assert created["state"] == "in_service"
        assert created["my_key"] == "v1"
        # any reconcilable form of the number, URL-encoded or not
        got = _ok(http.get(f"{base}/{number[2:]}"))
        assert got["id"] == number
        assert got["my_key"] == "v1"
        data = _error(http.put(f"{base}/{_path(number)}"), 409, "number_exists")
        assert data["error"] == "number_exists"
        assert data["cause"] == number

        merged = _ok(http.patch(f"{base}/{_path(number)}", json={"data": {"other": 2}}))
        assert merged["my_key"] == "v1"
        assert merged["other"] == 2
        # a GET's own keys sent back (state, features, id) are not public fields
        shown = {"only": True, "state": "available", "features": ["x"], "id": "+1"}
        replaced = _ok(http.post(f"{base}/{_path(number)}", json={"data": shown}))
        assert replaced["state"] == "in_service"
        assert "x" not in replaced.get("features", [])
        assert replaced["only"] is True
        assert "my_key" not in replaced

        reserved = _ok(http.put(f"{base}/{_path(number)}/reserve"), 201)
        assert reserved["state"] == "reserved"
        activated = _ok(http.put(f"{base}/{_path(number)}/activate", json={}), 201)
        assert activated["state"] == "in_service"

        released = _ok(http.delete(f"{base}/{_path(number)}"))
        assert released["_read_only"].get("is_deleted") or released["state"] != "in_service"
        data = _error(http.get(f"{base}/{_path(_number())}"), 404, "bad_identifier")
        assert data == {"message": "bad identifier", "not_found": "The number could not be found"}
        data = _error(http.get(f"{base}/1000"), 400, "client error")
        assert data["error"] == "not_reconcilable"


def test_authorization_across_sibling_accounts(stack: Stack) -> None:
    number = _number()
    child_base = f"/v2/accounts/{CHILD}/phone_numbers"
    with stack.client(CHILD) as child, stack.client(SIBLING) as sibling:
        _ok(child.put(f"{child_base}/{_path(number)}"), 201)
        # the sibling may not act in the child's account at all
        data = _error(sibling.get(f"{child_base}/{_path(number)}"), 403, "forbidden")
        assert CHILD in data["cause"]
        _error(sibling.delete(f"{child_base}/{_path(number)}"), 403, "forbidden")
        # nor reach the number through its own account: knm's own rule refuses it
        own = f"/v2/accounts/{SIBLING}/phone_numbers/{_path(number)}"
        assert _error(sibling.get(own), 403, "forbidden")["error"] == "forbidden"
        assert _error(sibling.delete(own), 403, "forbidden")["code"] == 403
        _error(sibling.patch(own, json={"data": {"x": 1}}), 403, "forbidden")
        # a child may not hard-delete
        _error(child.delete(f"{child_base}/{_path(number)}?hard=true"), 403, "forbidden")
    with stack.client(RESELLER) as reseller, stack.client(ADMIN) as admin:
        assert _ok(reseller.get(f"{child_base}/{_path(number)}"))["id"] == number
        _error(stack.client(CHILD).get(f"/v2/accounts/{RESELLER}/phone_numbers"), 403, "forbidden")
        deleted = _ok(admin.delete(f"{child_base}/{_path(number)}?hard=true"))
        assert deleted["state"] == "deleted"
        _error(admin.get(f"/v2/accounts/{'f6' * 16}/phone_numbers"), 404, "bad_identifier")


# ================================================================================ collections
def test_collection_routes(stack: Stack) -> None:
    one, two = _number(), _number()
    base = f"/v2/accounts/{CHILD}/phone_numbers/collection"
    with stack.client(CHILD) as http:
        body = {"data": {"numbers": [one, two, "123"], "tag": "c"}}
        result = _ok(http.put(base, json=body), 201)
        assert set(result["success"]) == {one, two}
        assert result["success"][one]["tag"] == "c"
        assert result["error"] == {"123": {"error": "not_reconcilable"}}
        merged = _ok(http.patch(base, json={"data": {"numbers": [one, two], "more": 1}}))
        assert merged["success"][two]["more"] == 1
        assert merged["success"][two]["tag"] == "c"
        replaced = _ok(http.post(base, json={"data": {"numbers": [one], "only": 1}}))
        assert "tag" not in replaced["success"][one]
        released = _ok(http.request("DELETE", base, json={"data": {"numbers": [one, two]}}))
        assert set(released["success"]) == {one, two}
    with stack.client(ADMIN) as admin:
        three = _number()
        made = _ok(admin.put(f"{base}?async=false", json={"data": {"numbers": [three]}}), 201)
        assert made["success"][three]["state"] == "in_service"
        released = _ok(admin.request("DELETE", base, json={"data": {"numbers": [three]}}))
        assert three in released["success"]
    with stack.client(CHILD) as http:
        four = _number()
        admin_base = f"/v2/accounts/{ADMIN}/phone_numbers"
        with stack.client(ADMIN) as admin:
            _ok(admin.put(f"{admin_base}/{_path(four)}?state=available"), 201)
        got = _ok(http.put(f"{base}/activate", json={"data": {"numbers": [four]}}), 201)
        assert got["success"][four]["state"] == "in_service"
        listed = _ok(http.get(f"/v2/accounts/{CHILD}/phone_numbers?filter_state=in_service"))
        assert four in listed["numbers"]
        assert listed["numbers"][four]["assigned_to"] == CHILD


def test_listing_search_and_classifiers(stack: Stack) -> None:
    numbers = sorted(f"+1628555{i:04d}" for i in range(3))
    with stack.client(ADMIN) as admin:
        made = _ok(
            admin.put(
                f"/v2/accounts/{RESELLER}/phone_numbers/collection",
                json={"data": {"numbers": numbers}},
            ),
            201,
        )
        assert set(made["success"]) == set(numbers)
    with stack.client(RESELLER) as http:
        first = http.get(f"/v2/accounts/{RESELLER}/phone_numbers?page_size=2")
        page = _ok(first)
        assert first.json()["page_size"] == 2
        assert len(page["numbers"]) == 2
        after = first.json()["next_start_key"]
        rest = _ok(http.get(f"/v2/accounts/{RESELLER}/phone_numbers?start_key={_path(after)}"))
        assert set(page["numbers"]) | set(rest["numbers"]) >= set(numbers)
        none = _ok(http.get(f"/v2/accounts/{RESELLER}/phone_numbers?filter_state=reserved"))
        assert not set(none["numbers"]) & set(numbers)
        searched = _ok(http.get("/v2/phone_numbers?prefix=415&quantity=2"))
        assert isinstance(searched, list)
    available = sorted(f"+1629555{i:04d}" for i in range(3))
    with stack.client(ADMIN) as admin:
        for number in available:
            path = f"/v2/accounts/{ADMIN}/phone_numbers/{_path(number)}?state=available"
            assert _ok(admin.put(path), 201)["state"] == "available"
    with stack.client(RESELLER) as http:
        path = f"/v2/accounts/{RESELLER}/phone_numbers?prefix=629&quantity=2"
        searched = _ok(http.get(path))
        assert [row["e164"] for row in searched] == available[:2]
        assert {row["state"] for row in searched} == {"available"}
        path = f"/v2/accounts/{RESELLER}/phone_numbers?prefix=629&quantity=2&offset=2"
        assert [row["number"] for row in _ok(http.get(path))] == available[2:]
        table = _ok(http.get("/v2/phone_numbers/classifiers"))
        assert "did_us" in table
        one = _ok(http.get("/v2/phone_numbers/classifiers/4158867900"))
        assert one["name"] == "did_us"
        assert one["e164"] == "+14158867900"
        _error(http.get("/v2/phone_numbers?quantity=2"), 400, "invalid data")


# ================================================================================ bad input
def test_envelope_on_bad_input_and_the_server_keeps_serving(stack: Stack) -> None:
    number = _number()
    base = f"/v2/accounts/{CHILD}/phone_numbers"
    with stack.client(CHILD) as http:
        data = _error(
            http.post(f"{base}/{_path(number)}", content=b"{bad", headers={}),
            400,
            "invalid json",
        )
        assert "JSON" in data["message"]
        data = _error(http.put(f"{base}/collection", json={"data": {}}), 400, "invalid data")
        assert "data.numbers" in data
        data = _error(
            http.put(f"{base}/collection", json={"data": {"numbers": []}}), 400, "invalid data"
        )
        assert "data.numbers" in data
        _error(http.get("/v2/nowhere"), 404, "not_found")
        data = _error(http.post("/v2/tasks"), 405, "method_not_allowed")
        assert "GET" in data["allowed"]
        big = {"data": {"numbers": [number], "blob": "x" * MAX_BODY}}
        data = _error(http.put(f"{base}/collection", json=big), 413, "payload_too_large")
        assert data["limit"] == MAX_BODY

        def chunks() -> Iterator[bytes]:
            yield b'{"data": {"numbers": ["' + number.encode() + b'"], "blob": "'
            for _ in range(4):
                yield b"y" * (MAX_BODY // 2)
            yield b'"}}'

        _error(http.put(f"{base}/collection", content=chunks()), 413, "payload_too_large")
        _error(http.get(f"{base}", headers={"X-Request-Id": "bad id!"}), 400, "invalid data")
        _error(http.put(f"{base}/x/activate?async=maybe"), 400, "invalid data")
        _error(http.get("/v2/accounts/short/phone_numbers"), 400, "invalid data")
        # nothing was written by any of these
        _error(http.get(f"{base}/{_path(number)}"), 404, "bad_identifier")
        assert _ok(http.get("/v2/health")) == {"ok": True}


def test_a_slow_client_gets_408(stack: Stack) -> None:
    host, port = stack.api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            f"PUT /v2/accounts/{CHILD}/phone_numbers/collection HTTP/1.1\r\n"
            f"Host: {host}\r\nX-Auth-Token: {stack.keys[CHILD]}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"data": ')
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 408 " in status_line, reply
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["message"] == "request_timeout"
    assert body["status"] == "error"
    with stack.client(CHILD) as http:
        assert _ok(http.get("/v2/health")) == {"ok": True}


# ================================================================================ async
def test_async_answers_202_and_the_request_id_is_the_idempotency_key(stack: Stack) -> None:
    number = _number()
    path = f"/v2/accounts/{CHILD}/phone_numbers/{_path(number)}"
    with stack.client(CHILD) as http:
        accepted = http.put(f"{path}?async=true")
        data = _ok(accepted, 202)
        request_id = data["request_id"]
        assert data["status"] == "accepted"
        assert data["location"] == f"/v2/requests/{request_id}"

        def done() -> dict[str, Any] | None:
            status = _ok(http.get(f"/v2/requests/{request_id}"))
            return status if status["status"] == "done" else None

        status = rig.wait_until(done, 60.0, 0.2, "the async request to finish")
        assert status["result"]["success"][number]["state"] == "in_service"
        with stack.client(SIBLING) as sibling:
            _error(sibling.get(f"/v2/requests/{request_id}"), 403, "forbidden")
        _error(http.get("/v2/requests/never-sent"), 404, "bad_identifier")

        other = _number()
        other_path = f"/v2/accounts/{CHILD}/phone_numbers/{_path(other)}"
        key = {"X-Request-Id": f"idem-{uuid.uuid4().hex}"}
        first = _ok(http.put(other_path, headers=key), 201)
        again = http.put(other_path, headers=key)
        assert _ok(again, 201) == first  # the first outcome, not number_exists
        assert again.headers["X-Request-Id"] == key["X-Request-Id"]
        _error(http.put(other_path), 409, "number_exists")


# ================================================================================ tasks
def test_csv_task_from_upload_to_result_csv(stack: Stack) -> None:
    numbers = [_number() for _ in range(5)]
    base = f"/v2/accounts/{CHILD}/tasks"
    with stack.client(CHILD) as http:
        help_ = _ok(http.get("/v2/tasks"))["tasks"]["number_management"]
        assert help_["import"]["mandatory"] == ["e164"]
        assert help_["list"]["expected_content"] is None
        assert _ok(http.get(f"{base}/help"))["tasks"]["number_management"] == help_

        def csv_body() -> Iterator[bytes]:  # sent chunked: the server streams it
            yield b"e164,account_id\r\n"
            for number in numbers:
                yield f"{number},\r\n".encode()
            yield b"not-a-number,\r\n"

        created = _ok(
            http.put(
                f"{base}?category=number_management&action=import",
                content=csv_body(),
                headers={"Content-Type": "text/csv"},
            ),
            201,
        )
        task = created["id"]
        assert created["status"] == "pending"
        assert created["total_count"] == 6
        assert task in {t["id"] for t in _ok(http.get(base))}
        shown = _ok(http.get(f"{base}/{task}"))["_read_only"]
        assert shown["action"] == "import"
        assert shown["category"] == "number_management"
        _ok(http.patch(f"{base}/{task}"))
        _error(http.patch(f"{base}/{task}"), 404, "bad_identifier")

        def finished() -> dict[str, Any] | None:
            info = _ok(http.get(f"{base}/{task}"))["_read_only"]
            return info if info["is_terminated"] else None

        info = rig.wait_until(finished, 60.0, 0.2, "the task to finish")
        assert (info["success_count"], info["failure_count"]) == (5, 1)
        result = http.get(f"{base}/{task}/csv")
        assert result.status_code == 200
        assert result.headers["content-type"].startswith("text/csv")
        lines = result.text.splitlines()
        assert lines[0].startswith("e164,")
        assert lines[0].endswith(",error")
        assert {line.split(",")[0] for line in lines[1:]} == {*numbers, "not-a-number"}
        assert any(line.endswith("not_reconcilable") for line in lines)
        with stack.client(SIBLING) as sibling:
            _error(sibling.get(f"{base}/{task}"), 403, "forbidden")
        _ok(http.delete(f"{base}/{task}"))
        _error(http.get(f"{base}/{task}"), 404, "bad_identifier")


def test_task_from_json_records_and_refused_uploads(stack: Stack) -> None:
    number = _number()
    base = f"/v2/accounts/{CHILD}/tasks"
    with stack.client(CHILD) as http:
        before = len(_ok(http.get(base)))
        records = {"data": {"records": [{"e164": number}]}}
        created = _ok(
            http.put(f"{base}?category=number_management&action=import", json=records), 201
        )
        assert created["total_count"] == 1
        csv_headers = {"Content-Type": "text/csv"}
        data = _error(
            http.put(
                f"{base}?category=number_management&action=import",
                content=b"number\r\n+14155550000\r\n",
                headers=csv_headers,
            ),
            400,
            "invalid data",
        )
        assert "e164" in json.dumps(data)
        _error(
            http.put(
                f"{base}?category=nope&action=import", content=b"e164\r\n", headers=csv_headers
            ),
            404,
            "bad_identifier",
        )
        _error(
            http.put(
                f"{base}?category=number_management&action=nope",
                content=b"e164\r\n",
                headers=csv_headers,
            ),
            404,
            "bad_identifier",
        )

        def big() -> Iterator[bytes]:
            yield b"e164\r\n"
            for i in range(MAX_CSV // 10 + 100):
                yield f"+1415{i:07d}\r\n".encode()

        _error(
            http.put(
                f"{base}?category=number_management&action=import",
                content=big(),
                headers=csv_headers,
            ),
            413,
            "payload_too_large",
        )
        # only the JSON task was stored: refused uploads leave nothing behind
        assert len(_ok(http.get(base))) == before + 1

        owned = _number()
        _ok(http.put(f"/v2/accounts/{CHILD}/phone_numbers/{_path(owned)}"), 201)
        listing = _ok(http.put(f"{base}?category=number_management&action=list"), 201)
        _ok(http.patch(f"{base}/{listing['id']}"))

        def finished() -> bool:
            return bool(_ok(http.get(f"{base}/{listing['id']}"))["_read_only"]["is_terminated"])

        rig.wait_until(finished, 60.0, 0.2, "the listing task to finish")
        rows = http.get(f"{base}/{listing['id']}/csv").text.splitlines()[1:]
        listed = {row.split(",")[0] for row in rows}
        assert owned in listed
        mine = _ok(http.get(f"/v2/accounts/{CHILD}/phone_numbers?page_size=1000"))["numbers"]
        assert listed == set(mine)
        with stack.client(SIBLING) as sibling:
            _error(sibling.put(f"{base}?category=number_management&action=list"), 403, "forbidden")


def test_serve_on_a_busy_port_fails_with_one_line(stack: Stack) -> None:
    import subprocess
    import sys

    port = stack.api.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, "-m", "knm", "api", "serve", "--port", port],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"knm: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_concurrent_writes_each_get_their_own_answer(stack: Stack) -> None:
    """Threads of the API wait on the result backend at once: every write gets its result."""
    from concurrent.futures import ThreadPoolExecutor

    numbers = [_number() for _ in range(8)]
    base = f"/v2/accounts/{CHILD}/phone_numbers"

    def create(number: str) -> tuple[str, int, Any]:
        with stack.client(CHILD) as http:
            response = http.put(f"{base}/{_path(number)}")
            return number, response.status_code, response.json()["data"]

    with ThreadPoolExecutor(len(numbers)) as pool:
        answers = list(pool.map(create, numbers))
    for number, status, data in answers:
        assert status == 201, data
        assert data["id"] == number
