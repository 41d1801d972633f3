"""The knm services a worker process uses, opened on first use (after any fork).

With the embedded store (no ``KNM_MONGODB_URL``) the server may die and be started again on
another port by whichever knm command runs next; a worker follows it instead of failing every
task until it is restarted: ``get_knm`` reopens its client when the server's state file
(``mongod.json``) names another port, and ``store_unreachable`` (called when a task could not
reach the store) makes sure the server runs, starting it again if it died.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init

from config.settings import Settings, get_settings
from knm.services.facade import Knm
from knm.store import embedded

log = logging.getLogger(__name__)

_lock = threading.Lock()
_knm: Knm | None = None
#: The state file as last seen (inode, mtime, size): re-read only when it changes.
_state_seen: tuple[int, int, int] | None = None


def get_knm() -> Knm:
    """This process's ``Knm`` (one MongoDB client per process, shared by its threads)."""
    global _knm
    with _lock:
        if _knm is not None and _embedded_moved(_knm, cheap=True):
            _forget()
        if _knm is None:
            _knm = Knm.open(get_settings())
        return _knm


def store_unreachable() -> None:
    """A task could not reach the store: with the embedded one, make sure its server runs
    (starting it again if it died) and follow it to its new port."""
    with _lock:
        if _knm is None or _knm.settings.mongodb_url:
            return  # a configured server is the operator's to restart
        try:
            embedded.ensure_server(_data_dir(_knm.settings))
        except (RuntimeError, OSError) as exc:
            log.warning("the embedded store cannot be started: %s", exc)
            return
        if _embedded_moved(_knm, cheap=False):
            _forget()


def reset() -> None:
    """Forget the process's services (a forked child must open its own client)."""
    global _knm, _state_seen
    with _lock:
        _knm = None
        _state_seen = None


@worker_process_init.connect
def _fresh_store_after_fork(**_: Any) -> None:
    """pymongo clients must not cross a fork: each pool process opens its own. Connected
    here, where the services live: the worker loads the task modules (and so this one) before
    it starts its pool."""
    reset()


def _data_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve()


def _embedded_moved(knm: Knm, *, cheap: bool) -> bool:
    """Whether the embedded server's state file names a port this client does not use.

    ``cheap``: only when the file changed since last seen (a ``stat`` per task otherwise).
    """
    global _state_seen
    if knm.settings.mongodb_url:
        return False
    path = _data_dir(knm.settings) / embedded.STATE_FILE
    try:
        stat = os.stat(path)
    except OSError:
        return False  # no server recorded: nothing to follow (yet)
    seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    if cheap and seen == _state_seen:
        return False
    _state_seen = seen
    state = embedded.read_state(path.parent)
    if state is None:
        return False
    ports = {port for _host, port in knm.store.db.client.topology_description.server_descriptions()}
    return state.port not in ports


def _forget() -> None:
    """Drop this process's client (its server is gone); the next ``get_knm`` opens one."""
    global _knm
    if _knm is not None:
        log.info("the embedded store moved: reconnecting")
        try:
            _knm.close()
        finally:
            _knm = None
