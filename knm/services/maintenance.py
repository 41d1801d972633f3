"""KAZOO's number maintenance (``kazoo_numbers_maintenance``) without CouchDB.

Carrier module usage and conversion, purges by prefix, deleting a number, per-number feature
permissions and fixing ``used_by`` from an app mapping. Bulk commands page through the numbers
in batches and report progress through a callback (the CLI draws a progress bar).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from carriers.base import prefix_range
from knm.domain import convert, errors
from knm.domain.batch import Batch
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.services import features
from knm.services.facade import InputError, Knm
from knm.store.numbers import chunked

BATCH: Final[int] = 500

#: Every feature KAZOO knows; permission edits accept only these.
ALL_FEATURES: Final[tuple[str, ...]] = features.ALL_FEATURES

Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


@dataclass
class BulkReport:
    """Successes and failures of a bulk maintenance command."""

    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, Any] = field(default_factory=dict)

    def add(self, batch: Batch) -> None:
        self.succeeded.extend(sorted(batch.succeeded))
        self.failed.update({k: e.to_json() for k, e in batch.failed.items()})

    def to_json(self) -> dict[str, Any]:
        return {"succeeded": self.succeeded, "failed": self.failed}


def _prefix_query(prefix: str | None) -> dict[str, Any]:
    """Numbers starting with ``prefix`` (``+1555`` or ``1555``); none means all."""
    if not prefix:
        return {}
    return {"_id": prefix_range(prefix if prefix.startswith("+") else "+" + prefix)}


def _pages(knm: Knm, query: dict[str, Any]) -> Iterator[list[str]]:
    """Ids matching ``query`` in ``_id`` order, a batch at a time (keyset paging)."""
    after: str | None = None
    while True:
        page = dict(query)
        if after is not None:
            bound = dict(page.get("_id", {}))
            bound["$gt"] = max(after, bound.get("$gte", after))
            bound.pop("$gte", None)
            page["_id"] = bound
        found = knm.store.numbers.find(page, {"_id": 1}).sort("_id", 1).limit(BATCH)
        ids = [d["_id"] for d in found.batch_size(BATCH)]  # the whole page in one reply
        if not ids:
            return
        yield ids
        if not isinstance(query.get("_id", {}), dict):
            return  # one exact number: one page
        after = ids[-1]


def carrier_usage(knm: Knm, prefix: str | None = None) -> dict[str, int]:
    """Numbers per carrier module (all numbers, or those starting with ``prefix``)."""
    pipeline: list[dict[str, Any]] = []
    if prefix:
        pipeline.append({"$match": _prefix_query(prefix)})
    pipeline.append({"$group": {"_id": "$pvt_carrier_module", "count": {"$sum": 1}}})
    usage: dict[str, int] = defaultdict(int)
    for d in knm.store.numbers.aggregate(pipeline):
        # documents without a module are the default module's: add them up, not overwrite
        usage[str(d["_id"] or knm.settings.available_module_name)] += int(d["count"])
    return dict(sorted(usage.items()))


def convert_carrier_module(
    knm: Knm,
    source: str,
    target: str,
    *,
    prefix: str | None = None,
    number: str | None = None,
    progress: Progress = _no_progress,
) -> BulkReport:
    """Set ``target`` as the module of numbers whose module is ``source`` (system auth).

    ``target`` must be a registered carrier (400 ``carrier_not_found`` otherwise): work on a
    number runs on its module's queue, which only a registered carrier's workers consume.
    """
    if target not in knm.numbers.carriers:
        unknown = errors.carrier_not_found(target)
        raise InputError(f"{unknown.error}: {unknown.message}")
    report = BulkReport()
    query: dict[str, Any] = {"pvt_carrier_module": source}
    if number is not None:
        if not convert.is_reconcilable(number, knm.settings.reconcile_regex):
            raise InputError(f"not a reconcilable number: {number!r}")
        query["_id"] = convert.normalize(number, knm.settings.e164_converters)
    else:
        query.update(_prefix_query(prefix))
    total = knm.store.numbers.count_documents(query)
    options = Options(batch_run=True)
    for ids in _pages(knm, query):
        report.add(knm.numbers.update(ids, [lambda pn: pn.set_carrier_module(target)], options))
        progress(len(report.succeeded) + len(report.failed), total)
    return report


def purge(
    knm: Knm, state: NumberState, prefix: str | None = None, progress: Progress = _no_progress
) -> int:
    """Delete every stored document in ``state`` (discovery or deleted), by prefix."""
    if state not in (NumberState.DISCOVERY, NumberState.DELETED):
        raise InputError("only discovery and deleted documents can be purged")
    query = {"pvt_state": state.value, **_prefix_query(prefix)}
    total = knm.store.numbers.count_documents(query)
    removed = 0
    for ids in _pages(knm, query):
        for chunk in chunked(ids, knm.store.max_in):  # the embedded server: ~500 values at most
            result = knm.store.numbers.delete_many(
                {"_id": {"$in": chunk}, "pvt_state": state.value}
            )
            removed += result.deleted_count
        if state == NumberState.DISCOVERY:
            knm.numbers.search_cache.forget_numbers(ids)
        progress(removed, total)
    return removed


def delete_number(knm: Knm, number: str) -> Batch:
    """Hard-delete one number with system authority."""
    return knm.numbers.delete([number], Options())


def _check_feature(feature: str) -> None:
    if feature not in ALL_FEATURES:
        raise InputError(
            f"unknown feature {feature!r}: known features are {', '.join(ALL_FEATURES)}"
        )


def feature_permissions(knm: Knm, number: str) -> dict[str, Any]:
    """``pvt_features_allowed`` and ``pvt_features_denied`` of a number."""
    batch = knm.numbers.get([number], Options())
    for pn in batch.succeeded.values():
        return {
            "number": pn.number,
            "allowed": pn.features_allowed,
            "denied": pn.features_denied,
        }
    error = next(iter(batch.failed.values()))
    raise InputError(f"{number}: {error.message or error.error}")


def edit_feature_permission(
    knm: Knm, number: str, *, feature: str, allow: bool, add: bool
) -> Batch:
    """Add or remove ``feature`` on the number's allowed (``allow``) or denied list."""
    _check_feature(feature)

    def setter(pn: PhoneNumber) -> None:
        current = pn.features_allowed if allow else pn.features_denied
        names = sorted(set(current) | {feature}) if add else [f for f in current if f != feature]
        if allow:
            pn.set_features_allowed(names)
        else:
            pn.set_features_denied(names)

    return knm.numbers.update([number], [setter], Options())


def fix_used_by(
    knm: Knm, apps: Mapping[str, str | None], progress: Progress = _no_progress
) -> BulkReport:
    """Set each number's ``used_by`` from ``apps`` (number -> app, or None to clear)."""
    by_app: dict[str | None, list[str]] = defaultdict(list)
    for number, app in apps.items():
        by_app[app or None].append(number)
    report = BulkReport()
    total = len(apps)
    for app, numbers in by_app.items():
        for start in range(0, len(numbers), BATCH):
            report.add(
                knm.numbers.assign_to_app(
                    numbers[start : start + BATCH], app, Options(batch_run=True)
                )
            )
            progress(len(report.succeeded) + len(report.failed), total)
    return report
