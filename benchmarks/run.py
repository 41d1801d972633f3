"""Run the benchmarks and print their figures: ``make bench`` or ``python -m benchmarks.run``.

``python -m benchmarks.run [NAME ...] [--rows 2000,10000,100000]`` runs only the named ones
(core_ops, broker_overhead, csv_import, sweeps, carriers, provisioning); ``--rows`` sets the
CSV import's sizes (default 2,000 and 10,000; the 100,000-row import takes a few minutes).
Each can also run alone: ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from benchmarks import api, broker_overhead, carriers, core_ops, csv_import, provisioning, sweeps

#: (name, heading, entry point) in the order ``make bench`` runs them.
BENCHMARKS: list[tuple[str, str, Callable[[], None]]] = [
    (
        "core_ops",
        "core operations: MongoDB commands per batch, operation-layer CPU",
        core_ops.main,
    ),
    ("broker_overhead", "broker round trip: knm task vs a no-op task", broker_overhead.main),
    (
        "csv_import",
        "CSV import: commands, broker messages, rows/s, CPU",
        lambda: csv_import.main([]),
    ),
    ("sweeps", "sweeps: commands per 1,000 aged", sweeps.main),
    ("carriers", "carriers: search fan-out, requests per purchase", carriers.main),
    (
        "provisioning",
        "provisioning: 500 purchases through workers at 200 ms per provider call",
        provisioning.main,
    ),
    ("api", "HTTP API: GET requests/s, a write vs send_task, CSV uploads", api.main),
]


def main(argv: list[str] | None = None) -> None:
    names = [name for name, _, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(names))
    parser.add_argument("--rows", type=csv_import.parse_sizes, help="CSV import sizes")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: expected one of {', '.join(names)}")
    if args.rows:
        csv_import.SIZES = args.rows
    sys.argv = sys.argv[:1]  # the benchmarks that take options read them: none given here
    chosen = args.names or names
    for position, (_name, heading, run) in enumerate(b for b in BENCHMARKS if b[0] in chosen):
        print(f"{chr(10) if position else ''}== {heading} ==", flush=True)
        run()


if __name__ == "__main__":
    main()
