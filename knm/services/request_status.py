"""What knm knows about one request: its recorded outcome, events, dead letters and provider
calls, gathered for ``knm requests show`` (and for a retry of its dead letters)."""

from __future__ import annotations

import re
from typing import Any

from knm.services import jobs
from knm.services.facade import Knm
from knm.services.jobs import JOB_OPERATION_PREFIX
from knm.services.numbers_requests import merge_results


def describe(knm: Knm, request_id: str) -> dict[str, Any] | None:
    """The request's status, or ``None`` when nothing about it is recorded (any more)."""
    parts = knm.outcomes.for_request(request_id)
    dead = knm.dead_letters.for_request(request_id)
    # the ledger records the request's key: its id, then ``/`` and its scope
    key = {"$regex": f"^{re.escape(request_id)}(/|$)"}
    calls = list(
        knm.store.db["provisioning"].find(
            {"request_id": key},
            {"_id": 0, "module": 1, "number": 1, "action": 1, "status": 1, "error": 1},
        )
    )
    if not parts and not dead and not calls:
        return None
    if dead:
        status = "dead_letter"
    elif parts:
        status = "done"
    else:
        status = "in_progress"
    operations = sorted({p["operation"] for p in parts} | {d["operation"] for d in dead})
    return {
        "request_id": request_id,
        "status": status,
        "operation": operations[0] if len(operations) == 1 else operations,
        "result": merge_results([p["result"] for p in parts]) if parts else None,
        "events": [e for p in parts for e in p.get("events", [])],
        "dead_letters": [
            {
                "part": d["part"],
                "module": d.get("module"),
                "reason": d.get("reason"),
                "attempts": d.get("attempts"),
                "numbers": d.get("payload", {}).get("numbers", []),
                "updated": d.get("updated"),
            }
            for d in dead
        ],
        "provider_calls": sorted(calls, key=lambda c: (c.get("module", ""), c.get("number", ""))),
    }


def dead_shares(knm: Knm, request_id: str) -> list[dict[str, Any]]:
    """The request's dead letters, each with the task and kwargs that send its share again.

    A CSV job's rows (request id ``<job id>:<chunk>``) go again as their chunk, which hands
    them to their carrier's queue.
    """
    out: list[dict[str, Any]] = []
    for dead in knm.dead_letters.for_request(request_id):
        payload = dict(dead["payload"])
        if _is_job(dead):
            kwargs = {"job_id": payload["job_id"], "chunk": payload["chunk"]}
            out.append({**dead, "task": "knm.jobs.chunk", "kwargs": kwargs})
            continue
        payload["request_id"] = request_id
        out.append({**dead, "task": f"knm.numbers.{dead['operation']}", "kwargs": payload})
    return out


def _is_job(dead: dict[str, Any]) -> bool:
    return str(dead.get("operation", "")).startswith(JOB_OPERATION_PREFIX)


def prepare_retry(knm: Knm, dead: dict[str, Any]) -> None:
    """Drop a dead share's recorded outcome and dead letter so the request runs it again.

    Numbers the request already wrote are recognized by their request stamp and not redone,
    and the ledger asks the provider before re-ordering anything. If sending fails, call
    ``undo_retry``.
    """
    if _is_job(dead):
        failed = list((dead.get("result") or {}).get("failed", {}))
        jobs.reopen_rows(knm, dead["payload"]["job_id"], dead["payload"]["chunk"], failed)
    else:
        knm.outcomes.forget(dead["request_id"], dead["part"])
    knm.dead_letters.remove(dead["request_id"], dead["part"])


def undo_retry(knm: Knm, dead: dict[str, Any]) -> None:
    """Put the dead letter back (the retry could not be sent)."""
    record = {k: v for k, v in dead.items() if k not in ("task", "kwargs")}
    knm.dead_letters.collection.replace_one({"_id": record["_id"]}, record, upsert=True)
