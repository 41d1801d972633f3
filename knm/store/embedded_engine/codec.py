"""mongoeco's document encoder (8), the same result with each value validated once.

``DocumentCodec.encode`` turns a document into the JSON-safe form the SQLite engine stores and
runs on every command's input. For a ``dict`` it first validates the whole subtree
(``validate_bson_value``: string keys, no sets, integers within int64), then encodes each value,
which validates that value's subtree again: a value at depth *d* is validated *d* + 1 times, and
a plain string goes through some thirty ``isinstance`` tests before it is returned unchanged.

This encoder returns the very same value: strings, booleans, ``None`` and floats as they are,
integers after the same int64 range check, plain ``dict`` and ``list`` values walked once with
the same key check and the same tagging of a dict that looks like a tagged value; every other
type (datetimes, ObjectIds, BSON wrappers, SON, tuples...) goes to mongoeco's encoder.
"""

from __future__ import annotations

from typing import Any, Final

from mongoeco.core.bson_scalars import INT64_MAX, INT64_MIN, BsonScalarOverflowError
from mongoeco.core.codec import DocumentCodec

#: mongoeco's own encoder, for every type this one does not take itself.
_ORIGINAL: Final[Any] = DocumentCodec.encode
_is_tagged_value: Final[Any] = DocumentCodec._is_tagged_value
_tagged_value: Final[Any] = DocumentCodec._tagged_value


def encode(data: Any) -> Any:
    """``DocumentCodec.encode(data)``, validating each value once."""
    kind = type(data)
    if kind is str or kind is bool or data is None or kind is float:
        return data
    if kind is int:
        if data < INT64_MIN or data > INT64_MAX:
            raise BsonScalarOverflowError("integer exceeds BSON int64 range")
        return data
    if kind is dict:
        for key in data:
            if not isinstance(key, str):
                raise TypeError("BSON document keys must be strings")
        encoded = {key: encode(value) for key, value in data.items()}
        if _is_tagged_value(encoded):
            return _tagged_value("dict", encoded)
        return encoded
    if kind is list:
        return [encode(value) for value in data]
    return _ORIGINAL(data)


def original_encode() -> Any:
    """mongoeco's encoder (for the source pin)."""
    return _ORIGINAL
