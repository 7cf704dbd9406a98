"""Byte-budget decisions of the model cache (the LRU itself is Serve's; a dict stands in for it here)."""

import asyncio
from collections import OrderedDict

import pytest

from unison.serving.cache import CacheConfig, ModelCache, ModelTooLarge

MIB = 1 << 20


def _cache(budget_mib: int, loaded: dict[str, int]) -> tuple[ModelCache, OrderedDict]:
    cache = ModelCache(CacheConfig(budget_bytes=budget_mib * MIB))
    lru: OrderedDict = OrderedDict()
    for model_id, mib in loaded.items():
        cache.loaded(model_id, mib * MIB, 0.1)
        lru[model_id] = object()
    return cache, lru


def _unload(lru: OrderedDict):  # what Serve's unload_model_lru does to its dict
    async def unload() -> None:
        lru.popitem(last=False)
    return unload


def test_make_room_evicts_least_recently_used_until_the_newcomer_fits() -> None:
    cache, lru = _cache(50, {"a": 20, "b": 20})
    asyncio.run(cache.make_room("c", 20 * MIB, lru, _unload(lru)))
    assert list(lru) == ["b"] and cache.total == 20 * MIB and cache.stats.evictions == 1
    asyncio.run(cache.make_room("d", 5 * MIB, lru, _unload(lru)))
    assert list(lru) == ["b"]  # fits without evicting


def test_a_model_larger_than_the_budget_is_refused_without_evicting() -> None:
    cache, lru = _cache(50, {"a": 20})
    with pytest.raises(ModelTooLarge, match="more than this replica's budget of 50 MiB"):
        asyncio.run(cache.make_room("big", 60 * MIB, lru, _unload(lru)))
    assert list(lru) == ["a"] and cache.stats.refused == 1


def test_expected_size_is_the_last_measurement_then_the_disk_size() -> None:
    cache, lru = _cache(100, {"a": 17})
    assert cache.expected("a", 23 * MIB) == 17 * MIB and cache.expected("b", 23 * MIB) == 23 * MIB
    asyncio.run(cache.shrink(lru, _unload(lru), 0))
    assert cache.expected("a", 23 * MIB) == 17 * MIB  # remembered across evictions


def test_lowering_the_budget_shrinks_to_it() -> None:
    cache, lru = _cache(100, {"a": 30, "b": 30, "c": 30})
    cache.config = CacheConfig(budget_bytes=40 * MIB)
    assert asyncio.run(cache.shrink(lru, _unload(lru))) == ["a", "b"]
    report = cache.report()
    assert report["resident_bytes"] == 30 * MIB and set(report["models"]) == {"c"} and report["evictions"] == 2
