"""Run every benchmark and print its figures: ``make bench`` or ``python -m benchmarks.run``."""

from __future__ import annotations

from benchmarks import core_ops, csv_import, sweeps


def main() -> None:
    print("== core operations (issue 2) ==")
    core_ops.main()
    print("\n== CSV import: commands, broker messages, rows/s, CPU ==")
    csv_import.main()
    sweeps.main()


if __name__ == "__main__":
    main()
