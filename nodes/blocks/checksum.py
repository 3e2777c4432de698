"""The Internet checksum (RFC 1071), computed whole or updated for a changed field (RFC 1624)."""

from __future__ import annotations

import sys

_SWAP = sys.byteorder == "little"  # native 16-bit words are read byte-swapped here


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Return the folded 16-bit one's complement sum of `data` (big-endian words) plus `start`.

    An odd last byte is padded with a zero byte, as the checksum of TCP, UDP and
    ICMP requires. The words are summed in native order, which RFC 1071 shows gives
    the same sum with its bytes swapped; that is undone at the end.
    """
    view = memoryview(data).cast("B")
    total = 0
    if len(view) % 2:
        total = view[-1] << 8
        view = view[:-1]
    native = sum(view.cast("H"))
    while native >> 16:
        native = (native & 0xFFFF) + (native >> 16)
    if _SWAP:
        native = ((native & 0xFF) << 8) | (native >> 8)
    total += native + start
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Return the Internet checksum of `data`, with `start` (a pseudo-header's sum) added."""
    return ~ones_sum(data, start) & 0xFFFF


def update(csum: int, old: bytes | memoryview, new: bytes | memoryview) -> int:
    """Return checksum `csum` after the 16-bit aligned words `old` became `new` (RFC 1624 eq. 3).

    HC' = ~(~HC + ~m + m'): unlike eq. 2 it never turns a correct checksum into
    0xFFFF where a full computation gives 0x0000.
    """
    total = ~csum & 0xFFFF
    for i in range(0, len(old), 2):
        total += (~((old[i] << 8) | old[i + 1]) & 0xFFFF) + ((new[i] << 8) | new[i + 1])
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
