"""What ``knm status`` reports: queue depths and consumers per queue (every ``carrier.*`` queue
holding messages among them, flagged when nobody consumes it), and per carrier integration the
calls in flight, the circuit breaker, recent failures and the provisioning ledger's open intents;
plus the dead letters waiting for ``knm requests retry``."""

from __future__ import annotations

from typing import Any, Protocol

from carriers.base import queue_name
from carriers.coordination import coordination_url, coordinator_for
from carriers.integration import Integration
from carriers.registry import CarrierRegistry
from config.settings import Settings
from knm.services.facade import Knm


class BrokerQueues(Protocol):
    """What the broker says about queues. The service only asks; ``workers.queue_depths``
    answers (it holds the broker clients, which stay out of the services)."""

    def depths(self, queues: list[str]) -> dict[str, int | None]:
        """Messages ready in each queue (``None`` where the broker cannot tell)."""
        ...

    def carrier_queues(self) -> list[str]:
        """Every ``carrier.*`` queue holding messages that the broker can list."""
        ...

    def consumers(self, queues: list[str]) -> dict[str, int | None]:
        """How many consumers each queue has (``None`` where the broker cannot tell)."""
        ...


def integrations(registry: CarrierRegistry, knm: Knm) -> list[str]:
    """The modules that call a provider (the ones with breakers and rate limits)."""
    out = []
    for name in registry.names():
        carrier = registry.get(name, knm.numbers.carrier_ctx)
        if isinstance(carrier, Integration):
            out.append(name)
    return out


def gather(knm: Knm, settings: Settings, queues: list[str], broker: BrokerQueues) -> dict[str, Any]:
    """Everything ``knm status`` shows, JSON-ready; parts that cannot be read say why.

    ``queues`` are knm's own; any other ``carrier.*`` queue holding messages is added (work
    for a module no registered carrier owns). ``broker`` gives the depths and counts each
    queue's consumers; ``unconsumed`` lists the queues with messages and no consumer (nothing
    will ever take them unless a worker for that queue starts).
    """
    status: dict[str, Any] = {"queues": {}, "carriers": {}, "dead_letters": {}}
    try:
        found = broker.carrier_queues()
        names = [*queues, *(q for q in found if q not in queues)]
        status["queues"] = broker.depths(names)
    except Exception as exc:  # the broker is down: say so, show the rest
        status["queues_error"] = f"{type(exc).__name__}: {exc}"
    if "queues_error" not in status:
        try:
            counts = broker.consumers(list(status["queues"]))
        except Exception as exc:  # the workers could not be asked: the depths still stand
            status["consumers_error"] = f"{type(exc).__name__}: {exc}"
        else:
            status["consumers"] = counts
            status["unconsumed"] = [
                q for q, depth in status["queues"].items() if depth and counts.get(q) == 0
            ]
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
        entry["queue"] = queue_name(module)
        entry["queued"] = status["queues"].get(queue_name(module))
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
