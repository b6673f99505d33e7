"""The tile server's LRU cache, bounded by the total size of its values."""

from pipeline.serve.cache import LRUCache


def test_lru_cache_evicts_the_least_recently_used_by_size():
    cache: LRUCache[str] = LRUCache(max_bytes=10)
    cache.put("a", "A", 4)
    cache.put("b", "B", 4)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    cache.put("huge", "H", 11)
    assert cache.get("huge") is None and len(cache) == 2 and cache.bytes == 8
