"""Logging with a rate limit: a module that logs on every frame cannot flood the node's log.

Each message (by its format string, so "%d packets" is one message whatever the
number) has its own token bucket; what the bucket refuses is counted, and the next
line of that message that gets through says how many were left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nodes.blocks.bucket import TokenBucket
from nodes.blocks.cache import Cache

RATE = 1.0  # lines per second of one message, on average
BURST = 10  # lines of one message at once
MAX_MESSAGES = 256  # distinct messages tracked; the least recent is forgotten


class RateLimitedLog:
    """A logger's debug/info/warning/error/exception, each message at most `rate` lines a
    second after a burst of `burst`. `suppressed` counts the lines left out in all."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Callable[[], float],
        rate: float = RATE,
        burst: float = BURST,
    ) -> None:
        self.logger, self.clock, self.rate, self.burst = logger, clock, rate, burst
        TokenBucket(rate, burst, clock)  # refuse a bad rate or burst now, not on first use
        self._buckets = Cache(clock, MAX_MESSAGES)
        self._left_out: dict[str, int] = {}
        self.suppressed = 0

    def _log(self, level: int, msg: str, args: tuple, exc_info: bool = False) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        key = str(msg)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.clock)
            self._buckets.put(key, bucket)
        if not bucket.take():  # type: ignore[attr-defined]
            self.suppressed += 1
            if len(self._left_out) < MAX_MESSAGES or key in self._left_out:
                self._left_out[key] = self._left_out.get(key, 0) + 1
            return False
        left_out = self._left_out.pop(key, 0)
        if left_out:
            msg = f"{msg} ({left_out} more like this left out)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def debug(self, msg: str, *args: object) -> bool:
        """Log at DEBUG; return True when the line was written."""
        return self._log(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> bool:
        """Log at INFO; return True when the line was written."""
        return self._log(logging.INFO, msg, args)

    def warning(self, msg: str, *args: object) -> bool:
        """Log at WARNING; return True when the line was written."""
        return self._log(logging.WARNING, msg, args)

    def error(self, msg: str, *args: object) -> bool:
        """Log at ERROR; return True when the line was written."""
        return self._log(logging.ERROR, msg, args)

    def exception(self, msg: str, *args: object) -> bool:
        """Log at ERROR with the exception being handled; return True when written."""
        return self._log(logging.ERROR, msg, args, exc_info=True)
