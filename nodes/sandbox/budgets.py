"""What a module may spend, as its manifest declares it, and the arithmetic of enforcing it.

    [budget]
    time_per_frame = 0.001     # CPU seconds a frame may take, on average
    frames_per_second = 0      # frames handed to the module a second (0: no limit)
    memory_mib = 64            # the module's process, interpreter included
    cpu_cores = 0.5            # share of one CPU the module's process may use
    errors_per_second = 10     # frames it may fail on a second before it is quarantined

Every key may be left out (the default above). This file is pure: the agent's
guard (`nodes/sandbox/guard.py`) and the worker's proxy (`nodes/sandbox/proxy.py`)
apply it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nodes.blocks.bucket import TokenBucket

HANG_GRACE = 0.25  # seconds a worker may take beyond its budget before it is called hung
TIME_CREDIT = 0.1  # CPU seconds a module may run ahead of its budget (a GC pause, a cold start)
MIB = 1 << 20


@dataclass(frozen=True)
class Budget:
    """A module's budgets; see the module docstring for each field's meaning."""

    time_per_frame: float = 0.001
    frames_per_second: int = 0
    memory_mib: int = 64
    cpu_cores: float = 0.5
    errors_per_second: float = 10.0

    def deadline(self, frames: int) -> float:
        """Return the wall-clock seconds the agent waits for an answer about `frames`
        frames (0: a timer tick or a stats call) before it calls the worker hung."""
        return HANG_GRACE + frames * self.time_per_frame / self.cpu_cores

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    def to_json(self) -> dict[str, object]:
        return {
            "time_per_frame": self.time_per_frame,
            "frames_per_second": self.frames_per_second,
            "memory_mib": self.memory_mib,
            "cpu_cores": self.cpu_cores,
            "errors_per_second": self.errors_per_second,
        }


# key: (types taken, low, high); a float key takes an int too, never a bool
_FIELDS: dict[str, tuple[tuple[type, ...], float, float]] = {
    "time_per_frame": ((int, float), 1e-6, 1.0),
    "frames_per_second": ((int,), 0, 100_000_000),
    "memory_mib": ((int,), 32, 1 << 20),
    "cpu_cores": ((int, float), 0.01, 256.0),
    "errors_per_second": ((int, float), 0.01, 1e6),
}


def parse_budget(where: str, table: object) -> Budget:
    """Return the Budget a manifest's `[budget]` table declares; raise ValueError saying
    which key is wrong (unknown, of the wrong type or out of range)."""
    if table is None:
        return Budget()
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: budget must be a table [budget]")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"{where}: budget has unknown key(s) {unknown}; it takes {sorted(_FIELDS)}"
        )
    values: dict[str, object] = {}
    for key, value in table.items():
        kinds, low, high = _FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ValueError(f"{where}: budget.{key} must be a number, got {value!r}")
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{where}: budget.{key} must be {low} to {high}, got {value!r}")
        values[key] = float(value) if float in kinds else value
    return Budget(**values)  # type: ignore[arg-type]


class TimeAccount:
    """A module's CPU time against its budget: each frame earns `time_per_frame`, each
    batch spends what the module used. It starts with TIME_CREDIT in hand and holds at
    most that, so a pause now and then is absorbed while a module that is slower than
    its budget on average runs out."""

    __slots__ = ("per_frame", "balance")

    def __init__(self, per_frame: float, credit: float = TIME_CREDIT) -> None:
        self.per_frame = per_frame
        self.balance = credit

    def charge(self, frames: int, seconds: float) -> bool:
        """Record a batch of `frames` that took `seconds` of CPU; return False once the
        module is overdrawn (it overran its budget)."""
        self.balance = min(TIME_CREDIT, self.balance + frames * self.per_frame) - seconds
        return self.balance >= 0


def frame_bucket(budget: Budget, clock: Callable[[], float]) -> TokenBucket | None:
    """Return the token bucket that admits frames to the module (a tenth of a second's
    worth at once), or None when it has no frame rate limit."""
    rate = budget.frames_per_second
    return TokenBucket(rate, max(1.0, rate / 10), clock) if rate else None


def error_bucket(budget: Budget, clock: Callable[[], float]) -> TokenBucket:
    """Return the token bucket that lets a module fail on `errors_per_second` frames a
    second (as many at once); when it is empty the module is quarantined."""
    rate = budget.errors_per_second
    return TokenBucket(rate, max(1.0, rate), clock)


def admit(bucket: TokenBucket | None, frames: int) -> int:
    """Return how many of `frames` the bucket lets through now (all, without a bucket),
    and spend their tokens."""
    if bucket is None:
        return frames
    allowed = min(frames, int(bucket.available() + 1e-9))  # 4.9999.. tokens are 5
    if allowed:
        bucket.take(allowed)
    return allowed
