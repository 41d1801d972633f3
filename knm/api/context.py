"""What every route of the API shares: the settings, the store, the keys and the producer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from config.settings import Settings
from knm.services.facade import Knm
from knm.store.api_keys import ApiKeyStore

if TYPE_CHECKING:
    from workers.producer import ProducerApp


@dataclass
class ApiContext:
    """One per API process: the facade on the store and, opened on first use, the producer."""

    settings: Settings
    knm: Knm
    keys: ApiKeyStore
    _producer: ProducerApp | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings) -> ApiContext:
        knm = Knm.open(settings)
        keys = ApiKeyStore(knm.store.db)
        keys.ensure_indexes()
        return cls(settings=settings, knm=knm, keys=keys)

    def producer(self) -> ProducerApp:
        """The Celery client that publishes writes (created once, shared by every thread)."""
        with self._lock:
            if self._producer is None:
                from workers import producer

                self._producer = producer.create_app(self.settings)
            return self._producer

    def close(self) -> None:
        self.knm.close()

    @property
    def db(self) -> Any:
        return self.knm.store.db


def get_context(request: Request) -> ApiContext:
    """The route dependency: the process' context."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx
