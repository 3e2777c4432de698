"""What link and host discovery reads from frames and writes into them, as pure bytes.

A link probe is an LLDP frame: chassis id "dpid:<16 hex digits>" (locally assigned)
and port id the OpenFlow port number (port component), as Ryu's own discovery
writes them, plus an organisation-specific TLV that only this controller can
write: when it was sent and an HMAC over (dpid, port, time) under a key the
controller keeps to itself. A host can read a probe sent out of its own port but
cannot forge one naming another switch's port, and an old probe replayed later is
refused, so a host cannot make the controller believe in a link that is not there.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct

ETH_TYPE_LLDP = 0x88CC
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_8021Q = 0x8100
LLDP_DST = bytes.fromhex("0180c200000e")  # nearest bridge: no 802.1D bridge forwards it
PROBE_SRC = bytes.fromhex("024e53000000")  # locally administered, "NS"
PROBE_TTL = 120
OUI = bytes.fromhex("4e5300")  # a company id in the local range
SUBTYPE_AUTH = 1
MAC_LEN = 16  # bytes of HMAC-SHA256 kept
_TLV_END, _TLV_CHASSIS, _TLV_PORT, _TLV_TTL, _TLV_ORG = 0, 1, 2, 3, 127
_CHASSIS_LOCAL = 7
_PORT_COMPONENT = 2
_CHASSIS_PREFIX = b"dpid:"


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!H", kind << 9 | len(value)) + value


def _auth(key: bytes, dpid: int, port: int, sent_ms: int) -> bytes:
    digest = hmac.new(key, struct.pack("!QIQ", dpid, port, sent_ms), hashlib.sha256).digest()
    return digest[:MAC_LEN]


def probe_frame(dpid: int, port: int, key: bytes, now: float) -> bytes:
    """Return the LLDP probe that switch `dpid` sends out of `port` at `now` (seconds)."""
    sent_ms = int(now * 1000)
    chassis = bytes([_CHASSIS_LOCAL]) + _CHASSIS_PREFIX + f"{dpid:016x}".encode()
    org = OUI + bytes([SUBTYPE_AUTH]) + struct.pack("!Q", sent_ms) + _auth(key, dpid, port, sent_ms)
    return (
        LLDP_DST
        + PROBE_SRC
        + struct.pack("!H", ETH_TYPE_LLDP)
        + _tlv(_TLV_CHASSIS, chassis)
        + _tlv(_TLV_PORT, bytes([_PORT_COMPONENT]) + struct.pack("!I", port))
        + _tlv(_TLV_TTL, struct.pack("!H", PROBE_TTL))
        + _tlv(_TLV_ORG, org)
        + _tlv(_TLV_END, b"")
    )


def _tlvs(data: bytes) -> dict[int, bytes] | None:
    """Return the LLDP TLVs after the Ethernet header by type, None when malformed."""
    tlvs: dict[int, bytes] = {}
    offset = 14
    while offset + 2 <= len(data):
        (head,) = struct.unpack_from("!H", data, offset)
        kind, length = head >> 9, head & 0x1FF
        value = data[offset + 2 : offset + 2 + length]
        if len(value) != length:
            return None
        if kind == _TLV_END:
            return tlvs
        if kind in tlvs and kind != _TLV_ORG:
            return None
        if kind != _TLV_ORG or value[:4] == OUI + bytes([SUBTYPE_AUTH]):
            tlvs[kind] = value
        offset += 2 + length
    return None


def read_probe(data: bytes, key: bytes, now: float, max_age: float) -> tuple[int, int] | None:
    """Return (dpid, port) a probe was sent from, or None unless it is this controller's
    own, intact and sent at most `max_age` seconds before `now`."""
    if len(data) < 14 or struct.unpack_from("!H", data, 12)[0] != ETH_TYPE_LLDP:
        return None
    tlvs = _tlvs(data)
    if tlvs is None:
        return None
    chassis, port_id, org = tlvs.get(_TLV_CHASSIS), tlvs.get(_TLV_PORT), tlvs.get(_TLV_ORG)
    if chassis is None or port_id is None or org is None:
        return None
    if chassis[:1] != bytes([_CHASSIS_LOCAL]) or not chassis[1:].startswith(_CHASSIS_PREFIX):
        return None
    digits = chassis[1 + len(_CHASSIS_PREFIX) :]
    if len(digits) != 16 or port_id[:1] != bytes([_PORT_COMPONENT]) or len(port_id) != 5:
        return None
    if len(org) != 4 + 8 + MAC_LEN:
        return None
    try:
        dpid = int(digits.decode("ascii"), 16)
    except ValueError:
        return None
    (port,) = struct.unpack("!I", port_id[1:])
    (sent_ms,) = struct.unpack_from("!Q", org, 4)
    if not hmac.compare_digest(org[12:], _auth(key, dpid, port, sent_ms)):
        return None
    age = now - sent_ms / 1000
    if not -1.0 <= age <= max_age:  # the same clock: a probe from the future is forged
        return None
    return dpid, port


def sender_ipv4(data: bytes) -> str | None:
    """Return the IPv4 address a frame's sender claims (ARP sender or IPv4 source).

    None for other frames and for addresses no host owns as its own (unspecified,
    multicast, broadcast, loopback), as in an ARP probe or a DHCP discover.
    """
    if len(data) < 14:
        return None
    offset, (eth_type,) = 14, struct.unpack_from("!H", data, 12)
    if eth_type == ETH_TYPE_8021Q and len(data) >= 18:
        offset, (eth_type,) = 18, struct.unpack_from("!H", data, 16)
    if eth_type == ETH_TYPE_ARP:
        head = data[offset : offset + 8]
        if len(head) < 8 or head[2:6] != b"\x08\x00\x06\x04":  # IPv4 over Ethernet
            return None
        raw = data[offset + 14 : offset + 18]
    elif eth_type == ETH_TYPE_IPV4:
        if len(data) < offset + 20 or data[offset] >> 4 != 4:
            return None
        raw = data[offset + 12 : offset + 16]
    else:
        return None
    if len(raw) != 4:
        return None
    address = ipaddress.IPv4Address(raw)
    if (
        address.is_unspecified
        or address.is_multicast
        or address.is_loopback
        or address == ipaddress.IPv4Address("255.255.255.255")
    ):
        return None
    return str(address)
