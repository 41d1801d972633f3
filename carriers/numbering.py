"""Number helpers the integrations share."""

from __future__ import annotations

from typing import Final

from knm.domain import convert

#: US toll-free NPAs (Telnyx and Bandwidth2 dispatch on these).
US_TOLLFREE_NPAS: Final[frozenset[str]] = frozenset(
    {
        "800",
        "822",
        "833",
        "844",
        "855",
        "866",
        "877",
        "880",
        "881",
        "882",
        "883",
        "884",
        "885",
        "886",
        "887",
        "888",
        "889",
    }
)
#: Bandwidth2's toll-free wildcard patterns (``80*`` ... ``88*``).
TOLLFREE_WILDCARDS: Final[frozenset[str]] = frozenset({"80*", "84*", "85*", "86*", "87*", "88*"})

#: Gregorian seconds = Unix seconds + this (KAZOO's ``now_s``, used in order names).
GREGORIAN_OFFSET_S: Final[int] = 62_167_219_200


def strip_plus_one(prefix: str) -> str:
    """Strip every leading ``+`` and ``1`` (VoIP Innovations, Bandwidth, Bandwidth2)."""
    return prefix.lstrip("+1")


def normalize(number: str) -> str:
    """KAZOO's default E.164 normalization (strings starting with ``+`` are untouched)."""
    return convert.normalize(number)


def to_npan(number: str) -> str:
    """The 10 NANP digits of a NANP number, else the number unchanged."""
    return convert.to_npan(number)


def classify(number: str) -> str | None:
    """The classification of a number (``tollfree_us``, ``did_us``, ...)."""
    return convert.classify(number)
