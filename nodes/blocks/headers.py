"""Header views over a Frame's bytes: fields read on access, setters that keep checksums right.

A view holds its frame and its offset; it copies nothing. `Frame` makes them (see
`nodes/blocks/frame.py`); a module does not construct them itself.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from nodes.blocks.addresses import mac_text, packed_ip, packed_mac
from nodes.blocks.checksum import checksum

if TYPE_CHECKING:
    from nodes.blocks.frame import Frame


def _uint(value: object, bits: int, name: str) -> int:
    """Return `value` when it is an int that fits in `bits` unsigned bits; raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer 0..{(1 << bits) - 1}, got {value!r}")
    return value


class _Header:
    __slots__ = ("_f", "offset")

    def __init__(self, frame: Frame, offset: int) -> None:
        self._f = frame
        self.offset = offset  # where the header starts in the frame

    def _u8(self, at: int) -> int:
        return self._f.buf[self.offset + at]

    def _u16(self, at: int) -> int:
        buf, i = self._f.buf, self.offset + at
        return (buf[i] << 8) | buf[i + 1]

    def _u32(self, at: int) -> int:
        i = self.offset + at
        return int.from_bytes(self._f.buf[i : i + 4], "big")

    def _bytes(self, at: int, size: int) -> bytes:
        i = self.offset + at
        return bytes(self._f.buf[i : i + size])


class Ethernet(_Header):
    """The Ethernet header; `type` is what follows the tags (see Frame.vlans)."""

    __slots__ = ()

    def __init__(self, frame: Frame) -> None:
        super().__init__(frame, 0)

    @property
    def dst(self) -> str:
        return mac_text(self._bytes(0, 6))

    @dst.setter
    def dst(self, value: object) -> None:
        self._f._write(0, packed_mac(value))

    @property
    def src(self) -> str:
        return mac_text(self._bytes(6, 6))

    @src.setter
    def src(self, value: object) -> None:
        self._f._write(6, packed_mac(value))

    @property
    def type(self) -> int | None:
        """Return the type of what follows the tags; None when a tag is cut short."""
        return self._f.ethertype


class Vlan(_Header):
    """One 802.1Q/802.1ad tag; `offset` is that of its TPID."""

    __slots__ = ()

    @property
    def tpid(self) -> int:
        return self._u16(0)

    @property
    def vid(self) -> int:
        return self._u16(2) & 0x0FFF

    @vid.setter
    def vid(self, value: int) -> None:
        self._set_tci(_uint(value, 12, "vid"), 0x0FFF)

    @property
    def pcp(self) -> int:
        return self._u8(2) >> 5

    @pcp.setter
    def pcp(self, value: int) -> None:
        self._set_tci(_uint(value, 3, "pcp") << 13, 0xE000)

    @property
    def dei(self) -> bool:
        return bool(self._u8(2) & 0x10)

    def _set_tci(self, bits: int, mask: int) -> None:
        tci = (self._u16(2) & ~mask) | bits
        self._f._write(self.offset + 2, tci.to_bytes(2, "big"))


class _IP(_Header):
    __slots__ = ("proto", "l4_offset", "l4_length", "fragment")
    version = 0

    def __init__(
        self,
        frame: Frame,
        offset: int,
        proto: int,
        l4_offset: int | None,
        l4_length: int,
        fragment: bool = False,
    ) -> None:
        super().__init__(frame, offset)
        self.proto = proto  # the transport protocol (after any IPv6 extension headers)
        self.l4_offset = l4_offset  # None when the frame carries no transport header
        self.l4_length = l4_length  # the transport segment's length, from the IP header
        self.fragment = fragment  # part of a fragmented datagram

    _SRC = _DST = 0
    _SIZE = 4

    @property
    def src_bytes(self) -> bytes:
        return self._bytes(self._SRC, self._SIZE)

    @property
    def dst_bytes(self) -> bytes:
        return self._bytes(self._DST, self._SIZE)

    @property
    def src(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.src_bytes)

    @src.setter
    def src(self, value: object) -> None:
        self._f._address_changed(self.offset + self._SRC, packed_ip(value, self.version))

    @property
    def dst(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.dst_bytes)

    @dst.setter
    def dst(self, value: object) -> None:
        self._f._address_changed(self.offset + self._DST, packed_ip(value, self.version))


