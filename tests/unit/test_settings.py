"""Settings checked at start-up: every error names the environment variable and the rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import SettingsError, get_settings, reset_settings
from workers.celery_config import celery_config

ROOT = Path(__file__).resolve().parents[2]


def _settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()


def test_the_soft_time_limit_follows_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """``KNM_TASK_TIME_LIMIT_S=30`` used to give a 1-second soft limit (hard - 60, at least 1)."""
    _settings_with(monkeypatch, KNM_TASK_TIME_LIMIT_S="30", KNM_BROKER_VISIBILITY_TIMEOUT_S="60")
    settings = get_settings()
    assert settings.soft_time_limit_s == 27
    config = celery_config(settings, ["knm"])
    assert (config["task_soft_time_limit"], config["task_time_limit"]) == (27, 30)
    reset_settings()
    monkeypatch.delenv("KNM_TASK_TIME_LIMIT_S")
    monkeypatch.delenv("KNM_BROKER_VISIBILITY_TIMEOUT_S")
    assert get_settings().soft_time_limit_s == 3540  # the default hour, less a minute


def test_an_explicit_soft_time_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    _settings_with(monkeypatch, KNM_TASK_SOFT_TIME_LIMIT_S="3000")
    assert celery_config(get_settings(), ["knm"])["task_soft_time_limit"] == 3000


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"KNM_TASK_SOFT_TIME_LIMIT_S": "40", "KNM_TASK_TIME_LIMIT_S": "30"},
            "KNM_TASK_SOFT_TIME_LIMIT_S=40 must be below KNM_TASK_TIME_LIMIT_S=30",
        ),
        (
            {"KNM_TASK_SOFT_TIME_LIMIT_S": "30", "KNM_TASK_TIME_LIMIT_S": "30"},
            "KNM_TASK_SOFT_TIME_LIMIT_S=30 must be below KNM_TASK_TIME_LIMIT_S=30",
        ),
        (
            {"KNM_TASK_TIME_LIMIT_S": "9000"},
            "KNM_BROKER_VISIBILITY_TIMEOUT_S=7200 must be above KNM_TASK_TIME_LIMIT_S=9000",
        ),
        (
            {"KNM_CARRIER_RETRY_BASE_S": "700"},
            "KNM_CARRIER_RETRY_BASE_S=700 must not be above KNM_CARRIER_RETRY_MAX_S=600",
        ),
        ({"KNM_TASK_TIME_LIMIT_S": "1"}, "KNM_TASK_TIME_LIMIT_S: Input should be greater"),
        ({"KNM_SWEEP_BATCH_SIZE": "0"}, "KNM_SWEEP_BATCH_SIZE: Input should be greater"),
        ({"KNM_WORKER_CONCURRENCY": "-2"}, "KNM_WORKER_CONCURRENCY: Input should be greater"),
        ({"KNM_MESSAGE_MAX_BYTES": "0"}, "KNM_MESSAGE_MAX_BYTES: Input should be greater"),
        (
            {"KNM_CARRIER_HTTP__MAX_ATTEMPTS": "0"},
            "KNM_CARRIER_HTTP__MAX_ATTEMPTS: Input should be greater",
        ),
        (
            {"KNM_CARRIERS__BANDWIDTH2__ORDER_POLL_MAX": "0"},
            "KNM_CARRIERS__BANDWIDTH2__ORDER_POLL_MAX: Input should be greater",
        ),
        ({"KNM_CLASSIFIERS": '{"x": 5}'}, "KNM_CLASSIFIERS: Input should be"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    _settings_with(monkeypatch, **env)
    with pytest.raises(SettingsError) as refused:
        get_settings()
    message = str(refused.value)
    assert message.startswith("invalid settings: ")
    assert expected in message
    assert "\n" not in message


def test_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    _settings_with(
        monkeypatch,
        KNM_CARRIERS__TELNYX__TOKEN="s3cr3t-token",
        KNM_CARRIERS__TELNYX__RATE_LIMIT_PER_S="-1",
        KNM_TASK_TIME_LIMIT_S="s3cr3t-token",
    )
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert "KNM_CARRIERS__TELNYX__RATE_LIMIT_PER_S" in str(refused.value)
    assert "KNM_TASK_TIME_LIMIT_S" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("command", ["worker", "beat", "numbers"])
def test_knm_with_bad_settings_exits_2_with_one_line(command: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNM_")}
    env.update(
        {
            "KNM_TASK_TIME_LIMIT_S": "30",
            "KNM_TASK_SOFT_TIME_LIMIT_S": "45",
            "KNM_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": str(ROOT),
        }
    )
    args = ["get", "+14155550100"] if command == "numbers" else []
    done = subprocess.run(
        [sys.executable, "-m", "knm", command, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (
        "knm: error: invalid settings: KNM_TASK_SOFT_TIME_LIMIT_S=45 must be below "
        "KNM_TASK_TIME_LIMIT_S=30 (the soft limit warns a task before the hard one kills it)"
    )
    assert not (tmp_path / "data").exists()  # nothing started, nothing written
