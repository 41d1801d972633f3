"""How many messages wait in each of knm's queues, whatever the broker (``knm status``).

Redis keeps a queue as lists named after it (one per priority step); RabbitMQ answers a passive
declare with the count; the embedded broker keeps one file per message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from config.celery import embedded_paths, is_embedded
from config.settings import Settings

#: kombu's Redis priority steps and separator (``queue``, ``queue\\x06\\x163``, ...).
_REDIS_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depths(settings: Settings, queues: Iterable[str]) -> dict[str, int | None]:
    """Messages ready in each queue (``None`` where the broker cannot tell)."""
    names = list(queues)
    if is_embedded(settings):
        return _embedded(embedded_paths(settings)["queue"], names)
    url = str(settings.broker_url)
    if url.startswith(("redis://", "rediss://")):
        return _redis(url, names)
    return _amqp(url, names)


def _embedded(folder: Path, names: list[str]) -> dict[str, int | None]:
    counts = dict.fromkeys(names, 0)
    if folder.is_dir():
        for path in folder.iterdir():
            # kombu's filesystem transport: <time>_<uuid>.<queue>.msg
            queue = path.name.rsplit(".", 2)[-2] if path.name.endswith(".msg") else None
            if queue in counts:
                counts[queue] = (counts[queue] or 0) + 1
    return dict(counts)


def _redis(url: str, names: list[str]) -> dict[str, int | None]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        pipe = client.pipeline()
        for name in names:
            for suffix in _REDIS_PRIORITY_SUFFIXES:
                pipe.llen(name + suffix)
        lengths = pipe.execute()
    finally:
        client.close()
    steps = len(_REDIS_PRIORITY_SUFFIXES)
    return {name: int(sum(lengths[i * steps : (i + 1) * steps])) for i, name in enumerate(names)}


def _amqp(url: str, names: list[str]) -> dict[str, int | None]:
    from kombu import Connection

    counts: dict[str, int | None] = {}
    with Connection(url, connect_timeout=5) as conn:
        for name in names:
            channel: Any = conn.channel()
            try:
                counts[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # the queue does not exist (yet): nobody declared it
                counts[name] = None
            finally:
                with contextlib.suppress(Exception):  # closed by the broker's refusal
                    channel.close()
    return counts
