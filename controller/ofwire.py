"""The flow messages of a session's setup and teardown, encoded as OpenFlow 1.3 bytes.

Ryu builds a flow-mod as objects (an OFPMatch normalised field by field, instructions,
actions) and then serialises them: 75 µs for a session's detour, a tenth of the
controller's CPU on a setup. `encode` packs the same bytes with `struct` for what
NetServ's flows are made of: FlowAdd and FlowDelete on the match fields of
`controller/match.py`, the actions of `controller/messages.py`, and Barrier. Anything
else it returns None for, and `controller.ofbuild.build` makes it through Ryu.
`tests/unit/test_ofwire.py` checks the bytes against Ryu's for every field, mask and
action.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from controller.messages import (
    Action,
    Barrier,
    FlowAdd,
    FlowDelete,
    Output,
    PopVlan,
    PushVlan,
    ToController,
)

VERSION = 4  # OpenFlow 1.3
_FLOW_MOD, _BARRIER_REQUEST = 14, 20
_ADD, _DELETE, _DELETE_STRICT = 0, 3, 4
_SEND_FLOW_REM = 1
_NO_BUFFER, _ANY, _TABLE_ALL = 0xFFFFFFFF, 0xFFFFFFFF, 0xFF
_PORT_CONTROLLER, _NO_BUFFER_LEN = 0xFFFFFFFD, 0xFFFF
_VID_PRESENT = 0x1000
_ETH_8021Q = 0x8100
_IT_GOTO, _IT_APPLY, _IT_METER = 1, 4, 6
_AT_OUTPUT, _AT_PUSH_VLAN, _AT_POP_VLAN, _AT_SET_FIELD = 0, 17, 18, 25

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD_BODY = struct.Struct("!QQBBHHHIIIH2x")  # after the header; the match follows


def _uint(size: int) -> Callable[[object], bytes]:
    return lambda value: int(value).to_bytes(size, "big")  # type: ignore[call-overload]


def _mac(value: object) -> bytes:
    return bytes.fromhex(str(value).replace(":", ""))


def _ipv4(value: object) -> bytes:
    return socket.inet_pton(socket.AF_INET, str(value))


def _ipv6(value: object) -> bytes:
    return socket.inet_pton(socket.AF_INET6, str(value))


# OXM field number and value encoder of each match field (OpenFlow 1.3, 7.2.3.7).
_OXM: dict[str, tuple[int, Callable[[object], bytes]]] = {
    "in_port": (0, _uint(4)),
    "eth_dst": (3, _mac),
    "eth_src": (4, _mac),
    "eth_type": (5, _uint(2)),
    "vlan_vid": (6, _uint(2)),
    "vlan_pcp": (7, _uint(1)),
    "ip_proto": (10, _uint(1)),
    "ipv4_src": (11, _ipv4),
    "ipv4_dst": (12, _ipv4),
    "tcp_src": (13, _uint(2)),
    "tcp_dst": (14, _uint(2)),
    "udp_src": (15, _uint(2)),
    "udp_dst": (16, _uint(2)),
    "icmpv4_type": (19, _uint(1)),
    "icmpv4_code": (20, _uint(1)),
    "ipv6_src": (26, _ipv6),
    "ipv6_dst": (27, _ipv6),
}


class _NotHere(Exception):
    """A part this encoder does not know: Ryu encodes the message."""


def encode(msg: object, xid: int) -> bytes | None:
    """Return the OpenFlow 1.3 bytes of `msg` with transaction id `xid`, or None when it
    is not a message encoded here."""
    try:
        if isinstance(msg, FlowAdd):
            return _flow_add(msg, xid)
        if isinstance(msg, FlowDelete):
            return _flow_delete(msg, xid)
    except _NotHere:
        return None
    if isinstance(msg, Barrier):
        return _HEADER.pack(VERSION, _BARRIER_REQUEST, _HEADER.size, xid)
    return None


def _flow_add(msg: FlowAdd, xid: int) -> bytes:
    instructions = b""
    if msg.meter is not None:
        instructions += struct.pack("!HHI", _IT_METER, 8, msg.meter)
    if msg.actions:
        actions = b"".join(_action(a) for a in msg.actions)
        instructions += struct.pack("!HH4x", _IT_APPLY, 8 + len(actions)) + actions
    if msg.goto is not None:
        instructions += struct.pack("!HHB3x", _IT_GOTO, 8, msg.goto)
    flags = _SEND_FLOW_REM if msg.notify_removal else 0
    body = _FLOW_MOD_BODY.pack(
        msg.cookie,
        0,
        msg.table,
        _ADD,
        msg.idle_timeout,
        msg.hard_timeout,
        msg.priority,
        _NO_BUFFER,
        0,
        0,
        flags,
    )
    return _message(body + _match(msg.match) + instructions, xid)


def _flow_delete(msg: FlowDelete, xid: int) -> bytes:
    strict = msg.priority is not None
    body = _FLOW_MOD_BODY.pack(
        msg.cookie,
        msg.cookie_mask,
        _TABLE_ALL if msg.table is None else msg.table,
        _DELETE_STRICT if strict else _DELETE,
        0,
        0,
        msg.priority if strict else 0,
        _NO_BUFFER,
        _ANY,
        _ANY,
        0,
    )
    return _message(body + _match(msg.match), xid)


def _message(body: bytes, xid: int) -> bytes:
    return _HEADER.pack(VERSION, _FLOW_MOD, _HEADER.size + len(body), xid) + body


def _match(fields: tuple[tuple[str, object], ...]) -> bytes:
    """Return an OXM match (ofp_match, padded to 8 bytes), its fields in OXM order as
    Ryu sends them, a masked value with the mask applied."""
    tlvs = []
    for name, value in fields:
        try:
            number, pack = _OXM[name]
        except KeyError:
            raise _NotHere(name) from None
        if isinstance(value, tuple | list):
            raw, mask = pack(value[0]), pack(value[1])
            raw = bytes(a & b for a, b in zip(raw, mask, strict=True))
            tlv = struct.pack("!I", (0x8000 << 16) | (number << 9) | 0x100 | len(raw) * 2)
            tlvs.append((number, tlv + raw + mask))
        else:
            raw = pack(value)
            tlvs.append(
                (number, struct.pack("!I", (0x8000 << 16) | (number << 9) | len(raw)) + raw)
            )
    tlvs.sort(key=lambda t: t[0])
    oxm = b"".join(t for _, t in tlvs)
    length = 4 + len(oxm)
    return struct.pack("!HH", 1, length) + oxm + bytes(-length % 8)


def _oxm_header(number: int, length: int, masked: bool) -> bytes:
    """Return an OXM TLV's header: class OpenFlow basic (0x8000), field, mask bit, length."""
    return struct.pack("!I", (0x8000 << 16) | (number << 9) | (masked << 8) | length)


def _action(action: Action) -> bytes:
    if isinstance(action, Output):
        return struct.pack("!HHIH6x", _AT_OUTPUT, 16, action.port, 0)
    if isinstance(action, ToController):
        return struct.pack("!HHIH6x", _AT_OUTPUT, 16, _PORT_CONTROLLER, _NO_BUFFER_LEN)
    if isinstance(action, PushVlan):
        out = struct.pack("!HHH2x", _AT_PUSH_VLAN, 8, _ETH_8021Q)
        out += _set_field(6, (_VID_PRESENT | action.vid).to_bytes(2, "big"))
        if action.pcp:  # a pushed header's priority bits start at 0
            out += _set_field(7, action.pcp.to_bytes(1, "big"))
        return out
    if isinstance(action, PopVlan):
        return struct.pack("!HH4x", _AT_POP_VLAN, 8)
    raise _NotHere(action)


def _set_field(number: int, raw: bytes) -> bytes:
    oxm = _oxm_header(number, len(raw), False) + raw
    length = 4 + len(oxm)
    padded = length + (-length % 8)
    return struct.pack("!HH", _AT_SET_FIELD, padded) + oxm + bytes(padded - length)
