"""A scapy layer for the signaling format, to craft and dissect messages in tools and
tests. Importing it binds the layer to UDP port SIGNALING_PORT (both directions), a
global change to scapy: the codec never imports this module.

    pkt = IP(dst="10.0.0.2") / UDP(sport=40000, dport=SIGNALING_PORT) / NetServSignal(
        type="SETUP", session_id=7, sequence=1,
        objects=[NSRequester(requester=b"alice"), NSLifetime(lifetime=60), ...])

Lengths, counts and padding are filled in when left unset; dissection ignores the
padding bytes' values (the codec is the one that checks them).
"""

from __future__ import annotations

import struct

from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    FieldListField,
    FlagsField,
    IEEEDoubleField,
    IntField,
    IP6Field,
    IPField,
    LongField,
    MultipleTypeField,
    PacketListField,
    ShortEnumField,
    ShortField,
    SignedLongField,
    StrLenField,
    X3BytesField,
    XLongField,
    XShortField,
    XStrFixedLenField,
    XStrLenField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, bind_layers

from signaling import wire
from signaling.errors import ErrorCode
from signaling.wire import Algorithm, MessageType, NodeMode, ObjectType, ParamType

_OBJECT_NAMES = {t.value: t.name for t in ObjectType}


def _object_header(kind: ObjectType) -> list:
    return [
        BitField("ignore", 0, 1),
        BitEnumField("type", int(kind), 15, _OBJECT_NAMES),
        ShortField("length", None),
    ]


class _Object(Packet):
    """Common framing: `length` counts the value; the value is padded to 4 bytes."""

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:2] + struct.pack("!H", len(p) - 4) + p[4:]
        value_len = struct.unpack("!H", p[2:4])[0]
        return p + bytes(-value_len % wire.ALIGN) + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s[-(self.length or 0) % wire.ALIGN :]


class NSObject(_Object):
    """An object of a type this layer does not know: its raw value."""

    name = "NetServ object"
    fields_desc = [
        BitField("ignore", 0, 1),
        BitEnumField("type", 0, 15, _OBJECT_NAMES),
        ShortField("length", None),
        XStrLenField("value", b"", length_from=lambda p: p.length),
    ]


class NSRequester(_Object):
    name = "NetServ requester"
    fields_desc = _object_header(ObjectType.REQUESTER) + [
        StrLenField("requester", b"", length_from=lambda p: p.length)
    ]


class NSFlowFilter(_Object):
    name = "NetServ flow filter"
    fields_desc = _object_header(ObjectType.FLOW_FILTER) + [
        ByteField("family", 4),
        FlagsField("present", 0, 8, ["src", "dst", "protocol", "sport", "dport"]),
        ByteField("protocol", 0),
        ByteField("reserved1", 0),
        ByteField("src_prefix", 0),
        ByteField("dst_prefix", 0),
        ShortField("reserved2", 0),
        ShortField("sport_low", 0),
        ShortField("sport_high", 0),
        ShortField("dport_low", 0),
        ShortField("dport_high", 0),
        MultipleTypeField(
            [(IP6Field("src", "::"), lambda p: p.family == 6)], IPField("src", "0.0.0.0")
        ),
        MultipleTypeField(
            [(IP6Field("dst", "::"), lambda p: p.family == 6)], IPField("dst", "0.0.0.0")
        ),
    ]


def _is(kind: ParamType):  # noqa: ANN202
    return lambda p: p.ptype == kind


