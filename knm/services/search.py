"""Number search: fan out to carriers, merge, cache, page.

A fresh search (offset 0) asks every carrier of the account's list concurrently, each bounded by
``number_search_timeout_ms``; the merged results (exact duplicates collapsed, sorted by number)
are kept in a TTL collection keyed by the query id, so whichever worker serves the next page
(offset > 0) reads the same results. The cache also answers "was this number discovered?" when a
number that knm does not store yet is activated.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from carriers.base import CarrierContext, SearchRequest, SearchResult
from carriers.registry import CarrierRegistry
from config.settings import Settings
from knm.domain import convert
from knm.domain.accounts import Account
from knm.domain.number import NumberState, utcnow
from knm.store import read_once
from knm.store.numbers import DUPLICATE_KEY, chunked, find_in

log = logging.getLogger(__name__)


class SearchQuery(BaseModel):
    """What a caller asks for; ``prefix`` is what the user typed (e.g. ``415``)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(min_length=1)
    quantity: int = Field(default=1, ge=1)
    offset: int = Field(default=0, ge=0)
    country: str = "US"
    account_id: str | None = None
    carriers: list[str] | None = Field(
        default=None, description="Override the carrier list (admin tooling and tests)."
    )
    query_id: str | None = None


#: Up to this many numbers, ``discovered`` fetches each number's result alone.
FEW_NUMBERS = 4


class SearchCache:
    """Merged results per query id, shared by every worker through MongoDB with a TTL.

    A query's results are kept in parts of ``PART_SIZE`` (``<query id>#<part>``, each naming
    the numbers it offers for discovery): a purchase reads the part offering its number, not
    the whole search (a search keeps up to ``maximum_search_quantity`` results, and the store
    decodes a document whole). A page is read from every part of its query; one missing (a
    search being written again) is a miss.
    """

    #: Results per cache document.
    PART_SIZE: int = 25

    def __init__(
        self, collection: Collection[dict[str, Any]], ttl_s: int, max_in: int | None = None
    ) -> None:
        self.collection = collection
        self.max_in = max_in
        self.ttl = timedelta(seconds=ttl_s)

    def put(self, query_id: str, results: list[SearchResult]) -> None:
        """Replace the query's results (two commands: its old parts go, the new ones come)."""
        expires = utcnow() + self.ttl
        parts = [results[i : i + self.PART_SIZE] for i in range(0, len(results), self.PART_SIZE)]
        parts = parts or [[]]
        self.collection.delete_many({"query_id": query_id})
        try:
            self._insert_parts(query_id, parts, expires)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            # the same search written at the same time by another worker: its parts stand

    def _insert_parts(
        self, query_id: str, parts: list[list[SearchResult]], expires: datetime
    ) -> None:
        self.collection.insert_many(
            [
                {
                    "_id": f"{query_id}#{k:05d}",
                    "query_id": query_id,
                    "part": k,
                    "parts": len(parts),
                    "results": [r.to_json() for r in part],
                    "discovery_numbers": sorted(
                        {r.number for r in part if r.state == NumberState.DISCOVERY}
                    ),
                    "expires_at": expires,
                }
                for k, part in enumerate(parts)
            ],
            ordered=False,
        )

    def get(self, query_id: str) -> list[SearchResult] | None:
        """The query's results, or None: not cached, expired, or some part missing."""
        docs = list(self.collection.find({"query_id": query_id}).sort("part", ASCENDING))
        if not docs or any(_expired(d) for d in docs):
            return None
        count = docs[0].get("parts")
        if [d.get("part") for d in docs] != list(range(int(count or 0))) or any(
            d.get("parts") != count for d in docs
        ):
            return None  # written again right now: some parts are not there (yet)
        return [SearchResult.from_json(r) for d in docs for r in d.get("results", [])]

    def discovered(self, numbers: Iterable[str]) -> dict[str, SearchResult]:
        """The cached ``discovery`` result of each number that has one.

        A few numbers (a provisioning request buys one or two) are looked up one by one with a
        projection that returns just that number's result, not the whole search (a search
        caches up to ``maximum_search_quantity`` results); more are read in one query.
        """
        wanted = list(numbers)
        found: dict[str, SearchResult] = {}
        if not wanted:
            return found
        reused = read_once.take("discovered", wanted)
        if reused is not None:  # dispatch just read them to route this share
            return reused
        if len(wanted) <= FEW_NUMBERS:
            for number in wanted:
                hit = self._discovered_one(number)
                if hit is not None:
                    found[number] = hit
            return found
        return discovery_hits(
            find_in(self.collection, "discovery_numbers", wanted, self.max_in), wanted
        )

    def _discovered_one(self, number: str) -> SearchResult | None:
        projection = {
            "expires_at": 1,
            "results": {"$elemMatch": {"number": number, "state": NumberState.DISCOVERY.value}},
        }
        for doc in self.collection.find({"discovery_numbers": number}, projection):
            results = doc.get("results") or []
            if results and not _expired(doc):
                return SearchResult.from_json(results[0])
        return None

    def forget_numbers(self, numbers: Iterable[str]) -> None:
        """Drop cache entries that offer these numbers (after they were purged or bought)."""
        for chunk in chunked(numbers, self.max_in):
            self.collection.delete_many({"discovery_numbers": {"$in": chunk}})


