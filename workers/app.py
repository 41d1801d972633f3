"""The Celery app: configured from knm's settings, consuming the default and carrier queues.

``celery -A workers.app worker`` and ``knm worker`` both use ``app``. With no ``KNM_BROKER_URL``
the app uses the embedded broker (files under ``KNM_DATA_DIR``), so a fresh machine needs no
server; with it set, Redis or RabbitMQ.
"""

from __future__ import annotations

from celery import Celery

from carriers.registry import default_registry
from config.settings import Settings, get_settings
from workers import filesystem_transport, redis_transport
from workers.celery_config import CELERY_DEFAULT_QUEUE, DEFAULT_QUEUE, celery_config
from workers.messages import register_bounded_decoders

TASK_MODULES = ["tasks.numbers", "tasks.jobs", "tasks.sweeps", "tasks.health"]


def all_queues(settings: Settings | None = None) -> list[str]:
    """knm's queue, plain Celery's default queue, and the queue of every registered carrier
    (the built-in ones and the plugins ``KNM_CARRIER_PLUGINS`` names)."""
    return [DEFAULT_QUEUE, CELERY_DEFAULT_QUEUE, *default_registry(settings).queues()]


def create_app(settings: Settings | None = None) -> Celery:
    """A knm Celery app for ``settings`` (the environment's by default)."""
    filesystem_transport.register()
    redis_transport.register()
    settings = settings or get_settings()
    register_bounded_decoders(settings.message_max_bytes)
    app = Celery("knm", include=TASK_MODULES)
    app.conf.update(celery_config(settings, all_queues(settings)))
    # a message that cannot be built (a refused compressed body) fails the task it names
    app.conf.worker_consumer = "workers.messages:KnmConsumer"
    return app


app = create_app()
