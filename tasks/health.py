"""``knm.ping``: a no-op task for health checks and for measuring the broker's own cost."""

from __future__ import annotations

from workers.app import app


@app.task(name="knm.ping", Strategy="tasks.strategy:guarded")
def ping() -> str:
    """Answer without touching the store."""
    return "pong"