class IPv4(_IP):
    """The IPv4 header. Setting src, dst, ttl, dscp or ecn updates the header checksum;
    src and dst also the TCP or UDP checksum."""

    __slots__ = ()
    version = 4
    _SRC, _DST, _SIZE = 12, 16, 4

    @property
    def header_length(self) -> int:
        return (self._u8(0) & 0x0F) * 4

    @property
    def tos(self) -> int:
        return self._u8(1)

    @property
    def dscp(self) -> int:
        return self._u8(1) >> 2

    @dscp.setter
    def dscp(self, value: int) -> None:
        self._set_tos((_uint(value, 6, "dscp") << 2) | (self._u8(1) & 0x03))

    @property
    def ecn(self) -> int:
        return self._u8(1) & 0x03

    @ecn.setter
    def ecn(self, value: int) -> None:
        self._set_tos((self._u8(1) & 0xFC) | _uint(value, 2, "ecn"))

    def _set_tos(self, tos: int) -> None:
        self._set_byte(1, tos)

    def _set_byte(self, at: int, value: int) -> None:
        """Write one byte of the header and update the header checksum."""
        where = ((self.offset + 10, False, False),)
        self._f._rewrite(self.offset, self.offset + at, bytes([value]), where)

    @property
    def total_length(self) -> int:
        return self._u16(2)

    @property
    def ident(self) -> int:
        return self._u16(4)

    @property
    def dont_fragment(self) -> bool:
        return bool(self._u8(6) & 0x40)

    @property
    def more_fragments(self) -> bool:
        return bool(self._u8(6) & 0x20)

    @property
    def frag_offset(self) -> int:
        return self._u16(6) & 0x1FFF

    @property
    def ttl(self) -> int:
        return self._u8(8)

    @ttl.setter
    def ttl(self, value: int) -> None:
        self._set_byte(8, _uint(value, 8, "ttl"))

    @property
    def checksum(self) -> int:
        return self._u16(10)

    @property
    def checksum_ok(self) -> bool:
        """Return True when the header checksum is right."""
        start = self.offset
        return checksum(self._f.buf[start : start + self.header_length]) == 0

    def fix_checksum(self) -> None:
        """Compute the header checksum whole and write it."""
        start, buf = self.offset, self._f.buf
        buf[start + 10 : start + 12] = b"\0\0"
        csum = checksum(buf[start : start + self.header_length])
        self._f._write(start + 10, csum.to_bytes(2, "big"))


class IPv6(_IP):
    """The IPv6 header. There is no header checksum; setting src or dst updates the
    TCP, UDP or ICMPv6 checksum."""

    __slots__ = ()
    version = 6
    _SRC, _DST, _SIZE = 8, 24, 16

    @property
    def traffic_class(self) -> int:
        return ((self._u8(0) & 0x0F) << 4) | (self._u8(1) >> 4)

    @traffic_class.setter
    def traffic_class(self, value: int) -> None:
        value = _uint(value, 8, "traffic_class")
        word = (self._u16(0) & 0xF00F) | (value << 4)
        self._f._write(self.offset, word.to_bytes(2, "big"))

    @property
    def dscp(self) -> int:
        return self.traffic_class >> 2

    @dscp.setter
    def dscp(self, value: int) -> None:
        self.traffic_class = (_uint(value, 6, "dscp") << 2) | (self.traffic_class & 0x03)

    @property
    def ecn(self) -> int:
        return self.traffic_class & 0x03

    @ecn.setter
    def ecn(self, value: int) -> None:
        self.traffic_class = (self.traffic_class & 0xFC) | _uint(value, 2, "ecn")

    @property
    def flow_label(self) -> int:
        return self._u32(0) & 0xFFFFF

    @flow_label.setter
    def flow_label(self, value: int) -> None:
        word = (self._u32(0) & 0xFFF00000) | _uint(value, 20, "flow_label")
        self._f._write(self.offset, word.to_bytes(4, "big"))

    @property
    def payload_length(self) -> int:
        return self._u16(4)

    @property
    def next_header(self) -> int:
        """Return the header right after this one (`proto` is the transport's)."""
        return self._u8(6)

    @property
    def hop_limit(self) -> int:
        return self._u8(7)

    @hop_limit.setter
    def hop_limit(self, value: int) -> None:
        self._f._write(self.offset + 7, bytes([_uint(value, 8, "hop_limit")]))

    ttl = hop_limit  # one name for code that handles both versions