class NSParam(Packet):
    name = "NetServ module parameter"
    fields_desc = [
        FieldLenField("name_len", None, length_of="pname", fmt="B"),
        StrLenField("pname", b"", length_from=lambda p: p.name_len),
        ByteEnumField("ptype", ParamType.INT64, {t.value: t.name for t in ParamType}),
        ConditionalField(SignedLongField("int_value", 0), _is(ParamType.INT64)),
        ConditionalField(IEEEDoubleField("float_value", 0.0), _is(ParamType.FLOAT64)),
        ConditionalField(ByteField("bool_value", 0), _is(ParamType.BOOL)),
        ConditionalField(
            FieldLenField("str_len", None, length_of="str_value", fmt="H"), _is(ParamType.STRING)
        ),
        ConditionalField(
            StrLenField("str_value", b"", length_from=lambda p: p.str_len), _is(ParamType.STRING)
        ),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class NSModule(Packet):
    name = "NetServ module"
    fields_desc = [
        FieldLenField("name_len", None, length_of="module", fmt="B"),
        StrLenField("module", b"", length_from=lambda p: p.name_len),
        FieldLenField("param_count", None, count_of="params", fmt="B"),
        PacketListField("params", [], NSParam, count_from=lambda p: p.param_count),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class NSModuleChain(_Object):
    name = "NetServ module chain"
    fields_desc = _object_header(ObjectType.MODULE_CHAIN) + [
        FieldLenField("count", None, count_of="modules", fmt="B"),
        X3BytesField("reserved", 0),
        PacketListField("modules", [], NSModule, count_from=lambda p: p.count),
    ]


class NSLifetime(_Object):
    name = "NetServ lifetime"
    fields_desc = _object_header(ObjectType.LIFETIME) + [IntField("lifetime", 60)]


class NSNodeSelection(_Object):
    name = "NetServ node selection"
    fields_desc = _object_header(ObjectType.NODE_SELECTION) + [
        ByteEnumField("mode", NodeMode.FIRST, {m.value: m.name for m in NodeMode}),
        FieldLenField("count", None, count_of="dpids", fmt="B"),
        ShortField("reserved", 0),
        FieldListField("dpids", [], XLongField("dpid", 0), count_from=lambda p: p.count),
    ]


class NSError(_Object):
    name = "NetServ error"
    fields_desc = _object_header(ObjectType.ERROR) + [
        ShortEnumField("code", ErrorCode.MALFORMED, {c.value: c.name for c in ErrorCode}),
        StrLenField("reason", b"", length_from=lambda p: (p.length or 2) - 2),
    ]


class NSName(Packet):
    name = "NetServ module name"
    fields_desc = [
        FieldLenField("name_len", None, length_of="module", fmt="B"),
        StrLenField("module", b"", length_from=lambda p: p.name_len),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s


class NSNodeInfo(_Object):
    name = "NetServ node info"
    fields_desc = _object_header(ObjectType.NODE_INFO) + [
        XLongField("dpid", 0),
        IntField("sessions", 0),
        ShortField("load", 0),
        FieldLenField("module_count", None, count_of="modules", fmt="B"),
        ByteField("reserved", 0),
        PacketListField("modules", [], NSName, count_from=lambda p: p.module_count),
    ]


class NSAuth(_Object):
    name = "NetServ authentication"
    fields_desc = _object_header(ObjectType.AUTH) + [
        ByteEnumField("algorithm", Algorithm.HMAC_SHA256, {a.value: a.name for a in Algorithm}),
        X3BytesField("reserved", 0),
        IntField("key_id", 0),
        XStrLenField("mac", bytes(32), length_from=lambda p: (p.length or 8) - 8),
    ]


OBJECT_LAYERS: dict[int, type[_Object]] = {
    ObjectType.REQUESTER: NSRequester,
    ObjectType.FLOW_FILTER: NSFlowFilter,
    ObjectType.MODULE_CHAIN: NSModuleChain,
    ObjectType.LIFETIME: NSLifetime,
    ObjectType.NODE_SELECTION: NSNodeSelection,
    ObjectType.ERROR: NSError,
    ObjectType.NODE_INFO: NSNodeInfo,
    ObjectType.AUTH: NSAuth,
}


def _object_class(s: bytes, *args: object, **kwargs: object) -> Packet:
    kind = struct.unpack("!H", s[:2])[0] & 0x7FFF if len(s) >= 2 else 0
    return OBJECT_LAYERS.get(kind, NSObject)(s, *args, **kwargs)


class NetServSignal(Packet):
    name = "NetServ signaling"
    fields_desc = [
        XShortField("magic", wire.MAGIC),
        ByteField("version", wire.VERSION),
        ByteEnumField("type", MessageType.SETUP, {t.value: t.name for t in MessageType}),
        FlagsField("flags", 0, 16, ["retransmission", "truncated"]),
        ShortField("length", None),
        XLongField("session_id", 1),
        IntField("sequence", 1),
        IntField("reserved", 0),
        LongField("timestamp", 0),
        XStrFixedLenField("nonce", bytes(wire.NONCE_SIZE), wire.NONCE_SIZE),
        PacketListField("objects", [], _object_class),
    ]

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:6] + struct.pack("!H", len(p)) + p[8:]
        return p + pay


bind_layers(UDP, NetServSignal, dport=wire.SIGNALING_PORT)
bind_layers(UDP, NetServSignal, sport=wire.SIGNALING_PORT)
