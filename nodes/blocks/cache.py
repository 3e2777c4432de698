"""A small key-value cache: bounded, least recently used out first, entries with a lifetime."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

_MISSING = object()


class Cache:
    """At most `max_entries` values; each lives `ttl` seconds (None: until pushed out).

    `get` counts as a use and counts a hit or a miss. Time comes from `clock`.
    """

    def __init__(
        self, clock: Callable[[], float], max_entries: int = 1024, ttl: float | None = None
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.clock, self.max_entries, self.ttl = clock, max_entries, _ttl(ttl)
        self._entries: OrderedDict[Hashable, tuple[object, float]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, default: object = None) -> object:
        """Return the live value of `key` (and mark it used), or `default`."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] <= self.clock():
            del self._entries[key]
            entry = None
        if entry is None:
            self.misses += 1
            return default
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: object, ttl: float | None = None) -> None:
        """Keep `value` under `key` for `ttl` seconds (default: the cache's), pushing out the
        least recently used entry when full."""
        life = self.ttl if ttl is None else _ttl(ttl)
        expires = math.inf if life is None else self.clock() + life
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = (value, expires)

    def pop(self, key: Hashable, default: object = None) -> object:
        """Remove `key`; return its value if it was live, else `default`."""
        entry = self._entries.pop(key, None)
        if entry is None or entry[1] <= self.clock():
            return default
        return entry[0]

    def __contains__(self, key: Hashable) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[1] > self.clock()

    def __len__(self) -> int:
        """Return how many entries are held (expired ones not yet looked at included)."""
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def _ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return float(ttl)
