"""A token bucket: lets through `rate` units a second on average, `burst` at once."""

from __future__ import annotations

import math
from collections.abc import Callable


class TokenBucket:
    """Starts full. `take(n)` spends n tokens when there are that many and says whether it
    did; tokens come back at `rate` a second up to `burst`. Time comes from `clock`."""

    __slots__ = ("rate", "burst", "tokens", "_stamp", "_clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if not (isinstance(burst, int | float) and math.isfinite(burst) and burst > 0):
            raise ValueError(f"burst must be a positive number, got {burst!r}")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self._stamp = now

    def take(self, amount: float = 1.0) -> bool:
        """Spend `amount` tokens and return True, or spend nothing and return False."""
        self._refill()
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def available(self) -> float:
        """Return how many tokens there are now."""
        self._refill()
        return self.tokens
