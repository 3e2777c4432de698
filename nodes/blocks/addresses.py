"""Addresses as the headers hold them: packed bytes in, packed bytes out, text for people."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def packed_ip(value: object, version: int) -> bytes:
    """Return `value` (text, packed bytes, an int or an ipaddress object) as the packed
    bytes of an IPv`version` address; raise ValueError when it is not one."""
    size = 4 if version == 4 else 16
    if isinstance(value, bytes | bytearray | memoryview):
        packed = bytes(value)
        if len(packed) != size:
            raise ValueError(f"an IPv{version} address is {size} bytes, got {len(packed)}")
        return packed
    kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if isinstance(value, IPAddress) and not isinstance(value, kind):
        raise ValueError(f"{value} is not an IPv{version} address")
    if not isinstance(value, str | int | IPAddress) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an IPv{version} address")
    try:
        return kind(value).packed
    except ipaddress.AddressValueError as exc:
        raise ValueError(f"{value!r} is not an IPv{version} address: {exc}") from None


def packed_mac(value: object) -> bytes:
    """Return a MAC address given as "aa:bb:cc:dd:ee:ff" (or with -) or 6 bytes, packed;
    raise ValueError when it is not one."""
    if isinstance(value, bytes | bytearray | memoryview):
        packed = bytes(value)
    elif isinstance(value, str):
        parts = value.replace("-", ":").split(":")
        try:
            packed = bytes(int(p, 16) for p in parts if len(p) == 2)
        except ValueError:
            packed = b""
        if len(parts) != 6:
            packed = b""
    else:
        packed = b""
    if len(packed) != 6:
        raise ValueError(f"{value!r} is not a MAC address")
    return packed


def mac_text(packed: bytes | memoryview) -> str:
    """Return a packed MAC address as lower-case text with colons."""
    return bytes(packed).hex(":")


def ip_version(value: object) -> int:
    """Return 4 or 6 for an IP address given as text or an ipaddress object; raise ValueError."""
    if isinstance(value, IPAddress):
        return value.version
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address")
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
