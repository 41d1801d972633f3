"""The HTTP API without servers: KAZOO's error mapping, the route table, the compose service."""

from __future__ import annotations

import re
from pathlib import Path

from knm.api import envelope
from knm.api.server import create_app
from knm.domain import errors

ROOT = Path(__file__).resolve().parent.parent.parent


def test_number_failures_keep_kazoo_codes_and_names() -> None:
    missing = envelope.number_failure("+14155550100", errors.not_found().to_json())
    assert (missing.status, missing.message) == (404, "bad_identifier")
    assert missing.data == {
        "message": "bad identifier",
        "not_found": "The number could not be found",
    }
    exists = envelope.number_failure("+1", errors.number_exists("+14155550100").to_json())
    assert (exists.status, exists.message) == (409, "number_exists")
    assert exists.data["cause"] == "+14155550100"
    refused = envelope.number_failure("+1", errors.unauthorized("why").to_json())
    assert (refused.status, refused.message, refused.data["cause"]) == (403, "forbidden", "why")
    plain = envelope.number_failure("1000", errors.not_reconcilable().to_json())
    assert (plain.status, plain.message) == (400, "client error")
    assert plain.data == {"error": "not_reconcilable", "cause": "1000"}
    carrier = envelope.number_failure("+1", errors.by_carrier("+1").to_json())
    assert (carrier.status, carrier.message) == (500, "unspecified_fault")


def test_error_envelope_shape() -> None:
    response = envelope.error(409, "number_exists", {"cause": "+1"}, "req-1")
    assert response.headers["X-Request-Id"] == "req-1"
    assert response.body == (
        b'{"data":{"cause":"+1"},"error":"409","message":"number_exists",'
        b'"status":"error","request_id":"req-1"}'
    )


def test_validation_errors_name_the_field() -> None:
    fields = envelope.validation_fields(
        [{"loc": ("body", "data", "numbers"), "type": "missing", "msg": "Field required"}]
    )
    assert fields == {"data.numbers": {"missing": {"message": "Field required"}}}


def test_request_ids_are_checked() -> None:
    assert envelope.valid_request_id("a-b_c.d:1")
    assert not envelope.valid_request_id("has space")
    assert not envelope.valid_request_id("x" * 129)


def test_every_route_of_the_issue_is_served() -> None:
    paths = create_app().openapi()["paths"]  # the OpenAPI document lists every route
    served = {(method.upper(), path) for path, item in paths.items() for method in item}
    numbers = "/v2/accounts/{account_id}/phone_numbers"
    tasks = "/v2/accounts/{account_id}/tasks"
    wanted = {
        ("GET", numbers),
        *((m, f"{numbers}/{{number}}") for m in ("GET", "PUT", "POST", "PATCH", "DELETE")),
        ("PUT", f"{numbers}/{{number}}/activate"),
        ("PUT", f"{numbers}/{{number}}/reserve"),
        *((m, f"{numbers}/collection") for m in ("PUT", "POST", "PATCH", "DELETE")),
        ("PUT", f"{numbers}/collection/activate"),
        ("GET", "/v2/phone_numbers"),
        ("GET", "/v2/phone_numbers/classifiers"),
        ("GET", "/v2/phone_numbers/classifiers/{number}"),
        ("GET", "/v2/tasks"),
        ("GET", tasks),
        ("PUT", tasks),
        *((m, f"{tasks}/{{task_id}}") for m in ("GET", "PATCH", "DELETE")),
        ("GET", f"{tasks}/{{task_id}}/csv"),
        ("GET", "/v2/requests/{request_id}"),
        ("GET", "/v2/health"),
    }
    assert wanted <= served, wanted - served


def test_docker_compose_runs_the_api_with_a_health_check() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    service = re.search(r"\n  api:\n(.*?)\n\n", text, re.S)
    assert service is not None, "docker-compose.yml has no api service"
    body = service.group(1)
    assert '"api", "serve", "--host", "0.0.0.0"' in body
    assert "/v2/health" in body
