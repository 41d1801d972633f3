"""One query for everything a share of work reads before it runs.

A share (one carrier's part of a request) reads its numbers, the search results of the ones
not stored yet, the accounts the operation checks (the requester, the target account, the
numbers' owners, with their resellers), the system config, and, on a carrier's queue, its
request id's claim and the outcome recorded for it. Read one by one that is up to six round
trips; here it is one aggregation on ``numbers`` (on ``search_cache`` when search results are
read) that joins each number's owner and appends the other collections (``$unionWith``). The
numbers, accounts and config are remembered (``read_once``) for the operation that runs next
in this thread, so it reads none of them again.

Every join is on ``_id``: MongoDB answers it from the index, the embedded engine by primary key
(it reads only the documents a join pins, not the joined collection).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from knm.domain.number import NumberState, utcnow
from knm.store import read_once, system_config
from knm.store.numbers import CONFIG_KIND, Document, Store

#: The field that says which collection a document of the aggregation came from.
KIND: Final[str] = "_knm_read"
OWNER: Final[str] = "_knm_owner"
OWNER_RESELLERS: Final[str] = "_knm_owner_resellers"


@dataclass
class ShareRead:
    """What one share read found (absent: not stored)."""

    numbers: dict[str, Document] = field(default_factory=dict)
    #: The cached ``discovery`` search result of each number that has one (as stored).
    discovery: dict[str, Document] = field(default_factory=dict)
    #: Numbers whose first result in a cache document is not a ``discovery`` one: whether a
    #: later one is, this read cannot tell (the operation reads them itself).
    unsure: set[str] = field(default_factory=set)
    claim: Document | None = None
    outcome: Document | None = None


def can_read(store: Store, numbers: list[str]) -> bool:
    """Whether one query can read the share: there are numbers to read and one query may name
    them all (``KNM_MONGODB_MAX_IN``)."""
    return bool(numbers) and (store.max_in is None or len(numbers) <= store.max_in)


def read_share(
    store: Store,
    numbers: list[str],
    accounts: Iterable[str],
    *,
    discovery: bool,
    claim: tuple[str, str] | None = None,
    outcome: tuple[str, str] | None = None,
) -> ShareRead:
    """Read ``numbers`` (E.164, no duplicates), their discovery results when ``discovery``,
    the ``accounts`` and the numbers' owners with their resellers, the system config, and the
    documents ``claim`` and ``outcome`` name (``(collection, _id)``), in one query.

    The numbers, accounts and config are remembered for the operation (``read_once``).
    """
    wanted_accounts = sorted(set(accounts))
    numbers_stage: list[Document] = [
        {"$match": {"_id": {"$in": numbers}}},
        _lookup(store, "pvt_assigned_to", OWNER),
        _lookup(store, f"{OWNER}.pvt_reseller_id", OWNER_RESELLERS),
        {"$addFields": {KIND: "number"}},
    ]
    base = store.numbers
    pipeline = numbers_stage
    if discovery:
        # the cache documents offering the numbers, each holding (by position) the first
        # result of each number: a cache document holds a whole search, so it is searched
        # where it is stored; a lookup of each number in the array is far cheaper than a
        # filter expression over every result
        picked = [
            {"$arrayElemAt": ["$results", {"$indexOfArray": ["$results.number", number]}]}
            for number in numbers
        ]
        base = store.search_cache
        pipeline = [
            {"$match": {"discovery_numbers": {"$in": numbers}}},
            {"$project": {"expires_at": 1, "results": picked}},
            {"$addFields": {KIND: "discovery"}},
            {"$unionWith": {"coll": store.numbers.name, "pipeline": numbers_stage}},
        ]
    if wanted_accounts:
        pipeline.append(
            _union(
                store.accounts.name,
                [
                    {"$match": {"_id": {"$in": wanted_accounts}}},
                    _lookup(store, "pvt_reseller_id", "_resellers"),
                ],
                "account",
            )
        )
    pipeline.append(
        _union(system_config.COLLECTION, [{"$match": {"_id": system_config.DOC_ID}}], "config")
    )
    for kind, named in (("claim", claim), ("outcome", outcome)):
        if named is not None:
            pipeline.append(_union(named[0], [{"$match": {"_id": named[1]}}], kind))

    read = ShareRead()
    found_accounts: dict[str, Document] = {}
    looked_up: set[str] = set(wanted_accounts)
    config: Document | None = None
    for doc in base.aggregate(pipeline):
        kind = doc.pop(KIND, None)
        if kind == "number":
            owners = doc.pop(OWNER, None) or []
            resellers = doc.pop(OWNER_RESELLERS, None) or []
            owner = doc.get("pvt_assigned_to")
            if isinstance(owner, str):
                looked_up.add(owner)
            for account in owners:
                mine = [r for r in resellers if r.get("_id") == account.get("pvt_reseller_id")]
                found_accounts[str(account["_id"])] = {**account, "_resellers": mine}
            read.numbers[str(doc["_id"])] = doc
        elif kind == "discovery":
            _discovered(read, numbers, doc)
        elif kind == "account":
            found_accounts[str(doc["_id"])] = doc
        elif kind == "config":
            config = doc
        elif kind == "claim":
            read.claim = doc
        elif kind == "outcome":
            read.outcome = doc
    read_once.remember("numbers", numbers, read.numbers)
    read_once.remember("accounts", looked_up, found_accounts)
    read_once.remember(CONFIG_KIND, [system_config.DOC_ID], {system_config.DOC_ID: config})
    return read


def _discovered(read: ShareRead, numbers: list[str], doc: Document) -> None:
    """Take the results of an unexpired cache document (the first hit of a number wins)."""
    expires = doc.get("expires_at")
    if expires is not None and expires < utcnow():
        return
    for number, result in zip(numbers, doc.get("results") or [], strict=False):
        if number in read.discovery or number in read.unsure:
            continue
        if not isinstance(result, dict) or result.get("number") != number:
            continue  # not offered by this search
        if result.get("state") == NumberState.DISCOVERY.value:
            read.discovery[number] = result
        else:
            read.unsure.add(number)


def _lookup(store: Store, local: str, into: str) -> Document:
    """Join the accounts whose ``_id`` is ``local`` as ``into``."""
    return {
        "$lookup": {
            "from": store.accounts.name,
            "localField": local,
            "foreignField": "_id",
            "as": into,
        }
    }


def _union(collection: str, pipeline: list[Document], kind: str) -> Document:
    return {
        "$unionWith": {"coll": collection, "pipeline": [*pipeline, {"$addFields": {KIND: kind}}]}
    }


__all__ = ["ShareRead", "can_read", "read_share"]
