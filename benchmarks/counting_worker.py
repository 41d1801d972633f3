"""A knm worker that counts the MongoDB commands it sends: ``python -m benchmarks.counting_worker
<celery worker arguments>``.

pymongo's command monitoring (a global listener, so every client the worker opens reports to
it; ``getMore`` counts like any other command) counts commands by name; a thread writes the
counts as JSON to ``KNM_BENCH_COMMANDS_FILE`` every ``DUMP_S`` seconds, so a benchmark reads
the counts before and after a phase (``read_counts``) without stopping the worker.

``KNM_BENCH_PROFILE=<path>``: the worker runs under cProfile timing CPU (not wall) time, and
writes the profile there when it stops (``python -m pstats <path>``).
"""

from __future__ import annotations

import cProfile
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pymongo import monitoring

from benchmarks.common import CommandCounter

DUMP_S = 0.1


def read_counts(path: Path, settle_s: float = 3 * DUMP_S) -> Counter[str]:
    """The counts a worker wrote to ``path`` (after the next dump, so nothing is missed)."""
    time.sleep(settle_s)
    try:
        return Counter(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return Counter()


def _dump_forever(counter: CommandCounter, path: Path) -> None:
    last: dict[str, int] | None = None
    while True:
        counts = dict(counter.counts)
        if counts != last:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(counts))
            tmp.replace(path)
            last = counts
        time.sleep(DUMP_S)


def main() -> None:
    counter = CommandCounter()
    monitoring.register(counter)
    target = os.environ.get("KNM_BENCH_COMMANDS_FILE")
    if target:
        threading.Thread(target=_dump_forever, args=(counter, Path(target)), daemon=True).start()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    profile_to = os.environ.get("KNM_BENCH_PROFILE")
    if not profile_to:
        celery_main()
        return
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(celery_main)
    finally:
        profiler.dump_stats(profile_to)


if __name__ == "__main__":
    main()
