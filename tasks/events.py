"""Publishing outcome events (``knm.events`` and a request's ``reply_to`` queue) with kombu.

The events are built by ``knm.services.events``; ``workers.dispatch_broker`` publishes them
(dispatch calls it through its broker). This keeps the old entry point.
"""

from __future__ import annotations

from collections.abc import Sequence

from knm.services.events import NumberEvent
from workers import dispatch_broker
from workers.app import app


def publish_events(events: Sequence[NumberEvent], reply_to: str | None) -> None:
    """One message per event to the exchange, and to ``reply_to`` when the caller named it."""
    dispatch_broker.publish_events(app, events, reply_to)
