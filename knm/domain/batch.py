"""The per-number result of a batch operation (KAZOO's collection).

Each step moves numbers from ``todo`` into ``succeeded`` or ``failed``; a failure never stops the
other numbers. ``failed`` is keyed by the original input for ``not_reconcilable`` and by the
normalized number otherwise, as KAZOO's tests expect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber


class Batch:
    """Numbers still to process, those that succeeded, and why the others failed."""

    def __init__(self, todo: Iterable[PhoneNumber] = ()) -> None:
        self.todo: list[PhoneNumber] = list(todo)
        self.succeeded: dict[str, PhoneNumber] = {}
        self.failed: dict[str, KnmError] = {}

    def fail(self, key: str, error: KnmError) -> None:
        self.succeeded.pop(key, None)
        self.failed[key] = error

    def succeed(self, pn: PhoneNumber) -> None:
        self.succeeded[pn.number] = pn

    def step(self, fn: Callable[[PhoneNumber], None]) -> None:
        """Run ``fn`` on every todo number; a raised ``KnmError`` fails only that number."""
        remaining: list[PhoneNumber] = []
        for pn in self.todo:
            try:
                fn(pn)
            except KnmError as error:
                self.fail(pn.number, error)
            else:
                remaining.append(pn)
        self.todo = remaining

    def finish(self) -> None:
        """Everything left in ``todo`` succeeded."""
        for pn in self.todo:
            self.succeed(pn)
        self.todo = []

    def to_json(self, render: Callable[[PhoneNumber], dict[str, Any]]) -> dict[str, Any]:
        """``{"succeeded": {number: rendered}, "failed": {input: error}}`` (the CLI contract)."""
        return {
            "succeeded": {n: render(pn) for n, pn in sorted(self.succeeded.items())},
            "failed": {k: e.to_json() for k, e in sorted(self.failed.items())},
        }
