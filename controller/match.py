"""Flow matches named with OpenFlow OXM field names, as ofctl_rest names them.

`parse_match` turns a requester's JSON object into a canonical `FlowMatch` (values
normalised, protocol prerequisites filled in, contradictions rejected); `overlaps`
decides whether two matches can claim the same frame.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

from controller.errors import InvalidRequest
from controller.messages import Match, as_match

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17


def _int(lo: int, hi: int) -> Callable[[str, object], int]:
    def parse(name: str, raw: object) -> int:
        if isinstance(raw, bool):
            raise InvalidRequest(f"match field {name!r}: expected an integer, got {raw!r}")
        if isinstance(raw, str):
            try:
                raw = int(raw, 0)
            except ValueError:
                raise InvalidRequest(f"match field {name!r}: {raw!r} is not an integer") from None
        if not isinstance(raw, int) or not lo <= raw <= hi:
            raise InvalidRequest(
                f"match field {name!r}: expected an integer {lo}..{hi}, got {raw!r}"
            )
        return raw

    return parse


def _mac(name: str, raw: object) -> str | tuple[str, str]:
    def norm(text: str) -> str:
        parts = text.split(":")
        if len(parts) != 6 or not all(len(p) in (1, 2) for p in parts):
            raise InvalidRequest(f"match field {name!r}: {raw!r} is not a MAC address")
        try:
            return ":".join(f"{int(p, 16):02x}" for p in parts)
        except ValueError:
            raise InvalidRequest(f"match field {name!r}: {raw!r} is not a MAC address") from None

    if not isinstance(raw, str):
        raise InvalidRequest(f"match field {name!r}: expected a MAC address string")
    if "/" in raw:
        addr, mask = raw.split("/", 1)
        return norm(addr), norm(mask)
    return norm(raw)


def _ip(version: int) -> Callable[[str, object], str | tuple[str, str]]:
    def parse(name: str, raw: object) -> str | tuple[str, str]:
        if not isinstance(raw, str):
            raise InvalidRequest(f"match field {name!r}: expected an IPv{version} address string")
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise InvalidRequest(
                f"match field {name!r}: {raw!r} is not an IPv{version} address or prefix"
            ) from None
        if net.version != version:
            raise InvalidRequest(f"match field {name!r}: {raw!r} is not IPv{version}")
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return str(net.network_address), str(net.netmask)

    return parse


@dataclass(frozen=True)
class _Field:
    parse: Callable[[str, object], object]
    eth_type: int | None = None  # prerequisite
    ip_proto: int | None = None  # prerequisite
    bits: int = 0  # width, for overlap tests


_FIELDS: dict[str, _Field] = {
    "in_port": _Field(_int(1, 0xFFFFFF00), bits=32),
    "eth_src": _Field(_mac, bits=48),
    "eth_dst": _Field(_mac, bits=48),
    "eth_type": _Field(_int(0, 0xFFFF), bits=16),
    "ip_proto": _Field(_int(0, 255), bits=8),
    "ipv4_src": _Field(_ip(4), eth_type=ETH_IPV4, bits=32),
    "ipv4_dst": _Field(_ip(4), eth_type=ETH_IPV4, bits=32),
    "ipv6_src": _Field(_ip(6), eth_type=ETH_IPV6, bits=128),
    "ipv6_dst": _Field(_ip(6), eth_type=ETH_IPV6, bits=128),
    "tcp_src": _Field(_int(0, 65535), ip_proto=PROTO_TCP, bits=16),
    "tcp_dst": _Field(_int(0, 65535), ip_proto=PROTO_TCP, bits=16),
    "udp_src": _Field(_int(0, 65535), ip_proto=PROTO_UDP, bits=16),
    "udp_dst": _Field(_int(0, 65535), ip_proto=PROTO_UDP, bits=16),
    "icmpv4_type": _Field(_int(0, 255), eth_type=ETH_IPV4, ip_proto=PROTO_ICMP, bits=8),
    "icmpv4_code": _Field(_int(0, 255), eth_type=ETH_IPV4, ip_proto=PROTO_ICMP, bits=8),
}
MATCH_FIELDS = tuple(_FIELDS)


@dataclass(frozen=True)
class FlowMatch:
    """A canonical OpenFlow match: what a session claims. `fields` maps OXM name → value."""

    fields: Match

    def as_dict(self) -> dict[str, object]:
        """Return the fields as a JSON-ready dict (masked values as "value/mask")."""
        return {k: f"{v[0]}/{v[1]}" if isinstance(v, tuple) else v for k, v in self.fields}

    @property
    def specificity(self) -> int:
        """Return how many fields the match constrains (more = more specific)."""
        return len(self.fields)

    @cached_property
    def ranges(self) -> dict[str, tuple[int, int]]:
        """Return each field as (value, mask) integers, parsed once per match."""
        return {name: _value_mask(name, value) for name, value in self.fields}


def _set(fields: dict[str, object], name: str, value: int, why: str) -> None:
    have = fields.get(name)
    if have is None:
        fields[name] = value
    elif have != value:
        raise InvalidRequest(f"match field {name!r}={have!r} contradicts {why} (needs {value:#x})")


def parse_match(raw: object) -> FlowMatch:
    """Return the canonical FlowMatch for a JSON object of OXM fields; raise InvalidRequest."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest('match must be a JSON object of OXM fields, e.g. {"udp_dst": 9000}')
    if not raw:
        raise InvalidRequest(
            "match must name at least one field: a session claims a flow, not all traffic"
        )
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown match field(s) {unknown}; known: {list(MATCH_FIELDS)}")
    fields: dict[str, object] = {
        name: _FIELDS[name].parse(name, value) for name, value in raw.items()
    }
    for name in list(fields):
        spec = _FIELDS[name]
        if spec.ip_proto is not None:
            _set(fields, "ip_proto", spec.ip_proto, name)
        if spec.eth_type is not None:
            _set(fields, "eth_type", spec.eth_type, name)
    if "ip_proto" in fields and "eth_type" not in fields:
        fields["eth_type"] = ETH_IPV4
    if "ip_proto" in fields and fields["eth_type"] not in (ETH_IPV4, ETH_IPV6):
        raise InvalidRequest(
            f"ip_proto needs eth_type 0x0800 or 0x86dd, not {fields['eth_type']:#x}"
        )
    return FlowMatch(as_match(fields))


def _value_mask(name: str, value: object) -> tuple[int, int]:
    full = (1 << _FIELDS[name].bits) - 1
    if isinstance(value, int):
        return value, full
    addr, mask = value if isinstance(value, tuple) else (value, None)
    if name.startswith("eth_"):
        to_int = lambda s: int(s.replace(":", ""), 16)  # noqa: E731
    else:
        to_int = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    return to_int(addr), full if mask is None else to_int(mask)


def overlaps(a: FlowMatch, b: FlowMatch) -> bool:
    """Return True when some frame could match both `a` and `b`."""
    other = b.ranges
    for name, (va, ma) in a.ranges.items():
        theirs = other.get(name)
        if theirs is None:
            continue
        vb, mb = theirs
        common = ma & mb
        if va & common != vb & common:
            return False
    return True
