"""Celery configuration derived from knm's settings (workers/app.py applies it).

Reliability choices (Celery's task guide): JSON only; ``acks_late`` with
``task_reject_on_worker_lost`` so a task is acknowledged only after its outcome is durable and a
dead worker's task is redelivered; prefetch 1 because tasks are long and uneven; the Redis
visibility timeout above the hard time limit so a running task is never handed out twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from kombu import Exchange, Queue

from carriers.base import CARRIER_QUEUE_PREFIX as CARRIER_QUEUE_PREFIX  # re-exported
from carriers.base import queue_name
from config.settings import Settings
from knm.contract.task_names import DEFAULT_QUEUE as DEFAULT_QUEUE  # re-exported

#: Where a plain ``Celery(broker=...).send_task(...)`` publishes when it names no queue; knm
#: workers consume it too, so other services need no knm configuration to call knm.
CELERY_DEFAULT_QUEUE: Final[str] = "celery"


def carrier_queue(module: str | None) -> str:
    """The queue of a carrier module's work (``carrier.knm_telnyx``, as the carrier's class
    says); no module: the default."""
    return queue_name(module) if module else DEFAULT_QUEUE


def is_embedded(settings: Settings) -> bool:
    """No broker configured: use the embedded one (files under the data dir, no server)."""
    return not settings.broker_url


def embedded_paths(settings: Settings) -> dict[str, Path]:
    """Where the embedded broker and result backend keep their files."""
    root = settings.data_dir.resolve() / "broker"
    return {
        "queue": root / "queue",
        "processed": root / "processed",
        "control": root / "control",
        "results": root / "results",
    }


def broker_and_backend(settings: Settings) -> tuple[str, str, dict[str, Any]]:
    """Broker URL, result backend URL, and broker transport options."""
    if is_embedded(settings):
        paths = embedded_paths(settings)
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(paths["queue"]),
            "data_folder_out": str(paths["queue"]),
            "processed_folder": str(paths["processed"]),
            "control_folder": str(paths["control"]),
            "store_processed": False,
            "polling_interval": settings.embedded_polling_interval_s,
        }
        return "knmfs://", f"file://{paths['results']}", options
    broker = str(settings.broker_url)
    if settings.result_backend:
        backend = settings.result_backend
    elif broker.startswith(("redis://", "rediss://")):
        backend = broker
    else:
        # rpc:// cannot deliver results of tasks a worker publishes on a caller's behalf (a
        # routed share), so results go to knm's own MongoDB.
        backend = mongodb_backend_url(settings)
    transport: dict[str, Any] = {}
    if broker.startswith(("redis://", "rediss://")):
        transport["visibility_timeout"] = settings.broker_visibility_timeout_s
    return broker, backend, transport


def mongodb_backend_url(settings: Settings) -> str:
    """A Celery ``mongodb://`` result backend URL on knm's database (embedded or configured)."""
    url = settings.mongodb_url
    if not url:
        from knm.store.embedded import ensure_server

        url = ensure_server(settings.data_dir)
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{settings.mongodb_db}", parts.query, ""))


def celery_config(settings: Settings, queues: list[str]) -> dict[str, Any]:
    """The Celery settings for a knm app consuming or publishing to ``queues``."""
    broker, backend, transport_options = broker_and_backend(settings)
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": (
            {"visibility_timeout": settings.broker_visibility_timeout_s}
            if backend.startswith(("redis://", "rediss://"))
            else {}
        ),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": settings.worker_concurrency,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "result_expires": settings.result_expires_s,
        "result_extended": True,
        "task_track_started": True,
        # task events cost each task broker writes: off unless monitoring asks (KNM_TASK_EVENTS)
        "task_send_sent_event": settings.task_events,
        "worker_send_task_events": settings.task_events,
        "timezone": "UTC",
        "enable_utc": True,
        "task_default_queue": DEFAULT_QUEUE,
        "task_create_missing_queues": True,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in queues
        ],
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
    }


SWEEP_TASKS: Final[tuple[str, ...]] = (
    "knm.sweeps.age",
    "knm.sweeps.purge_discovery",
    "knm.sweeps.purge_deleted",
)


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The sweeps, every ``crawler_interval`` (KAZOO's crawler ran daily)."""
    every = settings.crawler_interval.total_seconds()
    return {
        name: {
            "task": name,
            "schedule": every,
            "options": {"queue": DEFAULT_QUEUE, "expires": every},
        }
        for name in SWEEP_TASKS
    }
