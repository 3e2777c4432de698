"""Freshness checks for a responder: a timestamp window and a bounded nonce cache.

A request is fresh when its timestamp is within `window` seconds of the responder's
clock and its (requester, nonce) has not been seen. A nonce is remembered until its
timestamp leaves the window, after which the timestamp check alone refuses a replay.
The cache holds at most `capacity` nonces: when full, the one with the oldest timestamp
is dropped and every timestamp up to it is refused from then on (a floor), so a
replay is refused even of a nonce the cache no longer holds.
"""

from __future__ import annotations

import heapq

from signaling.errors import ErrorCode, SignalingProtocolError, SignalingUsageError

DEFAULT_WINDOW = 30.0  # seconds either side of the responder's clock
DEFAULT_CAPACITY = 100_000


class ReplayGuard:
    """Refuses stale and replayed requests. Pure: the caller passes `now` (seconds
    since the Unix epoch, as time.time())."""

    def __init__(self, window: float = DEFAULT_WINDOW, capacity: int = DEFAULT_CAPACITY) -> None:
        if window <= 0 or capacity < 1:
            raise SignalingUsageError("window must be > 0 and capacity >= 1")
        self.window_ms = int(window * 1000)
        self.capacity = capacity
        self._seen: set[tuple[str, bytes]] = set()
        self._by_time: list[tuple[int, str, bytes]] = []  # heap of (timestamp, requester, nonce)
        self._floor = -1  # timestamps <= this are refused (nonces dropped for room)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_ms: int) -> None:
        while self._by_time and self._by_time[0][0] < now_ms - self.window_ms:
            _, requester, nonce = heapq.heappop(self._by_time)
            self._seen.discard((requester, nonce))

    def check(self, requester: str, nonce: bytes, timestamp_ms: int, now: float) -> None:
        """Remember the request's nonce if it is fresh; raise SignalingProtocolError
        with STALE_TIMESTAMP or REPLAY if it is not (and then remember nothing)."""
        now_ms = int(now * 1000)
        skew = timestamp_ms - now_ms
        if abs(skew) > self.window_ms:
            raise SignalingProtocolError(
                ErrorCode.STALE_TIMESTAMP,
                f"timestamp is {skew / 1000:+.3f} s from the responder's clock,"
                f" outside ±{self.window_ms / 1000:g} s",
            )
        if timestamp_ms <= self._floor:
            raise SignalingProtocolError(
                ErrorCode.STALE_TIMESTAMP, "timestamp is older than the nonce cache reaches"
            )
        self._expire(now_ms)
        key = (requester, nonce)
        if key in self._seen:
            raise SignalingProtocolError(ErrorCode.REPLAY, "this nonce was seen already")
        self._seen.add(key)
        heapq.heappush(self._by_time, (timestamp_ms, requester, nonce))
        while len(self._seen) > self.capacity:
            oldest, requester, nonce = heapq.heappop(self._by_time)
            self._seen.discard((requester, nonce))
            self._floor = max(self._floor, oldest)
