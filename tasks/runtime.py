"""The knm services a worker process uses, opened on first use (after any fork)."""

from __future__ import annotations

import threading

from config.settings import get_settings
from knm.app import Knm

_lock = threading.Lock()
_knm: Knm | None = None


def get_knm() -> Knm:
    """This process's ``Knm`` (one MongoDB client per process, shared by its threads)."""
    global _knm
    with _lock:
        if _knm is None:
            _knm = Knm.open(get_settings())
        return _knm


def reset() -> None:
    """Forget the process's services (a forked child must open its own client)."""
    global _knm
    with _lock:
        _knm = None
