"""Run every benchmark and print its figures: ``make bench`` or ``python -m benchmarks.run``.

Each can also run alone: ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

from benchmarks import api, broker_overhead, carriers, core_ops, csv_import, provisioning, sweeps


def main() -> None:
    print("== core operations: MongoDB commands per batch, operation-layer CPU ==")
    core_ops.main()
    print("\n== broker round trip: knm task vs a no-op task ==")
    broker_overhead.main()
    print("\n== CSV import: commands, broker messages, rows/s, CPU ==")
    csv_import.main()
    print("\n== sweeps: commands per 1,000 aged ==")
    sweeps.main()
    print("\n== carriers: search fan-out, requests per purchase ==")
    carriers.main()
    print("\n== provisioning: 500 purchases through workers at 200 ms per provider call ==")
    provisioning.main()
    print("\n== HTTP API: GET requests/s, a write vs send_task, a 100,000-row CSV upload ==")
    api.main()


if __name__ == "__main__":
    main()
