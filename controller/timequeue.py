"""Session ids by a time of theirs (when a lifetime runs out, when a switch timer
needs re-arming), so that the controller's once-a-second tick looks at the sessions
that are due and not at every session: with 10,000 held, three scans of them took the
controller's one thread for tens of milliseconds each second, and every request
waited behind them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


class TimeQueue:
    """Session ids ordered by a time of each that its owner keeps (`when` reads it).

    The queue holds, for every session it was given, an entry at or before the
    session's time. A time moved later needs no new entry: the old one, once it comes
    due, is queued again at the new time. A time moved earlier is queued at once
    (`moved`). So a session refreshed a thousand times holds one or two entries, and
    an entry of a session gone is dropped when it comes due (or at `rebuild`).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, session_id: int, at: float) -> None:
        """Queue a session new to the queue at its time `at`."""
        heapq.heappush(self._heap, (at, session_id))

    def moved(self, session_id: int, old: float, new: float) -> None:
        """Take note that a session's time went from `old` to `new`."""
        if new < old:
            heapq.heappush(self._heap, (new, session_id))

    def due(self, until: float, when: Callable[[int], float | None]) -> list[int]:
        """Return the ids, each once, of the sessions whose time (`when`: None for a
        session gone) is at or before `until`. They stay queued: a session is due again
        at the next call until its time moves or it goes."""
        heap, found = self._heap, {}
        while heap and heap[0][0] <= until:
            at, session_id = heapq.heappop(heap)
            now_at = when(session_id)
            if now_at is None or now_at < at:  # gone, or queued earlier as well
                continue
            if now_at > at:  # moved later since
                heapq.heappush(heap, (now_at, session_id))
                continue
            found[session_id] = at
        for session_id, at in found.items():
            heapq.heappush(heap, (at, session_id))
        return list(found)

    def rebuild(self, entries: Iterable[tuple[float, int]]) -> None:
        """Hold just `entries` ((time, session id) of every session there is)."""
        self._heap = list(entries)
        heapq.heapify(self._heap)
