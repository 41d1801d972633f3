"""Worker settings that cost every task: task events off unless asked, one Redis client per
channel for publishing."""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES, resolve_transport

from config.settings import Settings
from workers import redis_transport
from workers.celery_config import celery_config


def test_task_events_are_off_unless_asked() -> None:
    quiet = celery_config(Settings(broker_url="redis://127.0.0.1:1/0"), ["knm"])
    assert (quiet["task_send_sent_event"], quiet["worker_send_task_events"]) == (False, False)
    loud = celery_config(Settings(broker_url="redis://127.0.0.1:1/0", task_events=True), ["knm"])
    assert (loud["task_send_sent_event"], loud["worker_send_task_events"]) == (True, True)


def test_redis_urls_use_the_channel_that_keeps_its_client() -> None:
    redis_transport.register()
    for alias in ("redis", "rediss"):
        assert TRANSPORT_ALIASES[alias] == "workers.redis_transport:Transport"
    assert resolve_transport("redis") is redis_transport.Transport


def test_the_publishing_client_is_built_once_per_pool() -> None:
    built: list[object] = []

    class Channel(redis_transport.Channel):
        def __init__(self) -> None:  # no connection: only the client cache is under test
            self._pool = object()

        @property
        def pool(self) -> object:
            return self._pool

        def _create_client(self, asynchronous: bool = False) -> object:
            built.append(object())
            return built[-1]

    channel = Channel()
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
    channel._pool = object()  # the pool was replaced (reconnected): a client for the new one
    with channel.conn_or_acquire() as third:
        assert third is not first
    assert len(built) == 2
