"""Run the benchmarks and print their figures: ``make bench`` or ``python -m benchmarks.run``.

``python -m benchmarks.run [NAME ...] [--rows 2000,10000,100000]`` runs only the named ones
(core_ops, broker_overhead, csv_import, sweeps, carriers, provisioning, api); ``--rows`` sets the
CSV import's sizes (default 2,000 and 10,000; the 100,000-row import takes a few minutes).
Each runs in its own process, as ``python -m benchmarks.<name>`` runs it alone: a benchmark
configures the process's Celery app and workers for its own private servers, and the next one
must not inherit them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.csv_import import parse_sizes

#: (name, heading) in the order ``make bench`` runs them.
BENCHMARKS: list[tuple[str, str]] = [
    ("core_ops", "core operations: MongoDB commands per batch, operation-layer CPU"),
    ("broker_overhead", "broker round trip: knm task vs a no-op task"),
    ("csv_import", "CSV import: commands, broker messages, rows/s, CPU"),
    ("sweeps", "sweeps: commands per 1,000 aged"),
    ("carriers", "carriers: search fan-out, requests per purchase"),
    ("provisioning", "provisioning: 500 purchases through workers at 200 ms per provider call"),
    ("api", "HTTP API: GET requests/s, a write vs send_task, CSV uploads"),
]


def commands(argv: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """The (heading, command line) of each benchmark ``argv`` asks for, in order."""
    names = [name for name, _ in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(names))
    parser.add_argument("--rows", type=parse_sizes, help="CSV import sizes, e.g. 2000,10000")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: expected one of {', '.join(names)}")
    chosen = args.names or names
    planned = []
    for name, heading in BENCHMARKS:
        if name not in chosen:
            continue
        command = [sys.executable, "-m", f"benchmarks.{name}"]
        if name == "csv_import" and args.rows:
            command += ["--rows", ",".join(str(n) for n in args.rows)]
        planned.append((heading, command))
    return planned


def main(argv: list[str] | None = None) -> None:
    failed = []
    for position, (heading, command) in enumerate(commands(argv)):
        print(f"{chr(10) if position else ''}== {heading} ==", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(command[2])  # the benchmark's module
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
