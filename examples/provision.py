"""Provision numbers from a service that does not import knm: `celery` and the schema files only.

    KNM_BROKER_URL=redis://127.0.0.1:6379/0 knm worker &                    # a knm worker
    KNM_BROKER_URL=redis://127.0.0.1:6379/0 python examples/provision.py    # this producer
    python examples/provision.py +14155550193 +14155550194                  # other numbers

It reads knm's contract (knm/contract/schemas/v1; another service copies the directory and points
KNM_SCHEMAS_DIR at it): index.json names each task's kwargs schema and queue. Every payload is
checked against its schema before it is sent. The script creates the numbers (reserved for an
account, so it works on an empty inventory; a second run reports number_exists), then activates
them with a request_id (the idempotency key) and a reply_to queue, waits for the result, and
reads the outcome events knm sent to the reply_to queue (one per number, at least once:
deduplicated on (request_id, number)). Sending the same request_id again returns the first
outcome and does nothing twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from kombu import Connection, Queue

BROKER = os.environ.get("KNM_BROKER_URL", "redis://127.0.0.1:6379/0")
# Results go where knm's workers put them: the same Redis, or rpc:// with RabbitMQ.
BACKEND = os.environ.get("KNM_RESULT_BACKEND") or (
    BROKER if BROKER.startswith(("redis://", "rediss://")) else "rpc://"
)
SCHEMAS = Path(
    os.environ.get("KNM_SCHEMAS_DIR")
    or Path(__file__).resolve().parent.parent / "knm" / "contract" / "schemas" / "v1"
)
ACCOUNT = "0000000000000000000000000000e4a1"  # any 32-character id; create makes it
NUMBERS = ["+14155550192"]  # any reconcilable form
TIMEOUT_S = 60.0  # for a result
EVENTS_TIMEOUT_S = 10.0  # for the events, once the result is in


def load(name: str) -> Any:
    """One file of the contract."""
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ checking a payload
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "integer": int,
    "number": (int, float),
    "array": list,
    "object": dict,
    "null": type(None),
}


def _is(value: Any, json_type: str) -> bool:
    if isinstance(value, bool) and json_type in ("integer", "number"):
        return False  # JSON has no 1 == true
    return isinstance(value, _JSON_TYPES[json_type])


def tiny_check(payload: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The schema's ``required``, ``additionalProperties: false`` and each property's types."""
    errors = [f"{name}: required" for name in schema.get("required", []) if name not in payload]
    properties: dict[str, Any] = schema.get("properties", {})
    for name, value in payload.items():
        if name not in properties:
            if schema.get("additionalProperties", True) is False:
                errors.append(f"{name}: unknown field")
            continue
        branches = properties[name].get("anyOf", [properties[name]])
        if any("type" not in branch for branch in branches):
            continue  # a $ref or an unconstrained branch: not checked here
        types = [branch["type"] for branch in branches]
        if not any(_is(value, t) for t in types):
            errors.append(f"{name}: expected {' or '.join(types)}")
    return errors


def problems(payload: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``payload``: with jsonschema when installed, else ``tiny_check``."""
    try:
        import jsonschema
    except ImportError:
        return tiny_check(payload, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or 'payload'}: {error.message}"
        for error in validator.iter_errors(payload)
    ]


# ---------------------------------------------------------------------------------- payloads
def create_payload(numbers: list[str], account: str) -> dict[str, Any]:
    return {"numbers": numbers, "account": account, "state": "reserved"}


def activate_payload(
    numbers: list[str], account: str, request_id: str, reply_to: str
) -> dict[str, Any]:
    return {"numbers": numbers, "account": account, "request_id": request_id, "reply_to": reply_to}


# ---------------------------------------------------------------------------------- the calls
def call(client: Celery, index: dict[str, Any], task: str, payload: dict[str, Any]) -> Any:
    """Check ``payload`` against the task's schema, send it to the task's queue, wait."""
    entry = index["tasks"][task]
    errors = problems(payload, load(entry["kwargs"]))
    if errors:
        raise SystemExit(f"{task}: invalid payload: {'; '.join(errors)}")
    result = client.send_task(task, kwargs=payload, queue=entry["queue"])
    return result.get(timeout=TIMEOUT_S)


def read_events(replies: Queue, expected: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Events from the reply_to queue, deduplicated on (request_id, number), until ``expected``
    distinct ones arrived or ``EVENTS_TIMEOUT_S`` passed."""
    events: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + EVENTS_TIMEOUT_S
    while len(events) < expected and time.monotonic() < deadline:
        message = replies.get(no_ack=False, accept=["json"])
        if message is None:
            time.sleep(0.1)
            continue
        event = message.decode()
        events[(event["request_id"], event["number"])] = event
        message.ack()
    return events


def main(numbers: list[str]) -> None:
    index = load("index.json")
    event_schema = load(index["events"]["schema"])
    client = Celery(broker=BROKER, backend=BACKEND)

    created = call(client, index, "knm.numbers.create", create_payload(numbers, ACCOUNT))
    print("create:", sorted(created["succeeded"]), "failed:", created["failed"])

    request_id = f"provision-{uuid.uuid4()}"  # one key per intended change; reuse it to retry
    reply_to = f"provision.replies.{uuid.uuid4().hex}"
    with Connection(BROKER) as connection:
        # Declared (as knm declares it) before the request is sent, so no event is missed.
        replies = Queue(reply_to, durable=True)(connection.default_channel)
        replies.declare()
        try:
            payload = activate_payload(numbers, ACCOUNT, request_id, reply_to)
            result = call(client, index, "knm.numbers.activate", payload)
            for number, doc in result["succeeded"].items():
                print("activated:", number, doc["pvt_state"], doc.get("pvt_assigned_to"))
            for number, error in result["failed"].items():
                print("failed:", number, error)

            expected = len(result["succeeded"]) + len(result["failed"])
            events = read_events(replies, expected)
            print(f"events on {reply_to}: {len(events)} of {expected}")
            for event in events.values():
                print(
                    "event:",
                    f"number.{event['operation']}.{event['outcome']}",
                    event["number"],
                    event["old_state"],
                    "->",
                    event["new_state"],
                    event["error"] or "",
                    "; ".join(problems(event, event_schema)),
                )

            again = call(client, index, "knm.numbers.activate", payload)
            print("same request_id again, same outcome:", again == result)
        finally:
            replies.delete()


if __name__ == "__main__":
    main(sys.argv[1:] or NUMBERS)
