"""A forked pool process forgets the parent's store client: the task layer answers Celery's
``worker_process_init`` itself (the workers package imports no task module)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from celery.signals import worker_process_init

from tasks import runtime


def test_worker_process_init_resets_the_processs_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_knm", cast(Any, object()))
    monkeypatch.setattr(runtime, "_state_seen", (1, 2, 3))
    worker_process_init.send(sender=None)
    assert runtime._knm is None
    assert runtime._state_seen is None
