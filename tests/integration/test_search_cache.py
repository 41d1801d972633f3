"""The search cache keeps a query's results in parts: pages read every part, a purchase one."""

from __future__ import annotations

from typing import Any

import pymongo
import pytest
from pymongo.database import Database

from carriers.base import SearchResult
from knm.domain.number import NumberState
from knm.services.search import SearchCache
from knm.store.numbers import Store
from tests.command_log import CommandLog

pytestmark = pytest.mark.integration

Doc = dict[str, Any]


def _results(n: int, prefix: str = "+1646555") -> list[SearchResult]:
    return [
        SearchResult(
            f"{prefix}{i:04d}",
            "knm_telnyx",
            NumberState.DISCOVERY if i % 3 else NumberState.AVAILABLE,
            {"i": i},
        )
        for i in range(n)
    ]


@pytest.fixture
def cache(mongo_db: Database[Doc]) -> SearchCache:
    Store(mongo_db).ensure_indexes()
    return SearchCache(mongo_db["search_cache"], ttl_s=600)


def test_a_search_is_kept_in_parts_and_read_back_whole_in_order(cache: SearchCache) -> None:
    results = _results(2 * SearchCache.PART_SIZE + 7)
    cache.put("US-646-q", results)
    parts = list(cache.collection.find({"query_id": "US-646-q"}).sort("part", 1))
    assert [len(p["results"]) for p in parts] == [SearchCache.PART_SIZE] * 2 + [7]
    assert cache.get("US-646-q") == results
    # each part names the numbers it offers for discovery, and only those
    first = parts[0]
    assert first["discovery_numbers"] == sorted(
        r.number for r in results[: SearchCache.PART_SIZE] if r.state == NumberState.DISCOVERY
    )


def test_a_new_search_replaces_every_part_of_the_old(cache: SearchCache) -> None:
    cache.put("US-646-q", _results(3 * SearchCache.PART_SIZE))
    fewer = _results(5, prefix="+1646777")
    cache.put("US-646-q", fewer)
    assert cache.get("US-646-q") == fewer
    assert cache.collection.count_documents({"query_id": "US-646-q"}) == 1
    assert cache.discovered(["+16465550001"]) == {}  # the old search's numbers are gone


def test_an_empty_search_is_cached_as_empty(cache: SearchCache) -> None:
    cache.put("US-999-q", [])
    assert cache.get("US-999-q") == []
    assert cache.get("US-999-other") is None


def test_a_page_missing_a_part_is_a_miss(cache: SearchCache) -> None:
    """A search being written again (its old parts deleted, the new not all there yet) is not
    served as a short page."""
    cache.put("US-646-q", _results(2 * SearchCache.PART_SIZE + 1))
    cache.collection.delete_one({"_id": "US-646-q#00001"})
    assert cache.get("US-646-q") is None


def test_a_purchase_reads_the_part_offering_its_number(
    mongo_db: Database[Doc], mongo_url: str
) -> None:
    """Looking up one discovered number returns one part (PART_SIZE results at most), not
    the whole search."""
    replies: list[Doc] = []

    class Replies(CommandLog):
        def succeeded(self, event: Any) -> None:
            replies.append(event.reply)

    client: pymongo.MongoClient[Doc] = pymongo.MongoClient(
        mongo_url, tz_aware=True, event_listeners=[Replies()]
    )
    try:
        db = client[mongo_db.name]
        Store(db).ensure_indexes()
        cache = SearchCache(db["search_cache"], ttl_s=600)
        results = _results(8 * SearchCache.PART_SIZE)
        cache.put("US-646-q", results)
        wanted = results[-1].number
        replies.clear()
        hits = cache.discovered([wanted, results[0].number])  # the first is not discovery
        assert hits == {wanted: results[-1]}
        documents = [d for r in replies for d in r.get("cursor", {}).get("firstBatch", [])]
        assert [d["_id"] for d in documents] == ["US-646-q#00007"]
    finally:
        client.close()
