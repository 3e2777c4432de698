"""A frame as a module sees it: a view over its bytes, headers parsed on first use.

    pkt = Frame(frame)                  # no copy, nothing parsed yet
    if pkt.udp and pkt.udp.dport == 53:
        pkt.ipv4.dst = "10.0.0.53"      # IPv4 header and UDP checksums follow
        pkt.udp.dport = 5353

Each of `eth`, `vlan`, `ipv4`, `ipv6`, `ip`, `tcp`, `udp` and `icmp` is parsed the
first time it is read and is None when the frame does not carry it (or carries it
cut short). Setters write into the frame in place and update every checksum the
field is part of, incrementally (RFC 1624): the IPv4 header checksum, and the
TCP, UDP or ICMPv6 checksum through the pseudo-header. A UDP checksum of 0 over
IPv4 means "none" and stays 0; over IPv6 it is mandatory and is computed whole.
A module that writes bytes itself calls `fix_checksums()` afterwards.

Lengths come from the headers, not from the frame: Ethernet pads short frames.
A later IP fragment carries no transport header, so `tcp`/`udp`/`icmp` are None.
"""

from __future__ import annotations

import struct

from nodes.blocks.checksum import ones_sum, update
from nodes.blocks.headers import ICMP, TCP, UDP, Ethernet, IPv4, IPv6, L4Header, Vlan

ETH_LEN = 14
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
_IPV6_OPTIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT, _IPV6_AH, _IPV6_NONE = 44, 51, 59
_MAX_IPV6_EXTENSIONS = 8
_UNPARSED = object()

FlowKey = tuple[int, bytes, bytes, int, int]  # proto, source, destination, ports
_Sum = tuple[int, bool, bool]  # a checksum's offset, whether 0 means none, whether UDP


