"""The layer rules hold on the code (``python -m knm.tools.layout``), and the checker finds what
it should on small trees written for the purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from knm.tools.layers import ALLOWED_IMPORTS, MAX_KNM_TOP_LEVEL, MAX_MODULE_LINES, layer_of
from knm.tools.layout import Report, check, format_report, main

ROOT = Path(__file__).resolve().parents[2]

#: The smallest tree the rules accept: one module per layer, each importing the one below.
CLEAN: dict[str, str] = {
    "config/__init__.py": "",
    "config/settings.py": "import os\n",
    "knm/__init__.py": "",
    "knm/__main__.py": "from knm.cli import root\n",
    "knm/domain/__init__.py": "",
    "knm/domain/number.py": "from config import settings\n",
    "carriers/__init__.py": "",
    "carriers/base.py": "from knm.domain import number\n",
    "knm/store/__init__.py": "",
    "knm/store/numbers.py": "from ..domain import number\n",
    "knm/services/__init__.py": "",
    "knm/services/operations.py": "from carriers import base\nfrom knm.store import numbers\n",
    "knm/contract/__init__.py": "",
    "knm/contract/schema.py": "from knm.services import operations\n",
    "workers/__init__.py": "",
    "workers/app.py": "import celery\nfrom knm.services import operations\n",
    "tasks/__init__.py": "",
    "tasks/numbers.py": "from workers.app import app\nfrom knm.contract import schema\n",
    "knm/cli/__init__.py": "",
    "knm/cli/root.py": "import typer\nfrom tasks import numbers\n",
}


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**CLEAN, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def messages(report: Report) -> list[str]:
    return [violation.message for violation in report.violations]


# ------------------------------------------------------------------------------ the real code
def test_the_code_keeps_every_layer_rule() -> None:
    report = check(ROOT)
    assert [str(violation) for violation in report.violations] == []
    assert report.cycles == []
    assert report.largest[1] <= MAX_MODULE_LINES
    assert len(report.knm_top_level) <= MAX_KNM_TOP_LEVEL
    assert report.modules > 100  # the whole project was read, not an empty folder


def test_every_project_package_has_a_layer_and_a_row() -> None:
    for package in ("knm.cli", "tasks", "workers", "knm.services", "knm.contract"):
        assert layer_of(f"{package}.anything") in ALLOWED_IMPORTS
    for package in ("knm.store", "carriers", "knm.domain", "config", "knm.tools"):
        assert layer_of(f"{package}.anything") in ALLOWED_IMPORTS
    assert layer_of("knm.loose_module") is None


# ------------------------------------------------------------------------ the checker itself
def test_a_clean_tree_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(tmp_path, {})
    report = check(root)
    assert report.ok, format_report(report)
    assert report.knm_top_level == [
        "__init__.py",
        "__main__.py",
        "cli",
        "contract",
        "domain",
        "services",
        "store",
    ]
    assert main(["--root", str(root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Layout: OK")


def test_an_import_cycle_is_found_function_level_imports_included(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "knm/domain/a.py": "from knm.domain import b\n",
            "knm/domain/b.py": "def late() -> None:\n    from knm.domain.a import x\n",
        },
    )
    report = check(root)
    assert report.cycles == [["knm.domain.a", "knm.domain.b", "knm.domain.a"]]
    assert not report.ok
    assert "knm.domain.a -> knm.domain.b -> knm.domain.a" in format_report(report)


def test_type_checking_imports_make_no_cycle(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "knm/domain/a.py": "from knm.domain import b\n",
            "knm/domain/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from knm.domain import a\n"
            ),
        },
    )
    assert check(root).cycles == []


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    root = tree(tmp_path, {"knm/domain/number.py": "from knm.store.numbers import NumberStore\n"})
    report = check(root)
    assert [str(v) for v in report.violations] == [
        "knm/domain/number.py:1: knm.domain.number imports knm.store.numbers: "
        "knm.domain may not import knm.store"
    ]


def test_a_relative_upward_import_is_found(tmp_path: Path) -> None:
    root = tree(tmp_path, {"knm/store/numbers.py": "from ..services import operations\n"})
    assert messages(check(root)) == [
        "knm.store.numbers imports knm.services.operations: knm.store may not import knm.services"
    ]


def test_workers_may_not_import_tasks_even_inside_a_function(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {"workers/start.py": "def run() -> None:\n    from tasks.numbers import reset\n"},
    )
    assert messages(check(root)) == [
        "workers.start imports tasks.numbers (function import): workers may not import tasks"
    ]


def test_celery_in_the_services_is_found(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "knm/services/depths.py": (
                "import celery.result\n"
                "def depth() -> int:\n"
                "    from kombu import Connection\n"
                "    return 0\n"
            )
        },
    )
    assert messages(check(root)) == [
        "knm.services.depths imports celery.result: no celery in knm.services",
        "knm.services.depths imports kombu (function import): no kombu in knm.services",
    ]


def test_config_imports_no_project_package(tmp_path: Path) -> None:
    root = tree(tmp_path, {"config/settings.py": "from knm.domain import number\n"})
    assert messages(check(root)) == [
        "config.settings imports knm.domain.number: config may not import knm.domain"
    ]


def test_an_oversized_module_is_found(tmp_path: Path) -> None:
    at_limit = "x = 1\n" * MAX_MODULE_LINES
    root = tree(
        tmp_path,
        {"knm/services/fits.py": at_limit, "knm/services/jobs.py": at_limit + "y = 2\n"},
    )
    report = check(root)
    assert messages(report) == [
        f"knm.services.jobs has {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES})"
    ]
    assert report.largest == ("knm/services/jobs.py", MAX_MODULE_LINES + 1)


def test_a_module_in_no_layer_and_too_many_knm_entries_are_found(tmp_path: Path) -> None:
    loose = {f"knm/loose{n}.py": "" for n in range(MAX_KNM_TOP_LEVEL - 6)}
    report = check(tree(tmp_path, loose))
    assert len(report.knm_top_level) == MAX_KNM_TOP_LEVEL + 1
    found = messages(report)
    assert found[-1] == (
        f"knm/ has {MAX_KNM_TOP_LEVEL + 1} top-level modules and packages "
        f"(limit {MAX_KNM_TOP_LEVEL})"
    )
    assert "knm.loose0 belongs to no layer (see knm.tools.layers)" in found


def test_main_exits_non_zero_on_a_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tree(tmp_path, {"carriers/base.py": "from knm.services import operations\n"})
    assert main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "Violations: 1" in out
    assert "carriers may not import knm.services" in out
    assert out.rstrip().endswith("Layout: FAILED")


def test_docs_layout_shows_the_rules_the_checker_applies() -> None:
    """The allowed-imports table in docs/layout.md is the one the checker prints."""
    docs = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    table = format_report(Report(modules=0)).split("\nModules checked:")[0]
    assert table in docs
