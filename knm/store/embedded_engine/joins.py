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

#: (collection, ids) for the next read of that collection by the stage about to run.
_HINT: contextvars.ContextVar[tuple[str, frozenset[str | None]] | None] = contextvars.ContextVar(
    "knm_join_hint", default=None
)


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


def _with_hint(
    resolver: object, collection: object, ids: frozenset[str | None] | None, run: Callable[[], Any]
) -> Any:
    if not (
        isinstance(resolver, LazyResources) and isinstance(collection, str) and ids is not None
    ):
        return run()
    token = _HINT.set((collection, ids))
    try:
        return run()
    finally:
        _HINT.reset(token)


def wrap_lookup(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_apply_lookup(documents, spec, collection_resolver, ...)`` with its ids hinted."""

    def apply_lookup(
        documents: Any, spec: Any, collection_resolver: Any, *args: Any, **kwargs: Any
    ) -> Any:
        def run() -> Any:
            return original(documents, spec, collection_resolver, *args, **kwargs)

        if not isinstance(collection_resolver, LazyResources) or not isinstance(spec, dict):
            return run()
        ids = lookup_ids(spec, documents, kwargs.get("collation"))
        return _with_hint(collection_resolver, spec.get("from"), ids, run)

    return apply_lookup


def wrap_lookup_states(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_apply_lookup_states(states, spec, *, collection_resolver, ...)`` with its ids hinted."""

    def apply_lookup_states(states: Any, spec: Any, **kwargs: Any) -> Any:
        resolver = kwargs.get("collection_resolver")

        def run() -> Any:
            return original(states, spec, **kwargs)

        if not isinstance(resolver, LazyResources) or not isinstance(spec, dict):
            return run()
        ids = lookup_ids(spec, states, kwargs.get("collation"))
        return _with_hint(resolver, spec.get("from"), ids, run)

    return apply_lookup_states


def _union_collection(spec: dict[str, Any], resolver: LazyResources) -> str | None:
    coll = spec.get("coll")
    return coll if isinstance(coll, str) and coll else resolver.collection


def wrap_union(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_apply_union_with(documents, spec, collection_resolver, ...)`` with its ids hinted."""

    def apply_union_with(
        documents: Any, spec: Any, collection_resolver: Any, *args: Any, **kwargs: Any
    ) -> Any:
        def run() -> Any:
            return original(documents, spec, collection_resolver, *args, **kwargs)

        if not isinstance(collection_resolver, LazyResources) or not isinstance(spec, dict):
            return run()
        collection = _union_collection(spec, collection_resolver)
        return _with_hint(collection_resolver, collection, union_ids(spec), run)

    return apply_union_with


def wrap_union_states(original: Callable[..., Any]) -> Callable[..., Any]:
    """``_apply_union_states(states, spec, *, collection_resolver, ...)`` with its ids hinted."""

    def apply_union_states(states: Any, spec: Any, **kwargs: Any) -> Any:
        resolver = kwargs.get("collection_resolver")

        def run() -> Any:
            return original(states, spec, **kwargs)

        if not isinstance(resolver, LazyResources) or not isinstance(spec, dict):
            return run()
        return _with_hint(resolver, _union_collection(spec, resolver), union_ids(spec), run)

    return apply_union_states
