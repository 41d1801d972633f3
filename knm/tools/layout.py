"""``python -m knm.tools.layout``: check the layer rules on the source, without importing it.

It reads every module of the project's packages with ``ast`` and reports imports that point up
(or sideways where the rules forbid it), Celery imports below the edges, import cycles (imports
inside functions count, type-checking-only imports do not), modules over the size limit and too
many top-level entries in ``knm/``. The rules themselves are data in ``knm.tools.layers``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from knm.tools.cycles import find_cycles
from knm.tools.imports import Module, Where, scan_tree
from knm.tools.layers import (
    ALLOWED_IMPORTS,
    CELERY_LAYERS,
    CELERY_PACKAGES,
    MAX_KNM_TOP_LEVEL,
    MAX_MODULE_LINES,
    PROJECT_ROOTS,
    layer_of,
    may_import,
    may_import_celery,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Violation:
    """One broken rule, where it is broken."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Report:
    """What the check found on one tree."""

    modules: int
    violations: list[Violation] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    largest: tuple[str, int] = ("", 0)
    knm_top_level: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.cycles


def check(root: Path) -> Report:
    """Check the tree under ``root`` (a checkout: the project packages are its children)."""
    modules = scan_tree(root, PROJECT_ROOTS)
    report = Report(modules=len(modules))
    for module in modules.values():
        report.violations.extend(_import_violations(module, root))
        if module.lines > MAX_MODULE_LINES:
            report.violations.append(
                Violation(
                    _relative(module.path, root),
                    1,
                    f"{module.name} has {module.lines} lines (limit {MAX_MODULE_LINES})",
                )
            )
    if modules:
        biggest = max(modules.values(), key=lambda module: (module.lines, module.name))
        report.largest = (_relative(biggest.path, root), biggest.lines)
    report.knm_top_level = knm_top_level_entries(root / "knm")
    if len(report.knm_top_level) > MAX_KNM_TOP_LEVEL:
        report.violations.append(
            Violation(
                "knm",
                0,
                f"knm/ has {len(report.knm_top_level)} top-level modules and packages "
                f"(limit {MAX_KNM_TOP_LEVEL})",
            )
        )
    report.cycles = [cycle for _, cycle in find_cycles(import_graph(modules))]
    return report


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the project modules it imports when it runs (type-checking imports left out)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module in modules.values():
        for imported in module.imports:
            if imported.where is Where.TYPE_CHECKING or imported.target == module.name:
                continue
            if imported.target in modules:
                graph[module.name].add(imported.target)
    return graph


def knm_top_level_entries(knm_dir: Path) -> list[str]:
    """The modules and packages directly in ``knm/`` (``__init__`` and ``__main__`` count)."""
    if not knm_dir.is_dir():
        return []
    entries = [
        path.name
        for path in knm_dir.iterdir()
        if (path.is_file() and path.suffix == ".py")
        or (path.is_dir() and path.name != "__pycache__" and any(path.rglob("*.py")))
    ]
    return sorted(entries)


def _import_violations(module: Module, root: Path) -> list[Violation]:
    path = _relative(module.path, root)
    layer = layer_of(module.name)
    if layer is None:
        return [Violation(path, 1, f"{module.name} belongs to no layer (see knm.tools.layers)")]
    found: list[Violation] = []
    for imported in module.imports:
        top = imported.target.split(".")[0]
        how = "" if imported.where is Where.MODULE else f" ({imported.where} import)"
        if top in CELERY_PACKAGES and not may_import_celery(layer):
            found.append(
                Violation(
                    path,
                    imported.line,
                    f"{module.name} imports {imported.target}{how}: no {top} in {layer}",
                )
            )
        if top not in PROJECT_ROOTS:
            continue
        target_layer = layer_of(imported.target)
        if target_layer is None or not may_import(layer, target_layer):
            found.append(
                Violation(
                    path,
                    imported.line,
                    f"{module.name} imports {imported.target}{how}: "
                    f"{layer} may not import {target_layer or 'an unplaced module'}",
                )
            )
    return found


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def format_report(report: Report) -> str:
    """The report as text: the rules, then what breaks them, then the sizes."""
    width = max(len(layer) for layer in ALLOWED_IMPORTS)
    lines = ["Allowed imports (layer -> the other layers it may import):"]
    for layer, allowed in ALLOWED_IMPORTS.items():
        lines.append(f"  {layer:<{width}}  {', '.join(allowed) or '(none)'}")
    lines.append(f"  {', '.join(CELERY_PACKAGES)} only in: {', '.join(CELERY_LAYERS)}")
    lines.append(f"Modules checked: {report.modules}")
    lines.append(f"Violations: {len(report.violations)}")
    lines.extend(f"  {violation}" for violation in report.violations)
    lines.append(f"Import cycles: {len(report.cycles)}")
    lines.extend(f"  {' -> '.join(cycle)}" for cycle in report.cycles)
    path, size = report.largest
    lines.append(f"Largest module: {path} ({size} lines, limit {MAX_MODULE_LINES})")
    lines.append(
        f"Top-level knm entries: {len(report.knm_top_level)} (limit {MAX_KNM_TOP_LEVEL}): "
        f"{', '.join(report.knm_top_level)}"
    )
    lines.append("Layout: OK" if report.ok else "Layout: FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the report; exit 1 when any rule is broken."""
    parser = argparse.ArgumentParser(prog="python -m knm.tools.layout", description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the checkout to check")
    args = parser.parse_args(argv)
    report = check(args.root)
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
