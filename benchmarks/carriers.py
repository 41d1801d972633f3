"""Carrier benchmarks against the sandbox over real HTTP on loopback.

1. **Search fan-out**: three integrations (knm_telnyx, knm_vitelity, knm_voip_innovations), each
   answering after 200 ms. A fresh search asks them at once; its wall time against 200 ms shows
   whether the calls overlap (target: under 1.5x; one after another would be 3x).
2. **Requests per purchase**: numbers bought one request at a time while the sandbox answers a
   share of all requests with a transient failure. Counted by the sandbox itself: every request
   that reached an order or ownership endpoint, divided by the numbers bought; and purchases per
   number (must never exceed 1). Two fault mixes: 30% 503 (the provider refuses before acting:
   retried at once, nothing to ask) and 15% 503 + 15% timeouts after the order took effect (each
   such timeout costs one ownership question before anything is re-sent).

``python -m benchmarks.carriers [--purchases N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient

from benchmarks.common import mongo_server
from carriers.http import close_clients
from carriers.sandbox import Injection, Sandbox, SandboxClient
from config.settings import Settings, reset_settings
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.search import SearchQuery
from knm.store.numbers import Store

ACCOUNT = "be" * 16
FANOUT = ["knm_telnyx", "knm_vitelity", "knm_voip_innovations"]
#: Which sandbox endpoints a purchase may touch, per provider (orders, polls, ownership).
PURCHASE_ENDPOINTS = {
    "telnyx": {"order", "number"},
}
LATENCY_MS = 200.0


@contextmanager
def environment(sandbox: Sandbox, **extra: str) -> Iterator[None]:
    """Point this process's settings at ``sandbox`` (and restore the environment after)."""
    values = {**sandbox.env(), **extra}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset_settings()
    close_clients()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_settings()
        close_clients()


def _knm(url: str, db: str) -> Knm:
    client: MongoClient[dict[str, Any]] = MongoClient(url, tz_aware=True)
    store = Store(client[db])
    store.ensure_indexes()
    knm = Knm(store, Settings(mongodb_url=url, mongodb_db=db))
    if knm.get_account(ACCOUNT) is None:
        knm.create_account(ACCOUNT, "Bench", allow_additions=True)
    return knm


def fan_out(url: str, rounds: int = 10) -> dict[str, float]:
    injection = Injection(latency_ms=LATENCY_MS)
    with Sandbox(injection=injection) as sandbox, environment(sandbox):
        knm = _knm(url, "bench_carriers_fanout")
        walls: list[float] = []
        singles: dict[str, list[float]] = {m: [] for m in FANOUT}
        for i in range(rounds + 1):
            started = time.perf_counter()
            results = knm.search(
                SearchQuery(prefix="212", quantity=5, carriers=FANOUT, query_id=f"fan-{i}")
            )
            wall = time.perf_counter() - started
            assert {r.carrier_module for r in results} == set(FANOUT), results
            if i > 0:  # the first round opens the connections
                walls.append(wall)
            for module in FANOUT:
                started = time.perf_counter()
                knm.search(
                    SearchQuery(
                        prefix="212", quantity=5, carriers=[module], query_id=f"{module}{i}"
                    )
                )
                if i > 0:
                    singles[module].append(time.perf_counter() - started)
        knm.store.db.client.drop_database("bench_carriers_fanout")
    median = statistics.median(walls)
    return {
        "median_s": median,
        "ratio": median / (LATENCY_MS / 1000),
        "sequential_s": sum(statistics.median(v) for v in singles.values()),
    }


def purchases(url: str, count: int, error_rate: float, timeout_rate: float) -> dict[str, float]:
    injection = Injection(error_rate=error_rate, timeout_rate=timeout_rate, stall_s=0.6, seed=11)
    fast = {
        "KNM_CARRIER_HTTP__BACKOFF_BASE_S": "0.005",
        "KNM_CARRIER_HTTP__BACKOFF_MAX_S": "0.02",
        "KNM_CARRIER_HTTP__TIMEOUT_S": "0.3",
        "KNM_CARRIER_HTTP__MAX_ATTEMPTS": "8",
    }
    with Sandbox(stock_size=count + 10) as sandbox, environment(sandbox, **fast):
        client = SandboxClient(sandbox.url)
        knm = _knm(url, "bench_carriers_buy")
        found = knm.search(
            SearchQuery(prefix="646555", quantity=count, carriers=["knm_telnyx"], query_id="buy")
        )
        numbers = [r.number for r in found][:count]
        assert len(numbers) == count, len(numbers)
        client.configure(**{k: v for k, v in vars(injection).items()})
        before = client.requests("telnyx")
        bought = failed = 0
        for number in numbers:
            batch = knm.numbers.move([number], ACCOUNT, Options(auth_by="system"))
            bought += len(batch.succeeded)
            failed += len(batch.failed)
        after = client.requests("telnyx")
        stats = client.stats()
        client.close()
        knm.store.db.client.drop_database("bench_carriers_buy")
    sent = sum(after.get(e, 0) - before.get(e, 0) for e in PURCHASE_ENDPOINTS["telnyx"])
    orders = after.get("order", 0) - before.get("order", 0)
    per_number = stats["purchases"].get("telnyx", {})
    return {
        "bought": bought,
        "failed": failed,
        "requests": sent,
        "orders": orders,
        "questions": sent - orders,
        "per_purchase": sent / bought if bought else float("inf"),
        "max_purchases_per_number": max(per_number.values(), default=0),
        "upstream_purchases": sum(per_number.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purchases", type=int, default=200)
    args = parser.parse_args()
    with mongo_server() as url:
        fan = fan_out(url)
        print(
            f"search fan-out over {len(FANOUT)} carriers at {LATENCY_MS:.0f} ms each: median "
            f"{fan['median_s'] * 1000:.0f} ms = {fan['ratio']:.2f}x the latency "
            f"(one after another: {fan['sequential_s'] * 1000:.0f} ms)"
        )
        print(
            "| faults | bought | failed | requests (orders + ownership questions) "
            "| per purchase | max buys of one number |"
        )
        print("|---|---|---|---|---|---|")
        for label, err, tmo in (
            ("none", 0.0, 0.0),
            ("30% 503", 0.3, 0.0),
            ("15% 503 + 15% timeouts after the effect", 0.15, 0.15),
        ):
            r = purchases(url, args.purchases, err, tmo)
            print(
                f"| {label} | {r['bought']} | {r['failed']} | {r['requests']} "
                f"({r['orders']} + {r['questions']}) | "
                f"{r['per_purchase']:.3f} | {r['max_purchases_per_number']} |"
            )


if __name__ == "__main__":
    main()
