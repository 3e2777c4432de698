"""Timers: a module asks for a callback later or every so often; the loop that runs the
module's frames runs its timers too, between batches, so module code is never entered
from another thread.

A module's `TimerSet` keeps its timers until its chain is installed; then the
dispatcher binds the set to the node's `Scheduler`, which arms them (the delay counts
from then). Removing the chain cancels them. An isolated module process would bind its
modules' sets to a scheduler of its own, run between the batches it is handed.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable

MIN_PERIOD = 0.01  # seconds: a shorter period would spin the packet loop
MAX_TIMERS = 1024  # live timers per module instance


class Timer:
    """A callback due `delay` seconds after it is armed, then every `period` (0: once)."""

    __slots__ = ("fn", "delay", "period", "due", "cancelled", "fired", "owner")

    def __init__(self, fn: Callable[[], object], delay: float, period: float) -> None:
        self.fn, self.delay, self.period = fn, delay, period
        self.due: float | None = None  # set when armed
        self.cancelled = False
        self.fired = 0  # times it ran
        self.owner: object = None  # what the scheduler's runner was given on binding

    @property
    def active(self) -> bool:
        """Return True while the timer may still run."""
        return not self.cancelled and (self.period > 0 or self.fired == 0)

    def cancel(self) -> None:
        """Stop the timer; it does not run again (nor at all, if it has not yet)."""
        self.cancelled = True


class Scheduler:
    """The timers armed on one loop, in order of when they are due."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0  # breaks ties in arming order
        self._lock = threading.Lock()  # arming comes from the control thread

    def arm(self, timer: Timer) -> None:
        """Make `timer` due `timer.delay` seconds from now."""
        timer.due = self.clock() + timer.delay
        self._push(timer)

    def _push(self, timer: Timer) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (timer.due, self._seq, timer))  # type: ignore[arg-type]
            if self._seq % 1024 == 0:
                self._compact()

    def _compact(self) -> None:
        live = [entry for entry in self._heap if not entry[2].cancelled]
        if len(live) < len(self._heap) // 2:
            heapq.heapify(live)
            self._heap = live

    def next_due(self) -> float | None:
        """Return when the earliest live timer is due, or None when there is none."""
        while self._heap and self._heap[0][2].cancelled:
            with self._lock:
                if self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
        heap = self._heap
        return heap[0][0] if heap else None

    def due(self, now: float | None = None) -> bool:
        """Return True when a live timer is due by `now` (default: the clock's time)."""
        first = self.next_due()
        return first is not None and first <= (self.clock() if now is None else now)

    def run_due(self, now: float | None = None) -> list[tuple[Timer, Exception | None]]:
        """Run every timer due by `now`, each once, earliest first; return each with the
        exception its callback raised, or None.

        A periodic timer is armed again a period after it was due (after `now`, when it
        fell more than a period behind: missed runs are skipped, not run in a burst).
        A timer armed by a callback runs at the next call at the earliest.
        """
        now = self.clock() if now is None else now
        due: list[Timer] = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                timer = heapq.heappop(self._heap)[2]
                if not timer.cancelled:
                    due.append(timer)
        ran: list[tuple[Timer, Exception | None]] = []
        for timer in due:
            if timer.cancelled:  # by a callback that ran before it
                continue
            error: Exception | None = None
            try:
                timer.fn()
            except Exception as exc:  # reported to the caller, which charges the module
                error = exc
            timer.fired += 1
            ran.append((timer, error))
            if timer.period and not timer.cancelled:
                following = timer.due + timer.period  # type: ignore[operator]
                timer.due = following if following > now else now + timer.period
                self._push(timer)
        return ran

    def __len__(self) -> int:
        """Return how many timers are armed (cancelled ones may still be counted)."""
        return len(self._heap)


def _seconds(value: object, name: str, least: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be at least {least} s, got {value}")
    return float(value)


class TimerSet:
    """One module instance's timers (what `ctx.every` and `ctx.after` make)."""

    def __init__(self) -> None:
        self._timers: list[Timer] = []
        self._scheduler: Scheduler | None = None
        self._owner: object = None
        self._closed = False

    def every(self, seconds: float, fn: Callable[[], object]) -> Timer:
        """Return a timer that calls `fn()` every `seconds` (at least MIN_PERIOD), the first
        time `seconds` after the module's chain is installed (or now, if it is)."""
        period = _seconds(seconds, "period", MIN_PERIOD)
        return self._add(Timer(fn, period, period))

    def after(self, seconds: float, fn: Callable[[], object]) -> Timer:
        """Return a timer that calls `fn()` once, `seconds` after the module's chain is
        installed (or from now, if it is)."""
        return self._add(Timer(fn, _seconds(seconds, "delay", 0.0), 0.0))

    def _add(self, timer: Timer) -> Timer:
        if not callable(timer.fn):
            raise ValueError(f"a timer needs a callable, got {timer.fn!r}")
        self._timers = [t for t in self._timers if t.active]
        if len(self._timers) >= MAX_TIMERS:
            raise ValueError(f"a module may have at most {MAX_TIMERS} timers")
        self._timers.append(timer)
        scheduler = self._scheduler
        if scheduler is not None:
            timer.owner = self._owner
            scheduler.arm(timer)
        if self._closed:  # cancel_all ran meanwhile (from the control thread): it must not run
            timer.cancel()
        return timer

    def bind(self, scheduler: Scheduler, owner: object) -> None:
        """Arm every live timer on `scheduler`; `owner` is handed back with each that runs."""
        self._scheduler, self._owner = scheduler, owner
        for timer in self._timers:
            if timer.active:
                timer.owner = owner
                scheduler.arm(timer)

    def cancel_all(self) -> None:
        """Cancel every timer, now and for good: a timer added later never runs."""
        self._closed = True
        self._scheduler = None
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def __len__(self) -> int:
        """Return how many timers may still run."""
        return sum(1 for t in self._timers if t.active)
