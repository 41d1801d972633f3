"""Retry logic lives in ``carriers/retry.py`` alone: no other module of knm computes a backoff,
draws jitter, sets Celery's own backoff options, or re-implements the send-then-confirm loop.

The check reads the source (AST, no imports) of every module in ``carriers/``, ``tasks/``,
``knm/``, ``workers/`` and ``config/``. What it flags:

* exponentiation with a variable exponent (``base * 2 ** attempt``): backoff math;
* ``import random`` / ``from random import ...``: jitter (the carrier sandbox's fault injection,
  a fake provider, is the one exception);
* Celery's backoff options (``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``) as
  names, attributes, keywords or string keys, and ``get_exponential_backoff_interval``;
* a handler of ``AmbiguousCallError`` (what starts a confirm loop) or a call of a retry
  policy's ``delay`` (the wait between sends).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("carriers", "tasks", "knm", "workers", "config")
RETRY_MODULE = Path("carriers/retry.py")
#: The fake providers draw their faults at random: jitter of no retry.
RANDOM_ALLOWED = (Path("carriers/sandbox"),)
CELERY_BACKOFF = {
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "get_exponential_backoff_interval",
}


def _is_under(path: Path, prefixes: tuple[Path, ...]) -> bool:
    return any(path == p or p in path.parents for p in prefixes)


def retry_logic_outside(path: Path, source: str) -> list[str]:
    """What in ``source`` (the module at ``path``, relative to the repository) is retry logic
    that belongs in the retry module: one line per finding, ``path:line: what``."""
    if path == RETRY_MODULE:
        return []
    found: list[str] = []
    for node in ast.walk(ast.parse(source, str(path))):
        what = _retry_logic(path, node)
        if what is not None:
            found.append(f"{path}:{getattr(node, 'lineno', 0)}: {what}")
    return found


def _retry_logic(path: Path, node: ast.AST) -> str | None:
    """What ``node`` does that only the retry module may do, else ``None``."""
    exponent: ast.expr | None = None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        exponent = node.right
    elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("pow", "math.pow"):
        exponent = node.args[1] if len(node.args) > 1 else None
    if exponent is not None and not isinstance(exponent, ast.Constant):
        return "exponentiation with a variable exponent (backoff math)"
    if isinstance(node, ast.Import | ast.ImportFrom):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        if "random" in modules and not _is_under(path, RANDOM_ALLOWED):
            return "imports random (jitter)"
        celery = [a.name for a in node.names if a.name in CELERY_BACKOFF]
        return f"imports Celery's {celery[0]}" if celery else None
    if isinstance(node, ast.Name) and node.id in CELERY_BACKOFF:
        return f"Celery backoff option {node.id}"
    if isinstance(node, ast.Attribute) and node.attr in CELERY_BACKOFF:
        return f"Celery backoff option {node.attr}"
    if isinstance(node, ast.keyword) and node.arg in CELERY_BACKOFF:
        return f"Celery backoff option {node.arg}="
    if isinstance(node, ast.Constant) and node.value in CELERY_BACKOFF:
        return f"Celery backoff option {node.value!r}"
    if isinstance(node, ast.ExceptHandler) and node.type is not None:
        caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        if any(ast.unparse(c).split(".")[-1] == "AmbiguousCallError" for c in caught):
            return "handles AmbiguousCallError (a send-then-confirm loop)"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "delay"
        and "policy" in ast.unparse(node.func.value)
    ):
        return "asks a retry policy for its delay (a retry loop)"
    return None


def _modules() -> list[Path]:
    return sorted(
        path.relative_to(ROOT) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    )


def test_no_retry_logic_outside_the_retry_module() -> None:
    modules = _modules()
    assert RETRY_MODULE in modules
    assert Path("tasks/numbers.py") in modules
    findings = [f for path in modules for f in retry_logic_outside(path, (ROOT / path).read_text())]
    assert findings == []


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("def wait(n):\n    return min(60, 0.5 * 2 ** n)\n", "exponentiation"),
        ("def wait(n):\n    return 0.5 * pow(2, n - 1)\n", "exponentiation"),
        ("import random\n", "imports random"),
        ("from random import uniform\n", "imports random"),
        ("class T:\n    retry_backoff = True\n", "retry_backoff"),
        ("app.task(retry_jitter=False)\n", "retry_jitter="),
        ("app.conf.update({'retry_backoff_max': 60})\n", "'retry_backoff_max'"),
        ("from celery.utils.time import get_exponential_backoff_interval\n", "get_exponential"),
        (
            "try:\n    send()\nexcept (AmbiguousCallError, MalformedAnswerError):\n    ask()\n",
            "AmbiguousCallError",
        ),
        ("delay = self.http.policy.delay(attempt)\n", "policy for its delay"),
    ],
)
def test_the_check_finds_retry_logic(source: str, what: str) -> None:
    findings = retry_logic_outside(Path("carriers/telnyx.py"), source)
    assert len(findings) == 1, findings
    assert what in findings[0]


def test_the_check_leaves_the_retry_module_and_plain_arithmetic_alone() -> None:
    assert retry_logic_outside(RETRY_MODULE, "import random\nx = 2 ** n\n") == []
    assert retry_logic_outside(Path("knm/x.py"), "MB = 2 ** 20\nfrom random_names import a\n") == []
    assert retry_logic_outside(Path("carriers/sandbox/core.py"), "import random\n") == []