class Frame:
    """A view over one frame's bytes (a memoryview, bytearray or bytes).

    `modified` turns True when a setter wrote to the frame, so a module can
    return `Verdict.MODIFIED` when it did. A frame over read-only bytes can be
    read; its setters raise TypeError.
    """

    __slots__ = ("buf", "modified", "_l2", "_l3", "_l4", "_vlans")

    def __init__(self, buf: memoryview | bytearray | bytes) -> None:
        self.buf = buf if isinstance(buf, memoryview) else memoryview(buf)
        self.modified = False
        self._l2: object = _UNPARSED  # (ethertype, L3 offset) once parsed
        self._l3: object = _UNPARSED  # IPv4 | IPv6 | None
        self._l4: object = _UNPARSED  # TCP | UDP | ICMP | None
        self._vlans: tuple[Vlan, ...] = ()

    def __len__(self) -> int:
        return len(self.buf)

    # --- layer 2 ----------------------------------------------------------------
    def _parse_l2(self) -> tuple[int, int] | None:
        if self._l2 is _UNPARSED:
            self._l2 = None
            buf = self.buf
            if len(buf) >= ETH_LEN:
                kind, offset, vlans = (buf[12] << 8) | buf[13], ETH_LEN, []
                while kind in VLAN_TPIDS and len(buf) >= offset + 4:
                    vlans.append(Vlan(self, offset - 2))
                    kind, offset = (buf[offset + 2] << 8) | buf[offset + 3], offset + 4
                if kind not in VLAN_TPIDS:
                    self._l2, self._vlans = (kind, offset), tuple(vlans)
        return self._l2  # type: ignore[return-value]

    @property
    def eth(self) -> Ethernet | None:
        """Return the Ethernet header, or None for a frame shorter than one."""
        return Ethernet(self) if len(self.buf) >= ETH_LEN else None

    @property
    def vlans(self) -> tuple[Vlan, ...]:
        """Return the frame's own 802.1Q/802.1ad tags, outermost first (the session's tag
        was taken off before the module got the frame)."""
        self._parse_l2()
        return self._vlans

    @property
    def vlan(self) -> Vlan | None:
        """Return the outermost VLAN tag, or None."""
        vlans = self.vlans
        return vlans[0] if vlans else None

    @property
    def ethertype(self) -> int | None:
        """Return the type of what follows the Ethernet header and its tags, or None."""
        l2 = self._parse_l2()
        return l2[0] if l2 else None

    # --- layer 3 ----------------------------------------------------------------
    def _parse_l3(self) -> IPv4 | IPv6 | None:
        if self._l3 is _UNPARSED:
            self._l3 = None
            l2 = self._parse_l2()
            if l2 is not None:
                kind, offset = l2
                if kind == ETH_IPV4:
                    self._l3 = _ipv4(self, offset)
                elif kind == ETH_IPV6:
                    self._l3 = _ipv6(self, offset)
        return self._l3  # type: ignore[return-value]

    @property
    def ipv4(self) -> IPv4 | None:
        """Return the IPv4 header, or None."""
        l3 = self._parse_l3()
        return l3 if isinstance(l3, IPv4) else None

    @property
    def ipv6(self) -> IPv6 | None:
        """Return the IPv6 header, or None."""
        l3 = self._parse_l3()
        return l3 if isinstance(l3, IPv6) else None

    @property
    def ip(self) -> IPv4 | IPv6 | None:
        """Return the IPv4 or IPv6 header, whichever the frame carries, or None."""
        return self._parse_l3()

    # --- layer 4 ----------------------------------------------------------------
    def _parse_l4(self) -> L4Header | None:
        if self._l4 is _UNPARSED:
            self._l4 = None
            l3 = self._parse_l3()
            if l3 is not None and l3.l4_offset is not None:
                self._l4 = _l4(self, l3)
        return self._l4  # type: ignore[return-value]

    @property
    def tcp(self) -> TCP | None:
        """Return the TCP header, or None."""
        l4 = self._parse_l4()
        return l4 if isinstance(l4, TCP) else None

    @property
    def udp(self) -> UDP | None:
        """Return the UDP header, or None."""
        l4 = self._parse_l4()
        return l4 if isinstance(l4, UDP) else None

    @property
    def icmp(self) -> ICMP | None:
        """Return the ICMP (over IPv4) or ICMPv6 (over IPv6) header, or None."""
        l4 = self._parse_l4()
        return l4 if isinstance(l4, ICMP) else None

    @property
    def l4(self) -> L4Header | None:
        """Return the TCP, UDP or ICMP header, whichever the frame carries, or None."""
        return self._parse_l4()

    def flow_key(self, bidirectional: bool = False) -> FlowKey | None:
        """Return (protocol, source, destination, source port, destination port), or None
        for a frame that is not IP.

        Addresses are their packed bytes; ports are 0 for protocols without them and
        for later fragments. With `bidirectional`, both directions of a conversation
        give the same key (the lower endpoint first).
        """
        ip = self._parse_l3()
        if ip is None:
            return None
        l4 = self._parse_l4()
        sport, dport = (l4.sport, l4.dport) if isinstance(l4, TCP | UDP) else (0, 0)
        src, dst = ip.src_bytes, ip.dst_bytes
        if bidirectional and (dst, dport) < (src, sport):
            src, dst, sport, dport = dst, src, dport, sport
        return (ip.proto, src, dst, sport, dport)

    # --- writing ----------------------------------------------------------------
    def _write(self, offset: int, value: bytes) -> bytes:
        """Write `value` at `offset`; return the bytes it replaced."""
        end = offset + len(value)
        old = bytes(self.buf[offset:end])
        self.buf[offset:end] = value
        self.modified = True
        return old

    def _rewrite(self, start: int, offset: int, value: bytes, sums: tuple[_Sum, ...]) -> None:
        """Write `value` at `offset`, then update each checksum field in `sums` for the
        change of the 16-bit words around it, counted from `start`."""
        lo = offset - ((offset - start) & 1)
        hi = offset + len(value)
        hi += (hi - start) & 1
        old = bytes(self.buf[lo:hi])
        self._write(offset, value)
        new = bytes(self.buf[lo:hi])
        for at, zero_is_none, udp in sums:
            csum = (self.buf[at] << 8) | self.buf[at + 1]
            if zero_is_none and csum == 0:
                continue  # a UDP datagram over IPv4 without a checksum
            csum = update(csum, old, new)
            if udp and csum == 0:
                csum = 0xFFFF  # UDP sends a computed 0 as all ones (RFC 768, RFC 8200)
            self.buf[at : at + 2] = csum.to_bytes(2, "big")

    def _address_changed(self, offset: int, value: bytes) -> None:
        """Write an IP address (part of the IP header) and fix the checksums that cover it."""
        ip = self._parse_l3()
        assert ip is not None
        sums: list[_Sum] = [] if isinstance(ip, IPv6) else [(ip.offset + 10, False, False)]
        l4 = self._parse_l4()
        if l4 is not None and l4.pseudo_header:
            if isinstance(l4, UDP) and isinstance(ip, IPv6) and l4.checksum == 0:
                self._write(offset, value)  # no valid checksum to update: compute one
                l4.fix_checksum()
                return
            sums.append((l4.offset + l4.checksum_at, l4.zero_is_none, isinstance(l4, UDP)))
        self._rewrite(ip.offset, offset, value, tuple(sums))

    def fix_checksums(self) -> None:
        """Recompute the IPv4 header checksum and the transport checksum from scratch.

        For a module that wrote bytes itself. The transport checksum is left alone
        when the frame holds only part of the datagram (a fragment or a cut frame).
        """
        ip = self._parse_l3()
        if isinstance(ip, IPv4):
            ip.fix_checksum()
        l4 = self._parse_l4()
        if l4 is not None:
            l4.fix_checksum()

    def pseudo_sum(self, length: int, proto: int) -> int:
        """Return the one's complement sum of the IP pseudo-header for a transport segment."""
        ip = self._parse_l3()
        assert ip is not None
        if isinstance(ip, IPv4):
            extra = struct.pack("!BBH", 0, proto, length)
        else:
            extra = struct.pack("!IxxxB", length, proto)
        return ones_sum(ip.src_bytes + ip.dst_bytes + extra)


