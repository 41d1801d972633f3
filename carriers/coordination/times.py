"""Times as coordination keeps them: epoch seconds, on the Redis server's clock inside scripts
(every process agrees on it), and UTC ISO text where people read them (``knm status``)."""

from __future__ import annotations

from datetime import UTC, datetime

#: Lua prelude of every script: the server's clock (``now``) and exact number formatting.
LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function fmt(x) return string.format('%.6f', x) end
"""


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as UTC ISO 8601 text ending in ``Z``; ``None`` stays ``None``."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def utc_now() -> str:
    """Now as UTC ISO 8601 text ending in ``Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
