"""12. Joins by ``_id`` read only the documents they join.

mongoeco answers ``$lookup`` and ``$unionWith`` by reading every document of the joined
collection before the pipeline runs (``_load_pipeline_resources``), then matching in Python: a
share read that joins a number's owner account, or appends the system config, decodes every
account of the store. Here, for a ``KnmSQLiteEngine``, no joined collection is read up front
(:class:`LazyResources`); a join whose documents are pinned by ``_id`` asks for just those:

- ``$lookup`` with ``foreignField: "_id"`` and a ``localField``: the ids are the local values of
  the documents entering the stage (strings, or null/missing: the null ``_id``; an array's
  elements, never the array, which no ``_id`` can be);
- ``$unionWith`` whose pipeline starts with ``{$match: {_id: <string or {$in: [strings]}>}}``.

The stage then runs as mongoeco wrote it, over those documents (every document it could match,
in the order a whole-collection read lists them), so its result is mongoeco's. Any other read of
a joined collection (another stage, a local value of another type, a collation) reads the whole
collection, once per aggregation, as mongoeco did. A hint is consumed by the first read of its
collection, which is the stage's own (each stage asks for its collection before running its
sub-pipeline).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from mongoeco.core.aggregation.resources import AggregationResources
from mongoeco.core.filtering import QueryEngine

#: mongoeco's name for "the collection the pipeline runs on" in a ``$unionWith`` without ``coll``.
CURRENT_COLLECTION: Final[str] = "__mongoeco_current_collection__"

#: A stage's collection and the ``_id`` values it can join there.
Hint = tuple[str, frozenset[str | None]]
#: The hint of the stage about to run, for its first read of its collection.
_HINT: contextvars.ContextVar[Hint | None] = contextvars.ContextVar("knm_join_hint", default=None)


@dataclass(frozen=True, slots=True)
class LazyResources(AggregationResources):
    """mongoeco's aggregation resources, the collections in ``lazy`` read on demand."""

    engine: Any = None
    db_name: str = ""
    lazy: frozenset[str] = frozenset()

    def __call__(self, name: str) -> Any:
        collection = self.collection if name == CURRENT_COLLECTION else name
        if collection is None or collection not in self.lazy:
            return AggregationResources.__call__(self, name)  # type: ignore[no-untyped-call]
        hint = _HINT.get()
        if hint is not None and hint[0] == collection:
            _HINT.set(None)
            return self.engine.knm_documents(self.db_name, collection, hint[1])
        loaded = self.documents.get(collection)
        if loaded is None:
            loaded = self.documents[collection] = self.engine.knm_documents(
                self.db_name, collection
            )
        return loaded


def lookup_ids(
    spec: object, documents: Iterable[Any], collation: object
) -> frozenset[str | None] | None:
    """The ``_id`` values a ``$lookup`` on ``_id`` can match for ``documents`` (dicts, or
    mongoeco's runtime states), or None when it cannot tell (another form, a collation, a local
    value that is neither a string nor null)."""
    if collation is not None or not isinstance(spec, dict):
        return None
    local = spec.get("localField")
    if not isinstance(local, str) or spec.get("foreignField") != "_id":
        return None
    ids: set[str | None] = set()
    for item in documents:
        document = item.public_document() if hasattr(item, "public_document") else item
        for value in QueryEngine.extract_values(document, local) or [None]:
            if isinstance(value, list):
                continue  # an array's elements come as values too; no _id is an array
            if value is not None and not isinstance(value, str):
                return None
            ids.add(value)
    return frozenset(ids)


def union_ids(spec: object) -> frozenset[str | None] | None:
    """The ``_id`` values a ``$unionWith`` pipeline's leading ``$match`` pins, or None."""
    if not isinstance(spec, dict):
        return None
    pipeline = spec.get("pipeline")
    if not isinstance(pipeline, list) or not pipeline:
        return None
    first = pipeline[0]
    if not isinstance(first, dict) or len(first) != 1:
        return None
    match = first.get("$match")
    if not isinstance(match, dict) or len(match) != 1 or "_id" not in match:
        return None
    value = match["_id"]
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$in"), list):
        values = value["$in"]
        if all(isinstance(v, str) for v in values):
            return frozenset(values)
    return None


def lookup_hint(
    spec: dict[str, Any], items: Any, resolver: LazyResources, collation: object
) -> Hint | None:
    """A ``$lookup`` stage's hint: its collection and the ids its input can match."""
    collection = spec.get("from")
    ids = lookup_ids(spec, items, collation)
    return (collection, ids) if isinstance(collection, str) and ids is not None else None


def union_hint(
    spec: dict[str, Any], items: Any, resolver: LazyResources, collation: object
) -> Hint | None:
    """A ``$unionWith`` stage's hint: its collection and the ids its pipeline pins."""
    coll = spec.get("coll")
    collection = coll if isinstance(coll, str) and coll else resolver.collection
    ids = union_ids(spec)
    return (collection, ids) if collection is not None and ids is not None else None


def hinted(
    original: Callable[..., Any],
    hint_of: Callable[[dict[str, Any], Any, LazyResources, object], Hint | None],
) -> Callable[..., Any]:
    """mongoeco's stage function ``original`` (``(items, spec, collection_resolver, ...)``, or
    the resolver as a keyword in the runtime-state variants), run with its collection's ids
    hinted to the resources when ``hint_of`` can tell them."""

    def apply(items: Any, spec: Any, *args: Any, **kwargs: Any) -> Any:
        resolver = args[0] if args else kwargs.get("collection_resolver")
        hint = None
        if isinstance(resolver, LazyResources) and isinstance(spec, dict):
            hint = hint_of(spec, items, resolver, kwargs.get("collation"))
        if hint is None:
            return original(items, spec, *args, **kwargs)
        token = _HINT.set(hint)
        try:
            return original(items, spec, *args, **kwargs)
        finally:
            _HINT.reset(token)

    return apply
