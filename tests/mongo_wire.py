"""MongoDB wire-protocol reading for the crash tests' loopback proxies (OP_MSG only)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import bson

OP_MSG = 2013


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket) -> bytes:
    header = recv_exact(sock, 16)
    (length,) = struct.unpack("<i", header[:4])
    return header + recv_exact(sock, length - 16)


def command(message: bytes) -> tuple[str, Any] | None:
    """``(command name, its value)`` of an OP_MSG (``("insert", "numbers")``), else None."""
    (op_code,) = struct.unpack("<i", message[12:16])
    if op_code != OP_MSG:
        return None
    pos = 20  # header (16) + flagBits (4)
    while pos < len(message):
        kind = message[pos]
        pos += 1
        (size,) = struct.unpack("<i", message[pos : pos + 4])
        if kind == 0:
            doc = bson.decode(message[pos : pos + size])
            name = next(iter(doc))
            return name, doc[name]
        pos += size
    return None
