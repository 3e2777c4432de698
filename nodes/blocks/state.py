"""Per-flow state: a table keyed by flow (see `Frame.flow_key`) whose entries expire when idle.

Entries are kept in order of last use, so the idle ones are at the front: expiry
looks at the front only, and a full table makes room by dropping the least
recently used flow. Time comes from the clock the table was given (`ctx.clock`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

S = TypeVar("S")
EXPIRE_PER_USE = 8  # idle entries dropped on each insert, so expiry keeps pace with traffic


class FlowTable(Generic[S]):
    """Flow key → state, each entry forgotten `idle` seconds after its last use.

    `get(key)` returns a live entry's state (and counts as a use); `setdefault(key)`
    also makes one with `factory()` when there is none. At most `max_entries`: a new
    flow in a full table evicts the least recently used one. `on_expire(key, state)`,
    if given, is called for every entry that expires or is evicted (not for `pop`).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        idle: float,
        max_entries: int = 65536,
        factory: Callable[[], S] | None = None,
        on_expire: Callable[[Hashable, S], object] | None = None,
    ) -> None:
        if isinstance(idle, bool) or not isinstance(idle, int | float) or not idle > 0:
            raise ValueError(f"idle must be a positive number of seconds, got {idle!r}")
        if not math.isfinite(idle):
            raise ValueError("idle must be finite")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.clock, self.idle, self.max_entries = clock, float(idle), max_entries
        self.factory, self.on_expire = factory, on_expire
        self._entries: OrderedDict[Hashable, list] = OrderedDict()  # key → [state, last used]
        self.expired = 0  # entries forgotten for being idle
        self.evicted = 0  # ... to make room

    def get(self, key: Hashable, default: S | None = None) -> S | None:
        """Return the state of `key`'s live entry and mark it used; `default` when none."""
        entry = self._entries.get(key)
        if entry is None:
            return default
        now = self.clock()
        if now - entry[1] >= self.idle:
            self._forget(key, entry)
            return default
        entry[1] = now
        self._entries.move_to_end(key)
        return entry[0]

    def setdefault(self, key: Hashable, state: S | None = None) -> S:
        """Return the state of `key`'s live entry, marked used; make the entry first, with
        `state` (or `factory()` when `state` is None) when there is none."""
        found = self.get(key, _MISSING)  # type: ignore[arg-type]
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        if state is None:
            if self.factory is None:
                raise ValueError("no state given and the table has no factory")
            state = self.factory()
        now = self.clock()
        self._expire(now, EXPIRE_PER_USE)
        while len(self._entries) >= self.max_entries:
            old_key, old = self._entries.popitem(last=False)
            self.evicted += 1
            self._notify(old_key, old[0])
        self._entries[key] = [state, now]
        return state

    def pop(self, key: Hashable, default: S | None = None) -> S | None:
        """Remove `key`'s entry; return its state, or `default` when there was no live one."""
        entry = self._entries.pop(key, None)
        if entry is None or self.clock() - entry[1] >= self.idle:
            return default
        return entry[0]

    def expire(self, now: float | None = None) -> int:
        """Forget every entry idle for `idle` seconds by `now`; return how many."""
        return self._expire(self.clock() if now is None else now, None)

    def _expire(self, now: float, limit: int | None) -> int:
        done = 0
        entries = self._entries
        while entries and (limit is None or done < limit):
            key, entry = next(iter(entries.items()))
            if now - entry[1] < self.idle:
                break
            self._forget(key, entry)
            done += 1
        return done

    def _forget(self, key: Hashable, entry: list) -> None:
        del self._entries[key]
        self.expired += 1
        self._notify(key, entry[0])

    def _notify(self, key: Hashable, state: S) -> None:
        if self.on_expire is not None:
            self.on_expire(key, state)

    def __contains__(self, key: Hashable) -> bool:
        """Return True when `key` has a live entry (without marking it used)."""
        entry = self._entries.get(key)
        return entry is not None and self.clock() - entry[1] < self.idle

    def __len__(self) -> int:
        """Return how many entries are held, idle ones not yet expired included."""
        return len(self._entries)

    def items(self) -> Iterator[tuple[Hashable, S]]:
        """Yield (key, state) of the live entries, least recently used first."""
        now = self.clock()
        for key, (state, used) in list(self._entries.items()):
            if now - used < self.idle:
                yield key, state


_MISSING = object()
