"""Reads one step of a task already did, handed to the next step instead of read again.

Dispatch reads a share's numbers (and their search results) to route it; the operation it then
runs in the same thread would read them again. Inside ``reuse_reads()`` a read ``remember``ed
under a kind is handed out once by ``take`` to the next read of a subset of the same keys, then
forgotten, so a retry after a revision conflict reads the store again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_memo: ContextVar[dict[str, tuple[frozenset[str], dict[str, Any]]] | None] = ContextVar(
    "knm_read_once", default=None
)


@contextmanager
def reuse_reads() -> Iterator[None]:
    """A scope (this thread) where remembered reads are handed to the next reader once."""
    token = _memo.set({})
    try:
        yield
    finally:
        _memo.reset(token)


def remember(kind: str, keys: Iterable[str], found: Mapping[str, Any]) -> None:
    """Keep what a read of ``keys`` found (absent keys were not found)."""
    memo = _memo.get()
    if memo is not None:
        memo[kind] = (frozenset(keys), dict(found))


def take(kind: str, keys: list[str]) -> dict[str, Any] | None:
    """What was remembered for ``keys`` (once), or None: read the store."""
    memo = _memo.get()
    if memo is None:
        return None
    entry = memo.pop(kind, None)
    if entry is None or not entry[0].issuperset(keys):
        return None
    wanted = set(keys)
    return {k: v for k, v in entry[1].items() if k in wanted}
