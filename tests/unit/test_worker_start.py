"""How ``knm worker`` and ``knm beat`` are started (workers/start.py), without a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from workers.start import (
    BEAT_SCHEDULE_FILE,
    LogLevel,
    Pool,
    QueueNameError,
    schedule_file,
    split_queues,
    worker_argv,
)

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_queues_given_as_lists_and_repeats_keep_their_order_once() -> None:
    assert split_queues(["knm, carrier.knm_telnyx", "celery", "knm"]) == [
        "knm",
        "carrier.knm_telnyx",
        "celery",
    ]


@pytest.mark.parametrize("values", [["a,,b"], ["a", " "], [","]])
def test_an_empty_queue_name_is_refused_with_the_list(values: list[str]) -> None:
    with pytest.raises(QueueNameError, match=r"empty queue name in --queues '.*'"):
        split_queues(values)


def test_the_worker_argv_passes_only_the_options_given() -> None:
    assert worker_argv(["knm", "celery"]) == [
        "worker",
        "--queues",
        "knm,celery",
        "--loglevel",
        "INFO",
    ]
    assert worker_argv(
        ["carrier.knm_telnyx"],
        loglevel=LogLevel.WARNING,
        concurrency=50,
        pool=Pool.THREADS,
        hostname="provider@%h",
    ) == [
        "worker",
        "--queues",
        "carrier.knm_telnyx",
        "--loglevel",
        "WARNING",
        "--concurrency",
        "50",
        "--pool",
        "threads",
        "--hostname",
        "provider@%h",
    ]


def test_beat_keeps_its_schedule_in_the_data_dir_it_creates(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-yet"
    path = schedule_file(Settings(data_dir=data_dir))
    assert path == data_dir.resolve() / BEAT_SCHEDULE_FILE
    assert data_dir.is_dir()


def test_the_command_line_pays_for_celery_only_when_it_starts_it() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, knm.cli.root, workers.start; "
            "print(sorted(m for m in ('celery', 'kombu') if m in sys.modules))",
        ],
        env=_clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_knm_worker_refuses_an_empty_queue_name_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "knm", "worker", "--queues", "knm,,celery"],
        env=_clean_env(KNM_DATA_DIR=str(tmp_path / "data")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "python -m knm worker: error: empty queue name in --queues 'knm,,celery'\n"
    )
