"""Every benchmark runs end to end at a tiny size (so none rots unnoticed).

They run as ``make bench`` runs them: on the embedded default store (its own server process),
with a private redis-server where they need a broker. Figures are not checked here, only that
each run completes and reports.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import (
    api,
    broker_overhead,
    carriers,
    core_ops,
    csv_import,
    provisioning,
    run,
    sweeps,
)
from benchmarks.common import implied_get_more, mongo_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True)
def _embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNM_BENCH_MONGODB_URL", raising=False)
    monkeypatch.delenv("KNM_BENCH_ENGINE", raising=False)


def test_core_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_ops, "SIZES", (2, 3))
    monkeypatch.setattr(core_ops, "CPU_BATCH", 4)
    report = core_ops.run()
    assert set(report["commands_per_operation"]) == {"create", "reserve", "activate", "release"}
    assert report["create_500_cpu"]["operation_layer_cpu_s"] > 0


def test_csv_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_import, "SIZES", (30,))
    report: dict[str, Any] = csv_import.run()
    entry = report["sizes"][30]
    assert report["mongodb"] == "embedded"
    assert entry["measured"] is True
    assert entry["mongo_commands"] > 0
    assert entry["store_cpu_ms_per_row"] is not None


def test_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweeps, "BASE_DUE", 10)
    monkeypatch.setattr(sweeps, "NOT_DUE", (0, 20))
    monkeypatch.setattr(sweeps, "MAX_DUE", 10)
    report = sweeps.run()
    assert [row["due"] for row in report["independence"]] == [10, 10]


def test_carriers() -> None:
    with mongo_server() as url:
        fan = carriers.fan_out(url, rounds=1)
        bought = carriers.purchases(url, 3, 0.3, 0.0)
    assert fan["median_s"] > 0
    assert bought["bought"] == 3
    assert bought["max_purchases_per_number"] == 1


def test_broker_overhead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_overhead, "ROUNDS", 2)
    report = broker_overhead.run()
    assert report["median_ms"]["noop_round_trip"] > 0
    assert set(report["worker_cpu_ms_per_task"]) == {"noop", "get", "activate", "routed_write"}


def test_provisioning() -> None:
    report = provisioning.run(3, 10.0, 2, csv_rows=2)
    assert (report["bought"], report["failed"]) == (3, 0)
    assert report["mongo_commands_per_purchase"] > 0
    assert (report["csv"]["succeeded"], report["csv"]["failed"]) == (2, 0)
    assert report["csv"]["mongo_commands_per_row"] > 0


def test_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "ROUNDS", 2)
    monkeypatch.setattr(api, "GET_REQUESTS", 8)
    monkeypatch.setattr(api, "CSV_SIZES", (20,))
    report = api.run()
    assert report["reads"]["requests"] == 8
    assert report["writes"]["api_vs_send_task"] > 0
    assert report["uploads"][0]["rows"] == 20
    assert report["uploads"][0]["peak_rss_mb"] > 0


def test_run_takes_names_and_import_sizes() -> None:
    """``python -m benchmarks.run csv_import --rows N`` runs that benchmark alone at that size,
    in its own process (as ``python -m benchmarks.csv_import --rows N``)."""
    planned = run.commands(["csv_import", "--rows", "40,80"])
    assert [command[1:] for _, command in planned] == [
        ["-m", "benchmarks.csv_import", "--rows", "40,80"]
    ]
    assert planned[0][0].startswith("CSV import")
    assert [command[2] for _, command in run.commands([])] == [
        f"benchmarks.{name}" for name, _ in run.BENCHMARKS
    ]
    with pytest.raises(SystemExit):
        run.commands(["nope"])


def test_run_runs_a_benchmark_in_its_own_process(capfd: pytest.CaptureFixture[str]) -> None:
    """The CSV import at 40 rows through ``benchmarks.run`` runs to the end (a failed one exits
    non-zero) and prints its figures."""
    run.main(["csv_import", "--rows", "40"])
    out = capfd.readouterr().out
    assert "== CSV import" in out
    assert "CSV import, chunks of 1000 rows" in out


def test_commands_count_the_get_more_mongodb_would_send() -> None:
    """More than 101 documents answered to a read without a batch size: MongoDB would have
    sent them in two replies (the embedded server sends one)."""
    many = {"cursor": {"id": 0, "firstBatch": [{}] * 102}}
    few = {"cursor": {"id": 0, "firstBatch": [{}] * 101}}
    assert implied_get_more({"find": "c"}, many)
    assert not implied_get_more({"find": "c"}, few)
    assert not implied_get_more({"find": "c", "batchSize": 1001}, many)
    assert implied_get_more({"aggregate": "c", "cursor": {}}, many)
    assert not implied_get_more({"aggregate": "c", "cursor": {"batchSize": 500}}, many)
    assert not implied_get_more({"find": "c"}, {"cursor": {"id": 7, "firstBatch": [{}] * 200}})
