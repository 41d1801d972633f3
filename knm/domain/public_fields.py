"""The public fields of a number: which keys are public, how they are cleaned and merged, and
what can be stored (keys MongoDB refuses or misreads, more than ``MAX_PUBLIC_BYTES``: 400
``invalid_field`` naming the field and the rule).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from knm.domain import errors

#: Public keys dropped on load: ``id`` is the API's, ``used_by`` is private (``pvt_used_by``).
STRIPPED_PUBLIC_KEYS: Final[frozenset[str]] = frozenset({"id", "used_by"})
LEGACY_E911_KEYS: Final[tuple[str, ...]] = ("dash_e911", "vitelity_e911")  # vitelity wins

#: The largest public part of one number, JSON-encoded in UTF-8 (64 KiB).
MAX_PUBLIC_BYTES: Final[int] = 64 * 1024
#: A key shown as is in a field path; any other is shown as a JSON string.
_PLAIN_KEY: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_-]+$")


def is_public_key(key: str) -> bool:
    """Public fields are every key not starting with ``_`` or ``pvt_``."""
    return not (key.startswith("_") or key.startswith("pvt_"))


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge where ``update`` wins; nested objects are merged, not replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def sanitize_public(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Keep public keys, drop ``id``/``used_by``, and copy legacy E911 keys to ``e911``."""
    public = {
        k: copy.deepcopy(v)
        for k, v in fields.items()
        if is_public_key(k) and k not in STRIPPED_PUBLIC_KEYS
    }
    for legacy in LEGACY_E911_KEYS:
        if is_non_empty(public.get(legacy)):
            public["e911"] = copy.deepcopy(public[legacy])
    return public


def field_path(path: tuple[str | int, ...]) -> str:
    """A path into public fields, unambiguous: ``e911.street_address``, ``a."b.c"``, ``x[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        shown = part if _PLAIN_KEY.match(part) else json.dumps(part)
        out += f".{shown}" if out else shown
    return out


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot name a stored field (MongoDB reads ``$`` as an operator and ``.`` as a
    path; NUL ends a BSON key), or None."""
    if not isinstance(key, str):
        return "a key must be a string"
    if not key:
        return "a key must not be empty"
    if key.startswith("$"):
        return "a key must not start with '$'"
    if "." in key:
        return "a key must not contain '.'"
    if "\x00" in key:
        return "a key must not contain a NUL character"
    return None


def _bad_key(value: Any, path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], str] | None:
    """The first key at any depth of ``value`` that cannot be stored, with the reason."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            problem = key_problem(key)
            if problem is not None:
                return (*path, str(key)), problem
            found = _bad_key(child, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            found = _bad_key(child, (*path, index))
            if found is not None:
                return found
    return None


def check_public(public: Mapping[str, Any]) -> None:
    """Raise 400 ``invalid_field`` unless ``public`` can be stored: every key, at every depth,
    non-empty and free of a leading ``$``, of ``.`` and of NUL; at most ``MAX_PUBLIC_BYTES``."""
    found = _bad_key(public, ())
    if found is not None:
        path, problem = found
        raise errors.invalid_field(field_path(path), problem)
    size = len(json.dumps(public, ensure_ascii=False, separators=(",", ":"), default=str).encode())
    if size > MAX_PUBLIC_BYTES:
        raise errors.invalid_field(
            "public_fields", f"{size} bytes encoded, more than the {MAX_PUBLIC_BYTES} allowed"
        )


def is_non_empty(value: Any) -> bool:
    """KAZOO's ``get_ne_value``: null, empty string, empty list and empty object are absent."""
    return value is not None and value != "" and value != [] and value != {}
