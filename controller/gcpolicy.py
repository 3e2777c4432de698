"""When the controller (and a node's agent, for its chains) hands its long-lived
objects to the garbage collector's permanent generation (`gc.freeze`), and when it
takes them back.

Each session is a few dozen objects the cyclic collector tracks (the session, its
match and modules, the indexes' entries), and every collection of the older
generations walks all of them: with 10,000 sessions held a full collection took
0.13 s of the controller's one thread, and setups with one client ran at about half
the rate of an empty node. Frozen objects are not walked; they are still freed by
reference counting when a session ends, so only garbage in reference cycles among
them waits, for the next thaw (a full collection, then a new freeze), every
THAW_EVERY seconds.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

FREEZE_EVERY = 1000  # sessions more than at the last freeze
THAW_EVERY = 600.0  # seconds between full collections of what was frozen


@dataclass
class FreezePolicy:
    """Decides, from the sessions held and the time, what the tick does to the heap."""

    frozen_at: int = 0  # sessions held at the last freeze or thaw
    since: float | None = None  # when the last thaw was, or the first freeze

    def step(self, sessions: int, now: float) -> str | None:
        """Return "freeze", "thaw" (collect all, then freeze again) or None."""
        if self.since is not None and now - self.since >= THAW_EVERY:
            self.frozen_at, self.since = sessions, now
            return "thaw"
        if sessions >= self.frozen_at + FREEZE_EVERY:
            self.frozen_at = sessions
            if self.since is None:
                self.since = now
            return "freeze"
        return None


def apply(action: str | None) -> None:
    """Carry out what `FreezePolicy.step` decided."""
    if action == "thaw":
        gc.unfreeze()
        gc.collect()
    if action in ("freeze", "thaw"):
        gc.freeze()
