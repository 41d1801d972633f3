"""How many messages wait in each of knm's queues, and who consumes them (``knm status``).

Redis keeps a queue as lists named after it (one per priority step); RabbitMQ answers a passive
declare with the count; the embedded broker keeps one file per message.

Consumers: RabbitMQ counts a queue's consumers itself (the passive declare's
``consumer_count``). Redis and the embedded broker keep no consumer registry for kombu's
queues (a worker just pops the list or reads the folder), so there "consumer" means a live
worker that answers a broadcast ``active_queues`` within a short timeout and names the queue;
no answer at all means nobody consumes anything. ``carrier.*`` queues that no registered
carrier owns are found by listing the broker's keys (Redis) or message files (embedded);
RabbitMQ cannot list its queues over AMQP, so there only the registered queues are shown.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from config.settings import Settings
from workers.celery_config import CARRIER_QUEUE_PREFIX, embedded_paths, is_embedded

#: How long ``queue_consumers`` waits for workers to say which queues they consume.
CONSUMER_REPLY_TIMEOUT_S: Final[float] = 1.0

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


def carrier_queues(settings: Settings) -> list[str]:
    """Every ``carrier.*`` queue holding messages, as the broker lists them (not RabbitMQ)."""
    if is_embedded(settings):
        names = _embedded_queues(embedded_paths(settings)["queue"])
    else:
        url = str(settings.broker_url)
        if not url.startswith(("redis://", "rediss://")):
            return []  # AMQP cannot list queues
        names = _redis_queues(url)
    return sorted(n for n in set(names) if n.startswith(CARRIER_QUEUE_PREFIX))


def queue_consumers(settings: Settings, queues: Iterable[str], app: Any) -> dict[str, int | None]:
    """How many consumers each queue has (``None`` where the broker cannot tell).

    ``app`` is a Celery app on the same broker, used to ask the workers (Redis, embedded).
    """
    names = list(queues)
    url = "" if is_embedded(settings) else str(settings.broker_url)
    if url and not url.startswith(("redis://", "rediss://")):
        return {name: consumers for name, (_depth, consumers) in _amqp_declare(url, names).items()}
    replies = app.control.inspect(timeout=CONSUMER_REPLY_TIMEOUT_S).active_queues() or {}
    counts = Counter(
        q.get("name") for queues_of_worker in replies.values() for q in queues_of_worker or []
    )
    return {name: counts.get(name, 0) for name in names}


@dataclass(frozen=True)
class BrokerQueues:
    """The broker's answers ``knm status`` asks for (``knm.services.system_status.BrokerQueues``).

    ``celery_app`` builds the Celery app that asks the workers for their queues; it is called
    only when consumers are counted.
    """

    settings: Settings
    celery_app: Callable[[], Any]

    def depths(self, queues: list[str]) -> dict[str, int | None]:
        return queue_depths(self.settings, queues)

    def carrier_queues(self) -> list[str]:
        return carrier_queues(self.settings)

    def consumers(self, queues: list[str]) -> dict[str, int | None]:
        return queue_consumers(self.settings, queues, self.celery_app())


def _message_queue(file_name: str) -> str | None:
    """The queue of one of kombu's message files, ``<time>_<uuid>.<queue>.msg`` (the queue
    name may hold dots: ``carrier.knm_local``)."""
    if not file_name.endswith(".msg") or file_name.startswith("."):
        return None
    parts = file_name.removesuffix(".msg").split(".", 1)
    return parts[1] if len(parts) == 2 else None


def _embedded_queues(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [q for p in folder.iterdir() if (q := _message_queue(p.name)) is not None]


def _embedded(folder: Path, names: list[str]) -> dict[str, int | None]:
    counts = dict.fromkeys(names, 0)
    for queue in _embedded_queues(folder):
        if queue in counts:
            counts[queue] = (counts[queue] or 0) + 1
    return dict(counts)


def _redis_queues(url: str) -> list[str]:
    """Queues with messages: the lists named after them (priority steps folded in)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{CARRIER_QUEUE_PREFIX}*", count=500, _type="list"))
    finally:
        client.close()
    names = [k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in keys]
    return [name.split("\x06\x16", 1)[0] for name in names]


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
    return {name: depth for name, (depth, _consumers) in _amqp_declare(url, names).items()}


def _amqp_declare(url: str, names: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """(messages, consumers) of each queue from a passive declare; ``None`` for a queue that
    does not exist (yet): nobody declared it."""
    from kombu import Connection

    counts: dict[str, tuple[int | None, int | None]] = {}
    with Connection(url, connect_timeout=5) as conn:
        for name in names:
            channel: Any = conn.channel()
            try:
                ok = channel.queue_declare(queue=name, passive=True)
                counts[name] = (int(ok.message_count), int(ok.consumer_count))
            except Exception:  # the queue does not exist
                counts[name] = (None, None)
            finally:
                with contextlib.suppress(Exception):  # closed by the broker's refusal
                    channel.close()
    return counts
