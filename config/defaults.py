"""KAZOO's default number_manager tables, kept as data so settings can override them."""

from __future__ import annotations

from typing import Final

#: Ordered E.164 converters: regex -> {prefix, suffix}. The first matching regex wins.
E164_CONVERTERS: Final[dict[str, dict[str, str]]] = {
    r"^(\+?1)?([2-9][0-9]{2}[2-9][0-9]{6})$": {"prefix": "+1"},
    r"^011(\d{5,})$|^00(\d{5,})$": {"prefix": "+"},
    r"^[2-9]\d{7,}$": {"prefix": "+"},
}

#: Which normalized numbers knm manages at all.
RECONCILE_REGEX: Final[str] = r"^(\+?1)?\d{10}$|^\+[2-9]\d{7,}$|^011\d*$|^00\d*$"

_NANP_PRETTY: Final[str] = "SS(###) ### - ####"

#: Ordered classifiers: the first match names the number's classification.
CLASSIFIERS: Final[dict[str, dict[str, object]]] = {
    "tollfree_us": {
        "regex": r"^\+1((?:800|88\d|877|866|855|844|833|822)\d{7})$",
        "friendly_name": "US TollFree",
        "pretty_print": _NANP_PRETTY,
    },
    "toll_us": {
        "regex": r"^\+1(900\d{7})$",
        "friendly_name": "US Toll",
        "pretty_print": _NANP_PRETTY,
    },
    "emergency": {
        "regex": r"^(911|922|933|833|811|711|999)$",
        "friendly_name": "Emergency Dispatcher",
        "emergency": True,
    },
    "caribbean": {
        "regex": (
            r"^\+?1((?:684|264|268|242|246|441|284|345|767|809|829|849|473|671|876|664|670"
            r"|787|939|869|758|784|721|868|649|340)\d{7})$"
        ),
        "friendly_name": "Caribbean",
        "pretty_print": _NANP_PRETTY,
    },
    "did_us": {
        "regex": r"^(\+?1)?([2-9][0-9]{2}[2-9][0-9]{6})$",
        "friendly_name": "US DID",
        "pretty_print": _NANP_PRETTY,
    },
    "international": {"regex": r"^\+([2-9]\d{7,})$", "friendly_name": "International"},
    "unknown": {"regex": r"^(.*)$", "friendly_name": "Unknown"},
}
