"""New frames from a module: an outbox the agent empties, and builders for common answers.

`ctx.emit(frame)` copies the frame into the module's outbox; the dispatcher takes
what is there after each call into the module (a frame, a timer) and sends it to
the switch with the batch, whatever the module's verdict. The switch forwards it
as any frame that comes back from the agent (by its destination MAC), so a reply
to a frame's sender reaches the sender. The outbox holds plain bytes, so it can be
handed across a process boundary as it is.
"""

from __future__ import annotations

import struct

from nodes.blocks.addresses import ip_version, packed_ip, packed_mac
from nodes.blocks.checksum import checksum, ones_sum
from nodes.blocks.frame import ETH_IPV4, ETH_IPV6, Frame

MIN_FRAME = 14  # an Ethernet header
MAX_FRAME = 65535 + 14 + 8  # the largest frame the agent's link carries, with two tags
OUTBOX_LIMIT = 256  # frames a module may have waiting at once
DEFAULT_TTL = 64


class EmitError(ValueError):
    """A frame cannot be emitted: too short, too long, or the outbox is full."""


class Outbox:
    """Frames a module emitted and the agent has not yet taken."""

    __slots__ = ("frames", "limit")

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.frames: list[bytes] = []
        self.limit = limit

    def put(self, frame: bytes | bytearray | memoryview) -> None:
        """Keep a copy of `frame` to be sent; raise EmitError when it cannot be."""
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise EmitError(f"a frame is bytes, got {type(frame).__name__}")
        data = bytes(frame)
        if not MIN_FRAME <= len(data) <= MAX_FRAME:
            raise EmitError(f"a frame is {MIN_FRAME} to {MAX_FRAME} bytes, got {len(data)}")
        if len(self.frames) >= self.limit:
            raise EmitError(f"{self.limit} emitted frames are already waiting to be sent")
        self.frames.append(data)

    def take(self) -> list[bytes]:
        """Return the waiting frames, oldest first, and empty the outbox."""
        frames, self.frames = self.frames, []
        return frames

    def __len__(self) -> int:
        return len(self.frames)


def _vlan_tag(vid: int | None) -> bytes:
    if vid is None:
        return b""
    if isinstance(vid, bool) or not isinstance(vid, int) or not 0 <= vid <= 4095:
        raise ValueError(f"vlan must be 0..4095 or None, got {vid!r}")
    return struct.pack("!HH", 0x8100, vid)


def _udp(
    l2: bytes, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ttl: int
) -> bytes:
    """Return an IPv4 or IPv6 (by the address size) UDP frame after the L2 header `l2`
    (addresses and tags, without the ethertype), its checksums computed."""
    for name, port in (("sport", sport), ("dport", dport)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"{name} must be 0..65535, got {port!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255:
        raise ValueError(f"ttl must be 0..255, got {ttl!r}")
    payload = bytes(payload)
    length = 8 + len(payload)
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, ttl, 17, 0, src, dst)
        ip = ip[:10] + checksum(ip).to_bytes(2, "big") + ip[12:]
        pseudo = ones_sum(src + dst + struct.pack("!BBH", 0, 17, length))
        kind = ETH_IPV4
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, length, 17, ttl, src, dst)
        pseudo = ones_sum(src + dst + struct.pack("!IxxxB", length, 17))
        kind = ETH_IPV6
    if 14 + len(ip) + length > MAX_FRAME:
        raise ValueError(f"a payload of {len(payload)} bytes does not fit in a frame")
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(udp, pseudo) or 0xFFFF  # 0 would mean "no checksum"
    udp = udp[:6] + csum.to_bytes(2, "big") + udp[8:]
    return l2 + kind.to_bytes(2, "big") + ip + udp


def udp_frame(
    *,
    src_mac: object,
    dst_mac: object,
    src: object,
    dst: object,
    sport: int,
    dport: int,
    payload: bytes = b"",
    ttl: int = DEFAULT_TTL,
    vlan: int | None = None,
) -> bytes:
    """Return an Ethernet frame carrying a UDP datagram, over IPv4 or IPv6 as the addresses
    are, with an 802.1Q tag when `vlan` is given; raise ValueError for a bad field."""
    version = ip_version(src)
    if ip_version(dst) != version:
        raise ValueError(f"{src} and {dst} are not of one IP version")
    l2 = packed_mac(dst_mac) + packed_mac(src_mac) + _vlan_tag(vlan)
    return _udp(l2, packed_ip(src, version), packed_ip(dst, version), sport, dport, payload, ttl)


def udp_reply(frame: Frame, payload: bytes, ttl: int = DEFAULT_TTL) -> bytes:
    """Return a UDP datagram to `frame`'s sender, from the address and port it was sent to,
    with the frame's own VLAN tags; raise ValueError when `frame` is not UDP."""
    ip, udp = frame.ip, frame.udp
    if ip is None or udp is None:
        raise ValueError("only a UDP frame can be answered with udp_reply")
    buf = frame.buf
    l2 = bytes(buf[6:12]) + bytes(buf[0:6]) + bytes(buf[12 : ip.offset - 2])
    return _udp(l2, ip.dst_bytes, ip.src_bytes, udp.dport, udp.sport, payload, ttl)


def icmp_echo_reply(frame: Frame, ttl: int = DEFAULT_TTL) -> bytes:
    """Return the echo reply (ICMP or ICMPv6) to an echo request, as its destination would
    answer it; raise ValueError when `frame` is no echo request."""
    ip, icmp = frame.ip, frame.icmp
    if ip is None or icmp is None or icmp.type != (128 if icmp.v6 else 8) or icmp.code != 0:
        raise ValueError("only an echo request can be answered with icmp_echo_reply")
    if ip.fragment:
        raise ValueError("a fragmented echo request is not answered")
    end = icmp.offset + icmp.length
    if end > len(frame.buf):
        raise ValueError("the echo request is cut short")
    reply = Frame(bytearray(frame.buf[:end]))
    eth, rip, ricmp = reply.eth, reply.ip, reply.icmp
    assert eth is not None and rip is not None and ricmp is not None
    eth.src, eth.dst = eth.dst, eth.src
    rip.src, rip.dst = ip.dst_bytes, ip.src_bytes
    rip.ttl = ttl
    ricmp.type = 129 if icmp.v6 else 0
    return bytes(reply.buf)
