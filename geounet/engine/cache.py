"""A small bounded mapping for the engine's per-process caches (loaded runners, compiled
shapes): the least recently used entry is dropped beyond the limit, so a long-lived process
(a Dask worker, a notebook) never grows them without bound.

Examples
--------
>>> cache = LeastRecentlyUsed(2)
>>> cache.put("a", 1); cache.put("b", 2); cache.get("a"); cache.put("c", 3)
1
>>> sorted(cache.keys())
['a', 'c']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LeastRecentlyUsed(Generic[K, V]):
    """At most ``limit`` entries; :meth:`get` and :meth:`put` count as use. Not locked:
    callers that share one across threads hold their own lock."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"cache limit {limit} must be at least 1")
        self.limit = int(limit)
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The entry for ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used beyond the limit."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def keys(self) -> list[K]:
        """The keys, least recently used first."""
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
