"""What ``knm status`` reports: queue depths per queue, and per carrier integration the calls in
flight, the circuit breaker, recent failures and the provisioning ledger's open intents; plus the
dead letters waiting for ``knm requests retry``."""

from __future__ import annotations

from typing import Any

from carriers.coordination import coordination_url, coordinator_for
from carriers.integration import Integration
from carriers.registry import CarrierRegistry
from config.celery import carrier_queue
from config.settings import Settings
from knm.app import Knm
from knm.queue_depths import queue_depths


def integrations(registry: CarrierRegistry, knm: Knm) -> list[str]:
    """The modules that call a provider (the ones with breakers and rate limits)."""
    out = []
    for name in registry.names():
        carrier = registry.get(name, knm.numbers.carrier_ctx)
        if isinstance(carrier, Integration):
            out.append(name)
    return out


def gather(knm: Knm, settings: Settings, queues: list[str]) -> dict[str, Any]:
    """Everything ``knm status`` shows, JSON-ready; parts that cannot be read say why."""
    status: dict[str, Any] = {"queues": {}, "carriers": {}, "dead_letters": {}}
    try:
        status["queues"] = queue_depths(settings, queues)
    except Exception as exc:  # the broker is down: say so, show the rest
        status["queues_error"] = f"{type(exc).__name__}: {exc}"
    modules = integrations(knm.numbers.carriers, knm)
    shared = coordination_url(settings) is not None
    status["coordination"] = "redis" if shared else "per process"
    try:
        carriers = coordinator_for(settings).snapshot(modules)
    except Exception as exc:  # the coordination Redis is down
        carriers = {m: {} for m in modules}
        status["coordination_error"] = f"{type(exc).__name__}: {exc}"
    pending = _pending_by_module(knm)
    for module in modules:
        entry = dict(carriers.get(module, {}))
        entry["queue"] = carrier_queue(module)
        entry["queued"] = status["queues"].get(carrier_queue(module))
        entry["pending_provisioning"] = pending.get(module, 0)
        status["carriers"][module] = entry
    recent = knm.dead_letters.recent(10)
    status["dead_letters"] = {
        "count": knm.dead_letters.count(),
        "recent": [
            {
                "request_id": d.get("request_id"),
                "module": d.get("module"),
                "operation": d.get("operation"),
                "reason": d.get("reason"),
                "updated": d.get("updated"),
            }
            for d in recent
        ],
    }
    return status


def _pending_by_module(knm: Knm) -> dict[str, int]:
    pipeline: list[dict[str, Any]] = [
        {"$match": {"status": "pending"}},
        {"$group": {"_id": "$module", "n": {"$sum": 1}}},
    ]
    return {doc["_id"]: int(doc["n"]) for doc in knm.store.db["provisioning"].aggregate(pipeline)}
