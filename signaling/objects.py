"""The value of each signaling object, bytes ⇄ values (docs/signaling.md, "Objects").

Encoders take values that already checked themselves (signaling/values.py). Decoders
read through a bounded `Reader`, so a short or lying value raises
SignalingProtocolError and nothing else; rules on the values themselves are enforced
by building them.
"""

from __future__ import annotations

import ipaddress
import struct

from signaling import wire
from signaling.errors import ErrorCode, SignalingProtocolError
from signaling.values import (
    Auth,
    FlowFilter,
    ModuleRef,
    Network,
    NodeInfo,
    NodeSelection,
    ParamValue,
    PortRange,
)
from signaling.wire import Algorithm, ParamType

_U16, _U32, _U64 = struct.Struct("!H"), struct.Struct("!I"), struct.Struct("!Q")
_I64, _F64 = struct.Struct("!q"), struct.Struct("!d")


def malformed(reason: str) -> SignalingProtocolError:
    """Return the error for a message that breaks the format."""
    return SignalingProtocolError(ErrorCode.MALFORMED, reason)


class Reader:
    """Reads fields from `data`, never past its end."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        """Return the next `n` bytes; raise SignalingProtocolError if there are fewer."""
        end = self._pos + n
        if end > len(self._data):
            raise malformed(f"{self._what}: truncated")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def zeros(self, n: int) -> None:
        """Read `n` reserved bytes, which must be zero."""
        if any(self.take(n)):
            raise malformed(f"{self._what}: reserved bits set")

    def text(self, n: int) -> str:
        """Return the next `n` bytes decoded as UTF-8."""
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise malformed(f"{self._what}: not valid UTF-8") from None

    def rest(self) -> int:
        return len(self._data) - self._pos

    def done(self) -> None:
        """Raise SignalingProtocolError if bytes are left over."""
        if self._pos != len(self._data):
            raise malformed(f"{self._what}: {self.rest()} bytes too many")


def _name(raw: str) -> bytes:
    return bytes([len(raw)]) + raw.encode()


# -- REQUESTER --------------------------------------------------------------------------


def encode_requester(requester: str) -> bytes:
    return requester.encode()


def decode_requester(r: Reader) -> str:
    return r.text(r.rest())


# -- FLOW_FILTER ------------------------------------------------------------------------


def encode_filter(f: FlowFilter) -> bytes:
    present = 0
    for bit, value in (
        (wire.FILTER_SRC, f.src),
        (wire.FILTER_DST, f.dst),
        (wire.FILTER_PROTO, f.protocol),
        (wire.FILTER_SPORT, f.src_ports),
        (wire.FILTER_DPORT, f.dst_ports),
    ):
        if value is not None:
            present |= bit
    size = 4 if f.family == 4 else 16

    def addr(n: Network | None) -> tuple[int, bytes]:
        return (0, bytes(size)) if n is None else (n.prefixlen, n.network_address.packed)

    def ports(p: PortRange | None) -> tuple[int, int]:
        return (0, 0) if p is None else (p.low, p.high)

    (src_len, src), (dst_len, dst) = addr(f.src), addr(f.dst)
    head = struct.pack(
        "!BBBBBBHHHHH",
        f.family,
        present,
        f.protocol or 0,
        0,
        src_len,
        dst_len,
        0,
        *ports(f.src_ports),
        *ports(f.dst_ports),
    )
    return head + src + dst


def _read_net(r: Reader, family: int, prefix: int, present: bool) -> Network | None:
    raw = r.take(4 if family == 4 else 16)
    if not present:
        if any(raw) or prefix:
            raise malformed("flow filter: a wildcard address is not all zero")
        return None
    net_type = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
    addr = int.from_bytes(raw, "big")
    bits = len(raw) * 8
    if prefix > bits:
        raise malformed(f"flow filter: prefix length {prefix} > {bits}")
    if addr & ((1 << (bits - prefix)) - 1):
        raise malformed(f"flow filter: an address has bits set past its /{prefix}")
    return net_type((addr, prefix))


def decode_filter(r: Reader) -> FlowFilter:
    family, present, protocol = r.u8(), r.u8(), r.u8()
    r.zeros(1)
    src_len, dst_len = r.u8(), r.u8()
    r.zeros(2)
    sport, dport = (r.u16(), r.u16()), (r.u16(), r.u16())
    if family not in (4, 6):
        raise malformed(f"flow filter: family {family} is not 4 or 6")
    if present & ~0x1F:
        raise malformed("flow filter: unknown field bits set")
    src = _read_net(r, family, src_len, bool(present & wire.FILTER_SRC))
    dst = _read_net(r, family, dst_len, bool(present & wire.FILTER_DST))

    def given(bit: int, raw: object, zero: object) -> bool:
        if not present & bit and raw != zero:
            raise malformed("flow filter: a wildcard field is not zero")
        return bool(present & bit)

    return FlowFilter(
        family=family,
        src=src,
        dst=dst,
        protocol=protocol if given(wire.FILTER_PROTO, protocol, 0) else None,
        src_ports=PortRange(*sport) if given(wire.FILTER_SPORT, sport, (0, 0)) else None,
        dst_ports=PortRange(*dport) if given(wire.FILTER_DPORT, dport, (0, 0)) else None,
    )


# -- MODULE_CHAIN -----------------------------------------------------------------------


def _encode_value(value: ParamValue) -> bytes:
    if isinstance(value, bool):
        return bytes([ParamType.BOOL, value])
    if isinstance(value, int):
        return bytes([ParamType.INT64]) + _I64.pack(value)
    if isinstance(value, float):
        return bytes([ParamType.FLOAT64]) + _F64.pack(value)
    raw = value.encode()
    return bytes([ParamType.STRING]) + _U16.pack(len(raw)) + raw


def encode_chain(chain: tuple[ModuleRef, ...]) -> bytes:
    out = [bytes([len(chain), 0, 0, 0])]
    for module in chain:
        out += [_name(module.name), bytes([len(module.params)])]
        out += [_name(name) + _encode_value(value) for name, value in module.params]
    return b"".join(out)


def _decode_value(r: Reader) -> ParamValue:
    kind = r.u8()
    if kind == ParamType.INT64:
        return _I64.unpack(r.take(8))[0]
    if kind == ParamType.FLOAT64:
        return _F64.unpack(r.take(8))[0]
    if kind == ParamType.BOOL:
        flag = r.u8()
        if flag > 1:
            raise malformed(f"module chain: bool value {flag}")
        return bool(flag)
    if kind == ParamType.STRING:
        return r.text(r.u16())
    raise malformed(f"module chain: unknown parameter type {kind}")


def decode_chain(r: Reader) -> tuple[ModuleRef, ...]:
    count = r.u8()
    r.zeros(3)
    if count > wire.MAX_CHAIN:
        raise malformed(f"module chain: {count} modules, at most {wire.MAX_CHAIN}")
    chain = []
    for _ in range(count):
        name = r.text(r.u8())
        params: list[tuple[str, ParamValue]] = []
        nparams = r.u8()
        if nparams > wire.MAX_PARAMS:
            raise malformed(f"module chain: {nparams} parameters, at most {wire.MAX_PARAMS}")
        for _ in range(nparams):
            pname = r.text(r.u8())
            if params and pname.encode() <= params[-1][0].encode():
                raise malformed("module chain: parameters not in ascending order of name")
            params.append((pname, _decode_value(r)))
        chain.append(ModuleRef(name, tuple(params)))
    return tuple(chain)


# -- LIFETIME, NODE_SELECTION, ERROR ----------------------------------------------------


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def decode_u32(r: Reader) -> int:
    return r.u32()


def encode_selection(sel: NodeSelection) -> bytes:
    return struct.pack("!BBH", sel.mode, len(sel.dpids), 0) + b"".join(
        _U64.pack(d) for d in sel.dpids
    )


def decode_selection(r: Reader) -> NodeSelection:
    mode, count = r.u8(), r.u8()
    r.zeros(2)
    if count > wire.MAX_PATH_NODES:
        raise malformed(f"node selection: {count} nodes, at most {wire.MAX_PATH_NODES}")
    return NodeSelection(mode, tuple(r.u64() for _ in range(count)))  # type: ignore[arg-type]


def encode_error(code: int, reason: str) -> bytes:
    return _U16.pack(code) + reason.encode()


def decode_error(r: Reader) -> tuple[int, str]:
    code = r.u16()
    return code, r.text(r.rest())


# -- NODE_INFO, AUTH --------------------------------------------------------------------


def encode_node_info(n: NodeInfo) -> bytes:
    head = struct.pack("!QIHBB", n.dpid, n.sessions, n.load, len(n.modules), 0)
    return head + b"".join(_name(m) for m in n.modules)


def decode_node_info(r: Reader) -> NodeInfo:
    dpid, sessions, load, count = r.u64(), r.u32(), r.u16(), r.u8()
    r.zeros(1)
    if count > wire.MAX_NODE_MODULES:
        raise malformed(f"node info: {count} modules, at most {wire.MAX_NODE_MODULES}")
    modules = tuple(r.text(r.u8()) for _ in range(count))
    return NodeInfo(dpid, modules, load, sessions)


def encode_auth(a: Auth) -> bytes:
    return struct.pack("!BBHI", a.algorithm, 0, 0, a.key_id) + a.mac


def decode_auth(r: Reader) -> Auth:
    algorithm = r.u8()
    r.zeros(3)
    key_id = r.u32()
    if algorithm not in Algorithm._value2member_map_:
        raise SignalingProtocolError(ErrorCode.BAD_AUTH, f"unknown algorithm {algorithm}")
    return Auth(key_id, r.take(r.rest()), Algorithm(algorithm))