class L4Header(_Header):
    """A transport header whose checksum covers `length` bytes from `offset`."""

    __slots__ = ("length", "zero_is_none")
    checksum_at = 0
    pseudo_header = True
    proto = 0

    def __init__(self, frame: Frame, offset: int, length: int, zero_is_none: bool = False) -> None:
        super().__init__(frame, offset)
        self.length = length
        self.zero_is_none = zero_is_none  # UDP over IPv4: a checksum of 0 means none

    @property
    def checksum(self) -> int:
        return self._u16(self.checksum_at)

    def _complete(self) -> bool:
        """Return True when the whole segment is in the frame, so a checksum can be computed."""
        ip = self._f.ip
        return ip is not None and not ip.fragment and self.offset + self.length <= len(self._f.buf)

    def _segment_sum_start(self) -> int:
        return self._f.pseudo_sum(self.length, self.proto) if self.pseudo_header else 0

    @property
    def checksum_ok(self) -> bool | None:
        """Return whether the checksum is right; None when it cannot be told (none sent, or
        the frame holds only part of the segment)."""
        if self.zero_is_none and self.checksum == 0 or not self._complete():
            return None
        segment = self._f.buf[self.offset : self.offset + self.length]
        return checksum(segment, self._segment_sum_start()) == 0

    def fix_checksum(self) -> None:
        """Compute the checksum whole and write it (left alone when it cannot be computed,
        and left 0 for UDP over IPv4 sent without one)."""
        if not self._complete() or self.zero_is_none and self.checksum == 0:
            return
        at = self.offset + self.checksum_at
        self._f.buf[at : at + 2] = b"\0\0"
        segment = self._f.buf[self.offset : self.offset + self.length]
        csum = checksum(segment, self._segment_sum_start())
        if csum == 0 and isinstance(self, UDP):
            csum = 0xFFFF
        self._f._write(at, csum.to_bytes(2, "big"))

    def _set16(self, at: int, value: int) -> None:
        """Write a 16-bit field at `at` (from the header) and update the checksum."""
        data = value.to_bytes(2, "big")
        if isinstance(self, UDP) and not self.zero_is_none and self.checksum == 0:
            self._f._write(self.offset + at, data)  # IPv6 UDP must have one: compute it whole
            self.fix_checksum()
            return
        where = ((self.offset + self.checksum_at, self.zero_is_none, isinstance(self, UDP)),)
        self._f._rewrite(self.offset, self.offset + at, data, where)

    @property
    def payload(self) -> memoryview:
        """Return what follows the header, up to the segment's end (read-write, no copy)."""
        end = min(self.offset + self.length, len(self._f.buf))
        return self._f.buf[self.offset + self.header_length : end]

    header_length = 8


class _Ports(L4Header):
    __slots__ = ()

    @property
    def sport(self) -> int:
        return self._u16(0)

    @sport.setter
    def sport(self, value: int) -> None:
        self._set16(0, _uint(value, 16, "sport"))

    @property
    def dport(self) -> int:
        return self._u16(2)

    @dport.setter
    def dport(self, value: int) -> None:
        self._set16(2, _uint(value, 16, "dport"))


class TCP(_Ports):
    """The TCP header; setting sport or dport updates its checksum."""

    __slots__ = ()
    checksum_at = 16
    proto = 6

    @property
    def seq(self) -> int:
        return self._u32(4)

    @property
    def ack(self) -> int:
        return self._u32(8)

    @property
    def header_length(self) -> int:  # type: ignore[override]
        return (self._u8(12) >> 4) * 4

    @property
    def flags(self) -> int:
        """Return the flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...)."""
        return self._u16(12) & 0x01FF

    @property
    def window(self) -> int:
        return self._u16(14)


class UDP(_Ports):
    """The UDP header; setting sport or dport updates its checksum (none stays none)."""

    __slots__ = ()
    checksum_at = 6
    proto = 17

    @property
    def udp_length(self) -> int:
        """Return the length the UDP header gives (the IP header's is `length`)."""
        return self._u16(4)


class ICMP(L4Header):
    """ICMP over IPv4, or ICMPv6 (`v6`); setting a field updates the checksum."""

    __slots__ = ("v6",)
    checksum_at = 2

    def __init__(self, frame: Frame, offset: int, length: int, v6: bool) -> None:
        super().__init__(frame, offset, length)
        self.v6 = v6

    @property
    def pseudo_header(self) -> bool:  # type: ignore[override]
        return self.v6  # ICMPv6's checksum covers the pseudo-header, ICMP's does not

    @property
    def proto(self) -> int:  # type: ignore[override]
        return 58 if self.v6 else 1

    @property
    def type(self) -> int:
        return self._u8(0)

    @type.setter
    def type(self, value: int) -> None:
        self._set16(0, (_uint(value, 8, "type") << 8) | self.code)

    @property
    def code(self) -> int:
        return self._u8(1)

    @code.setter
    def code(self, value: int) -> None:
        self._set16(0, (self.type << 8) | _uint(value, 8, "code"))

    @property
    def id(self) -> int:
        """Return the identifier of an echo request or reply."""
        return self._u16(4)

    @property
    def seq(self) -> int:
        """Return the sequence number of an echo request or reply."""
        return self._u16(6)
