"""What a worker accepts of a raw message before any task sees it.

kombu inflates a message whose ``compression`` header names gzip/zlib, bz2 or lzma while it
builds the message, in one call with no bound: a 200 kB body that inflates to a gigabyte takes
the worker's memory with it. ``register_bounded_decoders`` replaces those decoders with streaming
ones that stop at ``max_bytes`` of output and refuse the message (``MessageTooLargeError``);
a compression whose decoder knm cannot bound (brotli, zstd when installed) is refused outright.

A message kombu cannot build (a refused or corrupt compressed body) never reaches the task
strategy: Celery's consumer logs it and acknowledges it. ``KnmConsumer`` also records it as the
failed task it names, so its producer gets an answer instead of waiting out its timeout.
"""

from __future__ import annotations

import bz2
import contextlib
import logging
import lzma
import zlib
from collections.abc import Callable
from typing import Any, Final

from celery.worker.consumer import Consumer
from kombu import compression

log = logging.getLogger(__name__)

GZIP: Final[str] = "application/x-gzip"
BZIP2: Final[str] = "application/x-bz2"
LZMA: Final[str] = "application/x-lzma"


class MessageTooLargeError(ValueError):
    """A compressed message inflates past the bound, or uses a compression knm cannot bound."""


def message_id(message: Any) -> str | None:
    """The task id a message names: its ``id`` header, else its correlation id."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    properties = message.properties if isinstance(message.properties, dict) else {}
    for candidate in (headers.get("id"), properties.get("correlation_id")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _too_large(name: str, max_bytes: int) -> MessageTooLargeError:
    return MessageTooLargeError(
        f"the {name} message body inflates past {max_bytes} bytes (KNM_MESSAGE_MAX_BYTES): "
        "refused without decompressing it"
    )


def _inflate_zlib(body: bytes, max_bytes: int) -> bytes:
    """kombu's gzip/zlib (``zlib.decompress``), at most ``max_bytes`` of output."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(body, max_bytes + 1)
    if len(out) <= max_bytes:
        out += inflater.flush()
    if len(out) > max_bytes:
        raise _too_large("gzip", max_bytes)
    if not inflater.eof:
        raise zlib.error("incomplete or truncated zlib stream")
    return out


def _inflate_streams(name: str, make: Callable[[], Any], body: bytes, max_bytes: int) -> bytes:
    """bz2 / lzma: one stream after another (as ``bz2.decompress`` reads concatenated
    streams), at most ``max_bytes`` of output in all."""
    out = b""
    data = body
    while True:
        inflater: Any = make()
        # capped output: more than max_bytes means it did not fit; less means all was read
        chunk: bytes = inflater.decompress(data, max_bytes + 1 - len(out))
        out += chunk
        if len(out) > max_bytes:
            raise _too_large(name, max_bytes)
        if not inflater.eof:
            raise ValueError(f"incomplete or truncated {name} stream")
        data = inflater.unused_data
        if not data:
            return out


def bounded_decoders(max_bytes: int) -> dict[str, Callable[[bytes], bytes]]:
    """Decoders for kombu's content types that stop at ``max_bytes`` of output."""
    return {
        GZIP: lambda body: _inflate_zlib(bytes(body), max_bytes),
        BZIP2: lambda body: _inflate_streams("bz2", bz2.BZ2Decompressor, bytes(body), max_bytes),
        LZMA: lambda body: _inflate_streams("lzma", lzma.LZMADecompressor, bytes(body), max_bytes),
    }


def register_bounded_decoders(max_bytes: int) -> None:
    """Make every compression kombu knows in this process bounded, or refused."""
    bounded = bounded_decoders(max_bytes)
    for content_type in compression.encoders():
        found: Any = compression.get_encoder(content_type)  # (encoder, type); stubs disagree
        encoder = found[0]
        decoder = bounded.get(content_type) or _refuse(content_type)
        compression.register(encoder, decoder, content_type)  # its aliases are kept


def _refuse(content_type: str) -> Callable[[bytes], bytes]:
    def refuse(body: bytes) -> bytes:
        raise MessageTooLargeError(
            f"compression {content_type} is not accepted: knm cannot bound its decompression"
        )

    return refuse


class KnmConsumer(Consumer):
    """Celery's consumer; a message it cannot build is also recorded as a failed task."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        from knm.services.numbers_requests import InvalidRequestError

        task_id = message_id(message)
        if task_id is not None:
            log.error("refused the message of task %s: %s", task_id, exc)
            with contextlib.suppress(Exception):
                self.app.backend.mark_as_failure(
                    task_id, InvalidRequestError(f"malformed task message: {exc}")
                )
        super().on_decode_error(message, exc)


__all__ = [
    "KnmConsumer",
    "MessageTooLargeError",
    "bounded_decoders",
    "message_id",
    "register_bounded_decoders",
]