def discovery_hits(
    docs: Iterable[dict[str, Any]], numbers: Iterable[str]
) -> dict[str, SearchResult]:
    """The first unexpired ``discovery`` result of each of ``numbers`` in cache documents."""
    wanted = set(numbers)
    found: dict[str, SearchResult] = {}
    for doc in docs:
        if _expired(doc):
            continue
        for raw in doc.get("results", []):
            if raw["number"] in wanted and raw["state"] == NumberState.DISCOVERY.value:
                found.setdefault(raw["number"], SearchResult.from_json(raw))
    return found


def _expired(doc: dict[str, Any]) -> bool:
    expires = doc.get("expires_at")
    return expires is not None and expires < utcnow()


def default_query_id(country: str, prefix: str, account_id: str | None) -> str:
    """KAZOO's ``<country>-<prefix>-<hash>`` cursor id, one per searching account."""
    digest = hashlib.sha1((account_id or "anonymous").encode(), usedforsecurity=False).hexdigest()
    return f"{country}-{prefix}-{digest[:16]}"


class Searcher:
    """Runs searches across the carrier modules of an account."""

    def __init__(
        self,
        ctx: CarrierContext,
        registry: CarrierRegistry,
        cache: SearchCache,
        settings: Settings,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.cache = cache
        self.settings = settings

    def carriers_for(self, account: Account | None, reseller: Account | None) -> list[str]:
        """The fan-out list, with the reseller's per-account modules."""
        reseller_modules = reseller.number_manager.carrier_modules if reseller is not None else None
        return self.registry.available_carriers(
            account.id if account else None,
            reseller.id if reseller else None,
            self.settings.carrier_modules,
            reseller_modules,
        )

    def search(
        self, query: SearchQuery, account: Account | None, reseller: Account | None
    ) -> list[SearchResult]:
        """One page of results: a fresh fan-out at offset 0, the shared cache after that."""
        country = query.country.upper()
        try:
            dialcode = convert.to_itu(country)
        except ValueError:
            country = self.settings.default_country
            dialcode = convert.to_itu(country)
        prefix = query.prefix if query.prefix.startswith("+") else dialcode + query.prefix
        quantity = min(query.quantity, self.settings.maximum_search_quantity)
        query_id = query.query_id or default_query_id(
            country, query.prefix, account.id if account else None
        )
        if query.offset > 0:
            cached = self.cache.get(query_id)
            if cached is not None:
                return cached[query.offset : query.offset + quantity]
        modules = (
            query.carriers if query.carriers is not None else self.carriers_for(account, reseller)
        )
        request = SearchRequest(
            prefix=prefix,
            quantity=self.settings.maximum_search_quantity,
            offset=0,
            account_id=account.id if account else None,
            reseller_id=reseller.id if reseller else None,
            query_id=query_id,
            country=country,
            dialcode=dialcode,
        )
        results = self._fan_out(modules, request)
        self.cache.put(query_id, results)
        return results[query.offset : query.offset + quantity]

    def _fan_out(self, modules: list[str], request: SearchRequest) -> list[SearchResult]:
        """Ask every carrier at once; a slow or failing carrier only loses its own answers."""
        carriers = [c for m in modules if (c := self.registry.get(m, self.ctx)) is not None]
        if not carriers:
            return []
        timeout = self.settings.number_search_timeout_ms / 1000
        merged: dict[tuple[str, str, str, str], SearchResult] = {}
        pool = ThreadPoolExecutor(max_workers=len(carriers), thread_name_prefix="knm-search")
        try:
            futures = [pool.submit(c.find_numbers, request) for c in carriers]
            done, _pending = wait(futures, timeout=timeout)
            for carrier, future in zip(carriers, futures, strict=True):
                if future not in done:
                    log.warning("%s: no answer within %.1f s", carrier.name, timeout)
                    continue
                if (error := future.exception()) is not None:
                    log.warning("%s: search failed: %s", carrier.name, error)
                    continue
                for result in future.result():
                    key = (
                        result.number,
                        result.carrier_module,
                        result.state.value,
                        repr(sorted(result.carrier_data.items())),
                    )
                    merged.setdefault(key, result)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return sorted(merged.values(), key=lambda r: r.number)
