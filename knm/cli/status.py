"""``knm status``: queue depths, carriers' in-flight calls, breakers, recent failures, dead letters.

Workers share their carrier state through the coordination Redis (``KNM_COORDINATION_URL``, by
default the Redis broker); without one, each process has its own and ``knm status`` can only show
its own (empty) view, which it says.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from knm.cli.helpers import console, current_settings, open_knm, print_json

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def status(as_json: JsonFlag = False) -> None:
    """Show queue depths and consumers, carriers (in flight, breaker, failures), dead letters."""
    from knm.services import system_status
    from workers import producer, queue_depths
    from workers.app import all_queues

    settings = current_settings()
    broker = queue_depths.BrokerQueues(settings, lambda: producer.create_app(settings))
    with open_knm() as knm:
        report = system_status.gather(knm, settings, all_queues(), broker)
    if as_json:
        print_json(report)
        return
    _show(report)


def _show(report: dict[str, Any]) -> None:

    out = console()
    queues = Table(title="queues (messages waiting)")
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    queues.add_column("consumers", justify="right")
    queues.add_column("")
    consumers = report.get("consumers") or {}
    unconsumed = set(report.get("unconsumed") or ())
    for name, depth in report["queues"].items():
        count = consumers.get(name)
        queues.add_row(
            name,
            "?" if depth is None else str(depth),
            "?" if count is None else str(count),
            "[red]no consumer[/red]" if name in unconsumed else "",
        )
    out.print(queues)
    if "queues_error" in report:
        out.print(f"broker: {report['queues_error']}", markup=False)
    if "consumers_error" in report:
        out.print(f"consumers: {report['consumers_error']}", markup=False)
    if unconsumed:
        out.print(
            f"no consumer for {', '.join(sorted(unconsumed))}: their messages wait until a "
            "worker consumes those queues (a carrier.* queue no registered carrier owns never "
            "gets one)",
            markup=False,
        )
    carriers = Table(title=f"carriers (coordination: {report['coordination']})")
    for column in ("carrier", "queued", "in flight", "breaker", "pending orders", "last failure"):
        carriers.add_column(column)
    for module, entry in report["carriers"].items():
        failures = entry.get("recent_failures") or []
        last = f"{failures[0]['at']} {failures[0]['reason']}" if failures else ""
        breaker = entry.get("breaker", "?")
        if breaker == "open" and entry.get("retry_in_s") is not None:
            breaker = f"open ({entry['retry_in_s']:.0f} s)"
        carriers.add_row(
            module,
            str(entry.get("queued", "?")),
            str(entry.get("in_flight", "?")),
            breaker,
            str(entry.get("pending_provisioning", 0)),
            last,
        )
    out.print(carriers)
    if "coordination_error" in report:
        out.print(f"coordination Redis: {report['coordination_error']}", markup=False)
    if report["coordination"] == "per process":
        out.print(
            "no coordination Redis (KNM_COORDINATION_URL or a Redis broker): workers keep "
            "their carrier state to themselves, so in-flight calls and breakers are theirs alone"
        )
    dead = report["dead_letters"]
    out.print(f"dead letters: {dead['count']} (knm requests show|retry REQUEST_ID)")
    for item in dead["recent"]:
        out.print(
            f"  {item['request_id']} {item['operation']} via {item['module']}: {item['reason']}",
            markup=False,
        )


def register(cli: typer.Typer) -> None:
    """Add ``knm status`` to the command line."""
    cli.command("status")(status)
