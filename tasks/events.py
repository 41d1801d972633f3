"""Publishing outcome events (``knm.events`` and a request's ``reply_to`` queue) with kombu.

The events are built by ``knm.events``; this is the only part that needs the broker connection.
Publishing happens after the outcome is recorded, so a crash in between only repeats events
(at least once), never loses the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kombu import Exchange, Queue

from knm.services.events import EVENTS_EXCHANGE, NumberEvent
from workers.app import app

log = logging.getLogger(__name__)

EXCHANGE = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)


def publish_events(events: Sequence[NumberEvent], reply_to: str | None) -> None:
    """One message per event to the exchange, and to ``reply_to`` when the caller named it."""
    if not events:
        return
    reply_queue = Queue(reply_to, durable=True) if reply_to else None
    with app.producer_or_acquire() as producer:
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
                )
    log.debug("published %d events (reply_to %s)", len(events), reply_to)
