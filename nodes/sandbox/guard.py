"""A module instance's guard: its failure policy, its budgets' running accounts, its state.

Every module in a chain has one. It says what becomes of a frame the module could not
handle (failure "open": the frame goes on without it; "closed": it is dropped), counts
what the module cost against its budgets, and holds the module's state: "running",
or "quarantined" with the reason. A quarantined module is replaced in its chain by a
`Quarantined` stand-in that applies the failure policy to every frame, and is never
called again; its session and every other session go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from nodes.module_api import ServiceModule, Verdict
from nodes.sandbox.budgets import Budget, TimeAccount, admit, error_bucket, frame_bucket

RUNNING, QUARANTINED = "running", "quarantined"
STATES = (RUNNING, QUARANTINED)

# What a quarantine's reason says first, and the cause it is counted under.
_CAUSES = (
    ("hung", "hung"),
    ("over its memory budget", "memory"),
    ("killed by the sandbox", "seccomp"),
    ("over its error budget", "errors"),
    ("over its time budget", "time"),
    ("broke the channel", "protocol"),
    ("died", "died"),
    ("exited", "died"),
    ("closed its channel", "died"),
)


class Guard:
    """One module instance's failure policy, budget accounts and state.

    `error()`, `admit()` and `charge_time()` are called by the packet loop;
    `quarantine()` from there or from the control thread (a worker found dead).
    """

    def __init__(
        self,
        tier: str = "trusted",
        failure: str = "open",
        budget: Budget | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe_only: bool = False,
    ) -> None:
        self.tier = tier
        self.failure = failure
        # Its manifest says it only reads frames: a chain of such modules gets copies.
        self.observe_only = observe_only
        self.fail_closed = failure == "closed"
        self.budget = budget or Budget()
        self.state = RUNNING
        self.reason = ""
        self.confined: dict[str, object] = {}  # what confines an isolated module's process
        self.unprocessed = 0  # frames that went by without the module (failed, over rate, ...)
        self.over_rate = 0  # ... of them because they came faster than its frame rate
        self._errors = error_bucket(self.budget, clock)
        # An isolated module's frames are admitted a batch at a time; a trusted one's a
        # frame at a time, and only a module that declares a rate pays for it.
        self._frames = frame_bucket(self.budget, clock)
        self._time = TimeAccount(self.budget.time_per_frame)
        self._lock = threading.Lock()
        self.on_quarantine: Callable[[str], None] | None = None  # told the reason, once

    @property
    def quarantined(self) -> bool:
        return self.state == QUARANTINED

    @property
    def rated(self) -> bool:
        """True when the module has a frame rate limit (`frames_per_second`)."""
        return self._frames is not None

    def error(self) -> str:
        """Charge one frame the module failed on; return why it is to be quarantined
        when that was one more than its error budget allows, else ""."""
        if self._errors.take():
            return ""
        rate = self.budget.errors_per_second
        return f"over its error budget: failed on more than {rate:g} frames a second"

    def admit(self, frames: int) -> int:
        """Return how many of `frames` the module may have now (its frame rate); the
        rest are counted as over rate."""
        allowed = admit(self._frames, frames)
        self.over_rate += frames - allowed
        return allowed

    def charge_time(self, frames: int, cpu: float) -> str:
        """Record that the module took `cpu` seconds for `frames`; return why it is over
        its time budget, or "" while it is not."""
        if self._time.charge(frames, cpu):
            return ""
        budget = self.budget.time_per_frame
        return (
            f"over its time budget: {cpu * 1e3:.1f} ms of CPU for {frames} frame(s), "
            f"{budget * 1e3:g} ms a frame allowed"
        )

    def quarantine(self, reason: str) -> bool:
        """Mark the module quarantined for `reason`; return False when it already was."""
        with self._lock:
            if self.state == QUARANTINED:
                return False
            self.state, self.reason = QUARANTINED, reason
        if self.on_quarantine is not None:
            self.on_quarantine(reason)
        return True

    def to_json(self) -> dict[str, object]:
        """Return what the module's entry in the session's stats shows of its guard."""
        out: dict[str, object] = {"tier": self.tier, "state": self.state, "failure": self.failure}
        if self.reason:
            out["reason"] = self.reason
        out["unprocessed"] = self.unprocessed
        if self._frames is not None:
            out["over_rate"] = self.over_rate
        if self.confined:
            out["confined"] = self.confined
        return out


class Quarantined(ServiceModule):
    """What stands in a chain for a quarantined module: every frame gets its failure
    policy. `original` is the module, kept so that the session's end releases it."""

    def __init__(self, original: ServiceModule, guard: Guard) -> None:
        self.original = original
        self.guard = guard
        self.ctx = getattr(original, "ctx", None)  # its metrics still show in the stats
        self.params = getattr(original, "params", {})
        self._verdict = Verdict.DROP if guard.fail_closed else Verdict.FORWARD

    def process(self, frame: memoryview) -> Verdict:
        self.guard.unprocessed += 1
        return self._verdict

    def stats(self) -> dict[str, int | float | str]:
        """Return the module's last stats (an isolated one's, from before it stopped)."""
        last = getattr(self.original, "last_stats", None)
        return last if last is not None else self.original.stats()


def quarantine_cause(reason: str) -> str:
    """Return the short cause a quarantine's `reason` is counted under ("other" when
    it says none of the known ones)."""
    for start, cause in _CAUSES:
        if reason.startswith(start):
            return cause
    return "other"
