"""Reading a source tree's imports with ``ast``: no module is imported or executed."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Where(StrEnum):
    """Where an import statement sits: it decides when (and whether) it runs."""

    MODULE = "module"  # runs on import
    FUNCTION = "function"  # runs when the function is called
    TYPE_CHECKING = "type-checking"  # never runs; a dependency of the annotations only


@dataclass(frozen=True)
class Import:
    """One imported name, resolved to the dotted module it loads."""

    target: str
    line: int
    where: Where


@dataclass
class Module:
    """One source file: its dotted name, path, line count and imports."""

    name: str
    path: Path
    lines: int
    is_package: bool
    imports: list[Import] = field(default_factory=list)


def module_name(root: Path, path: Path) -> tuple[str, bool]:
    """The dotted name of a file under ``root`` and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def scan_tree(root: Path, packages: tuple[str, ...]) -> dict[str, Module]:
    """Every module of the given top-level packages under ``root``, by dotted name."""
    modules: dict[str, Module] = {}
    sources: dict[str, str] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            name, is_package = module_name(root, path)
            sources[name] = path.read_text(encoding="utf-8")
            modules[name] = Module(name, path, len(sources[name].splitlines()), is_package)
    known = set(modules)
    for name, module in modules.items():
        tree = ast.parse(sources[name], filename=str(module.path))
        module.imports = _imports(tree, module, known)
    return modules


def _imports(tree: ast.Module, module: Module, known: set[str]) -> list[Import]:
    found: list[Import] = []
    _visit(tree.body, Where.MODULE, module, known, found)
    return found


def _visit(
    body: list[ast.stmt], where: Where, module: Module, known: set[str], found: list[Import]
) -> None:
    for node in body:
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, where) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module)
            targets: dict[str, None] = {}
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                targets[candidate if candidate in known else base] = None
            found.extend(Import(target, node.lineno, where) for target in targets)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = Where.FUNCTION if where is Where.MODULE else where
            _visit_children(node, inner, module, known, found)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            _visit(node.body, Where.TYPE_CHECKING, module, known, found)
            _visit(node.orelse, where, module, known, found)
        else:
            _visit_children(node, where, module, known, found)


def _visit_children(
    node: ast.AST, where: Where, module: Module, known: set[str], found: list[Import]
) -> None:
    """The statements nested in a class, loop, ``with``, ``try`` or ``match`` block."""
    for name in ("body", "orelse", "finalbody"):
        children = getattr(node, name, None)
        if isinstance(children, list):
            statements = [child for child in children if isinstance(child, ast.stmt)]
            _visit(statements, where, module, known, found)
    blocks: list[ast.ExceptHandler | ast.match_case] = [
        *getattr(node, "handlers", []),
        *getattr(node, "cases", []),
    ]
    for block in blocks:
        _visit(block.body, where, module, known, found)


def _from_base(node: ast.ImportFrom, module: Module) -> str:
    """The module a ``from ... import`` reads, with relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
