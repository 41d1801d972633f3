"""Run every benchmark and print its figures: ``make bench`` or ``python -m benchmarks.run``."""

from __future__ import annotations

from benchmarks import core_ops


def main() -> None:
    print("== core operations (issue 2) ==")
    core_ops.main()


if __name__ == "__main__":
    main()
