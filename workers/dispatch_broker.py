"""The broker ``knm.services.dispatch`` talks through, on a Celery app: task messages and events.

One instance per process (``for_app``), publishing through the app's producer pool, so every
publish reuses a pooled connection and producer (and, on Redis, one client:
``workers.redis_transport``). Events go to the ``knm.events`` topic exchange and to a request's
``reply_to`` queue; they are published after the outcome is computed and before it is recorded,
so a crash in between only repeats events (at least once), never loses the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from knm.services.events import EVENTS_EXCHANGE, NumberEvent

log = logging.getLogger(__name__)

EXCHANGE = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
#: A broker that stays away fails the publish (and so the task, which is redelivered) after a
#: few tries, instead of kombu's default of retrying forever inside a running task.
EVENT_RETRY: dict[str, float] = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 2,
}


class CeleryBroker:
    """``knm.services.dispatch.Broker`` on a Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish(
        self,
        task: str,
        kwargs: dict[str, Any],
        queue: str,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> None:
        with self.app.producer_pool.acquire(block=True) as producer:
            self.app.send_task(
                task,
                kwargs=kwargs,
                queue=queue,
                task_id=task_id,
                countdown=countdown,
                producer=producer,
            )

    def emit(self, events: Sequence[NumberEvent], reply_to: str | None) -> None:
        publish_events(self.app, events, reply_to)


def publish_events(app: Celery, events: Sequence[NumberEvent], reply_to: str | None) -> None:
    """One message per event to the exchange, and to ``reply_to`` when the caller named it."""
    if not events:
        return
    reply_queue = Queue(reply_to, durable=True) if reply_to else None
    with app.producer_pool.acquire(block=True) as producer:
        for event in events:
            body = event.model_dump(mode="json")
            producer.publish(
                body,
                exchange=EXCHANGE,
                routing_key=event.routing_key,
                declare=[EXCHANGE],
                serializer="json",
                delivery_mode=2,
                retry=True,
                retry_policy=EVENT_RETRY,
            )
            if reply_queue is not None:
                producer.publish(
                    body,
                    exchange="",
                    routing_key=reply_queue.name,
                    declare=[reply_queue],
                    serializer="json",
                    delivery_mode=2,
                    retry=True,
                    retry_policy=EVENT_RETRY,
                )
    log.debug("published %d events (reply_to %s)", len(events), reply_to)


_brokers: dict[int, CeleryBroker] = {}


def for_app(app: Celery) -> CeleryBroker:
    """This process's broker for ``app`` (one per app)."""
    broker = _brokers.get(id(app))
    if broker is None:
        broker = _brokers[id(app)] = CeleryBroker(app)
    return broker
