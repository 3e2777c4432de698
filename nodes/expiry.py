"""When the agent's chains expire, in order: housekeeping touches only the due ones.

A chain's soft state runs out at its `expires` (its lifetime plus the grace, from when
it was last attached or refreshed). Looking at every chain at each heartbeat costs
work that grows with the chains; this queue holds one entry per session, ordered by
time, so each look costs O(log n) per chain that is due, and nothing for the others.

A refresh moves a chain's expiry, usually later: its entry then stays where it is, and
when that time comes and the chain has more to live, it is put back at its new time
(once per lifetime, not once per heartbeat). A refresh to an earlier time adds an
entry at that time; the later one is skipped when it comes (an entry counts only while
it is its session's latest). Entries of sessions gone are skipped too, and the queue
is rebuilt when they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable


class ExpiryQueue:
    """Sessions by the time their chain expires. Safe to call from several threads."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []  # (when, session id), the earliest first
        self._when: dict[int, float] = {}  # session id: the time of its one live entry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._when)

    def add(self, session_id: int, expires: float) -> None:
        """Make sure session `session_id` is looked at by `expires` (on an attach, and on
        a refresh: an entry already due earlier is kept, see above)."""
        with self._lock:
            when = self._when.get(session_id)
            if when is None or expires < when:
                self._push(session_id, expires)

    def discard(self, session_id: int) -> None:
        """Forget session `session_id` (its chain is gone); its entry is skipped."""
        with self._lock:
            self._when.pop(session_id, None)

    def pop_due(self, now: float, expires_of: Callable[[int], float | None]) -> list[int]:
        """Return the sessions whose chain has expired at `now`, the earliest first, and
        forget them. `expires_of(session id)` says when a chain expires now (None: there
        is none): a chain whose entry is due but that was refreshed is put back at its
        new time."""
        due = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                when, session_id = heapq.heappop(heap)
                if self._when.get(session_id) != when:
                    continue  # a later or earlier entry of it counts, or it is gone
                del self._when[session_id]
                expires = expires_of(session_id)
                if expires is None:
                    continue
                if expires <= now:
                    due.append(session_id)
                else:
                    self._push(session_id, expires)
        return due

    def _push(self, session_id: int, when: float) -> None:
        self._when[session_id] = when
        heapq.heappush(self._heap, (when, session_id))
        if len(self._heap) > 2 * len(self._when) + 64:  # mostly skipped entries: rebuild
            self._heap = [(w, s) for s, w in self._when.items()]
            heapq.heapify(self._heap)