def _ipv4(frame: Frame, offset: int) -> IPv4 | None:
    buf = frame.buf
    if len(buf) < offset + 20 or buf[offset] >> 4 != 4:
        return None
    header = (buf[offset] & 0x0F) * 4
    total = (buf[offset + 2] << 8) | buf[offset + 3]
    if header < 20 or total < header or len(buf) < offset + header:
        return None
    later = ((buf[offset + 6] & 0x1F) << 8) | buf[offset + 7]  # the fragment offset
    l4 = offset + header if later == 0 else None
    fragment = bool(later) or bool(buf[offset + 6] & 0x20)  # or more fragments follow
    return IPv4(frame, offset, buf[offset + 9], l4, total - header, fragment)


def _ipv6(frame: Frame, offset: int) -> IPv6 | None:
    buf = frame.buf
    if len(buf) < offset + 40 or buf[offset] >> 4 != 6:
        return None
    proto, at = buf[offset + 6], offset + 40
    remaining = (buf[offset + 4] << 8) | buf[offset + 5]
    l4: int | None = at
    fragment = False
    for _ in range(_MAX_IPV6_EXTENSIONS):
        if proto in _IPV6_OPTIONS or proto == _IPV6_AH:
            if len(buf) < at + 2:
                return None
            size = (buf[at + 1] + 2) * 4 if proto == _IPV6_AH else (buf[at + 1] + 1) * 8
        elif proto == _IPV6_FRAGMENT:
            if len(buf) < at + 8:
                return None
            size, fragment = 8, True
            if ((buf[at + 2] << 8) | buf[at + 3]) >> 3:
                l4 = None  # a later fragment: its transport header is in the first
        else:
            break
        proto, at, remaining = buf[at], at + size, remaining - size
    else:
        return None  # more extension headers than any real datagram carries
    if proto == _IPV6_NONE or remaining < 0:
        l4 = None
    return IPv6(frame, offset, proto, at if l4 is not None else None, remaining, fragment)


def _l4(frame: Frame, ip: IPv4 | IPv6) -> L4Header | None:
    buf, offset, proto = frame.buf, ip.l4_offset, ip.proto
    assert offset is not None
    room = len(buf) - offset
    if proto == PROTO_TCP and room >= 20 and (buf[offset + 12] >> 4) * 4 >= 20:
        return TCP(frame, offset, ip.l4_length)
    if proto == PROTO_UDP and room >= 8:
        return UDP(frame, offset, ip.l4_length, zero_is_none=isinstance(ip, IPv4))
    if room >= 4 and (
        (proto == PROTO_ICMP and isinstance(ip, IPv4))
        or (proto == PROTO_ICMPV6 and isinstance(ip, IPv6))
    ):
        return ICMP(frame, offset, ip.l4_length, v6=proto == PROTO_ICMPV6)
    return None


__all__ = ["ETH_IPV4", "ETH_IPV6", "FlowKey", "Frame"]
