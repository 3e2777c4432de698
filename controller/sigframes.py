"""Signaling datagrams in Ethernet frames: reading what a switch punted, and building the
frame that answers it. Pure: bytes in, bytes out.

A request reaches the controller as the whole frame the requester sent toward the
flow's far endpoint. Its answer goes back out of the port the request came in on,
addressed to the requester: Ethernet, IP addresses and UDP ports swapped, so it comes
from the signaling port of the address the requester sent to.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from signaling.wire import SIGNALING_PORT

ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
IPV6 = struct.Struct("!IHBB16s16s")
UDP = struct.Struct("!HHHH")
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
PROTO_UDP = 17
IPV4_DONT_FRAGMENT = 0x4000
IPV4_FRAGMENT = 0x3FFF  # more-fragments flag and fragment offset
TTL = 64


@dataclass(frozen=True)
class Datagram:
    """A UDP datagram as a switch punted it: its frame's addresses and its payload."""

    eth_src: bytes
    eth_dst: bytes
    version: int  # 4 or 6
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


def parse_datagram(frame: bytes) -> Datagram | None:
    """Return the UDP datagram to the signaling port that `frame` carries, or None when
    it carries none: another protocol or port, a fragment, IPv6 extension headers, a
    VLAN tag, or lengths that do not add up."""
    if len(frame) < ETH.size:
        return None
    eth_dst, eth_src, eth_type = ETH.unpack_from(frame)
    ip = frame[ETH.size :]
    if eth_type == ETH_IPV4:
        found = _ipv4(ip)
    elif eth_type == ETH_IPV6:
        found = _ipv6(ip)
    else:
        return None
    if found is None:
        return None
    version, src, dst, udp = found
    if len(udp) < UDP.size:
        return None
    sport, dport, length, _ = UDP.unpack_from(udp)
    if dport != SIGNALING_PORT or not UDP.size <= length <= len(udp):
        return None
    return Datagram(eth_src, eth_dst, version, src, dst, sport, dport, udp[UDP.size : length])


def _ipv4(ip: bytes) -> tuple[int, str, str, bytes] | None:
    if len(ip) < IPV4.size:
        return None
    ver_ihl, _, total, _, frag, _, proto, _, src, dst = IPV4.unpack_from(ip)
    header = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or header < IPV4.size or not header <= total <= len(ip):
        return None
    if proto != PROTO_UDP or frag & IPV4_FRAGMENT:
        return None
    return 4, _text(src), _text(dst), ip[header:total]


def _ipv6(ip: bytes) -> tuple[int, str, str, bytes] | None:
    if len(ip) < IPV6.size:
        return None
    first, length, next_header, _, src, dst = IPV6.unpack_from(ip)
    if first >> 28 != 6 or next_header != PROTO_UDP or IPV6.size + length > len(ip):
        return None
    return 6, _text(src), _text(dst), ip[IPV6.size : IPV6.size + length]


def _text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def checksum(data: bytes) -> int:
    """Return the Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def answer_frame(request: Datagram, payload: bytes) -> bytes:
    """Return the frame that carries `payload` back to the sender of `request`: from the
    signaling port of the address it was sent to, to the address and port it came from."""
    src = ipaddress.ip_address(request.dst).packed
    dst = ipaddress.ip_address(request.src).packed
    length = UDP.size + len(payload)
    if request.version == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, length)
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, PROTO_UDP)
    udp = UDP.pack(SIGNALING_PORT, request.sport, length, 0) + payload
    # A computed zero is sent as all ones: zero would say "no checksum" (not allowed in IPv6).
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    if request.version == 4:
        fields = [0x45, 0, IPV4.size + length, 0, IPV4_DONT_FRAGMENT, TTL, PROTO_UDP, 0, src, dst]
        fields[7] = checksum(IPV4.pack(*fields))
        ip, eth_type = IPV4.pack(*fields), ETH_IPV4
    else:
        ip, eth_type = IPV6.pack(6 << 28, length, PROTO_UDP, TTL, src, dst), ETH_IPV6
    return ETH.pack(request.eth_src, request.eth_dst, eth_type) + ip + udp
