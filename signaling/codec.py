"""The signaling codec: message objects ⇄ bytes, with no networking code at all.

    data = encode(Setup(...))    # SignalingUsageError if the protocol cannot say it
    msg = decode(data)           # SignalingProtocolError(code, reason, echo) if not valid

`decode` raises nothing else for any input bytes. It is strict: every message has one
encoding (reserved bits and padding zero, objects in their order), so for valid bytes
`encode(decode(data)) == data` unless they held unknown objects marked ignorable.
"""

from __future__ import annotations

from collections.abc import Callable

from signaling import objects as obj
from signaling import wire
from signaling.errors import Echo, ErrorCode, SignalingProtocolError, SignalingUsageError
from signaling.messages import (
    MESSAGE_CLASSES,
    Ack,
    Challenge,
    ChallengeResponse,
    ErrorReply,
    Message,
    Probe,
    ProbeResponse,
    Refresh,
    Setup,
    Teardown,
    _Message,
    _Request,
)
from signaling.values import Description, NodeSelection
from signaling.wire import Flag, MessageType, ObjectType

__all__ = ["decode", "encode", "peek_echo"]

_ZERO_PAD = bytes(wire.ALIGN)


def _frame(kind: ObjectType, value: bytes) -> bytes:
    pad = -len(value) % wire.ALIGN
    return wire.OBJECT_HEADER.pack(kind, len(value)) + value + _ZERO_PAD[:pad]


def _description_objects(d: Description) -> list[tuple[ObjectType, bytes]]:
    return [
        (ObjectType.REQUESTER, obj.encode_requester(d.requester)),
        (ObjectType.FLOW_FILTER, obj.encode_filter(d.flow)),
        (ObjectType.MODULE_CHAIN, obj.encode_chain(d.chain)),
        (ObjectType.LIFETIME, obj.encode_u32(d.lifetime)),
        (ObjectType.NODE_SELECTION, obj.encode_selection(d.nodes)),
    ]


def _objects_of(m: Message) -> list[tuple[ObjectType, bytes]]:
    if isinstance(m, Setup | Refresh):
        return _description_objects(m.description)
    if isinstance(m, Teardown):
        return [(ObjectType.REQUESTER, obj.encode_requester(m.requester))]
    if isinstance(m, Probe):
        return [
            (ObjectType.REQUESTER, obj.encode_requester(m.requester)),
            (ObjectType.FLOW_FILTER, obj.encode_filter(m.flow)),
            (ObjectType.NODE_SELECTION, obj.encode_selection(m.nodes)),
        ]
    if isinstance(m, Ack):
        if m.lifetime is None or m.nodes is None:
            return []
        return [
            (ObjectType.LIFETIME, obj.encode_u32(m.lifetime)),
            (ObjectType.NODE_SELECTION, obj.encode_selection(NodeSelection.named(*m.nodes))),
        ]
    if isinstance(m, ErrorReply):
        return [(ObjectType.ERROR, obj.encode_error(m.code, m.reason))]
    if isinstance(m, Challenge):
        return [
            (ObjectType.REQUESTER, obj.encode_requester(m.requester)),
            (ObjectType.FLOW_FILTER, obj.encode_filter(m.flow)),
        ]
    if isinstance(m, ChallengeResponse):
        return []
    return [(ObjectType.NODE_INFO, obj.encode_node_info(n)) for n in m.nodes]


def _flags(m: Message) -> int:
    if isinstance(m, _Request) and m.retransmission:
        return Flag.RETRANSMISSION
    if isinstance(m, ProbeResponse) and m.truncated:
        return Flag.TRUNCATED
    return 0


def encode(message: Message) -> bytes:
    """Return the bytes of `message`; raise SignalingUsageError if it is too large.

    An `auth` object on the message is written as it is (see signaling.auth.sign to
    compute its MAC).
    """
    if not isinstance(message, _Message) or type(message) not in MESSAGE_CLASSES.values():
        raise SignalingUsageError(f"not a signaling message: {message!r}")
    items = _objects_of(message)
    if message.auth is not None:
        items.append((ObjectType.AUTH, obj.encode_auth(message.auth)))
    body = b"".join(_frame(kind, value) for kind, value in items)
    length = wire.HEADER_SIZE + len(body)
    if length > wire.MAX_MESSAGE_SIZE:
        raise SignalingUsageError(
            f"the message is {length} bytes, more than one datagram's {wire.MAX_MESSAGE_SIZE}"
        )
    header = wire.HEADER.pack(
        wire.MAGIC,
        wire.VERSION,
        message.TYPE,
        _flags(message),
        length,
        message.session_id,
        message.sequence,
        0,
        message.timestamp_ms,
        message.nonce,
    )
    return header + body


def peek_echo(data: bytes) -> Echo | None:
    """Return what an answer to `data` would copy from its header, or None if `data`
    does not even start like a signaling message (too short, wrong magic)."""
    if len(data) < wire.HEADER_SIZE:
        return None
    magic, _, kind, _, _, session_id, sequence, _, _, nonce = wire.HEADER.unpack_from(data)
    if magic != wire.MAGIC:
        return None
    return Echo(kind, session_id, sequence, nonce)


def _split(data: bytes) -> list[tuple[int, bytes]]:
    """Return the (raw type, value) of each object after the header."""
    out: list[tuple[int, bytes]] = []
    pos = wire.HEADER_SIZE
    while pos < len(data):
        if len(out) == wire.MAX_OBJECTS:
            raise obj.malformed(f"more than {wire.MAX_OBJECTS} objects")
        if pos + wire.OBJECT_HEADER.size > len(data):
            raise obj.malformed("an object header is cut short")
        raw_type, size = wire.OBJECT_HEADER.unpack_from(data, pos)
        start = pos + wire.OBJECT_HEADER.size
        end = start + size
        pos = end + (-size % wire.ALIGN)
        if pos > len(data):
            raise obj.malformed(f"object {raw_type & 0x7FFF} runs past the message's end")
        if any(data[end:pos]):
            raise obj.malformed("an object's padding is not zero")
        out.append((raw_type, data[start:end]))
    return out


_DECODERS: dict[ObjectType, Callable[[obj.Reader], object]] = {
    ObjectType.REQUESTER: obj.decode_requester,
    ObjectType.FLOW_FILTER: obj.decode_filter,
    ObjectType.MODULE_CHAIN: obj.decode_chain,
    ObjectType.LIFETIME: obj.decode_u32,
    ObjectType.NODE_SELECTION: obj.decode_selection,
    ObjectType.ERROR: obj.decode_error,
    ObjectType.NODE_INFO: obj.decode_node_info,
    ObjectType.AUTH: obj.decode_auth,
}


def _read_objects(kind: MessageType, data: bytes) -> dict[ObjectType, object]:
    """Return each known object's decoded value (NODE_INFO: a list of them)."""
    allowed = wire.REQUIRED[kind] | wire.OPTIONAL[kind]
    found: dict[ObjectType, object] = {}
    last = -1
    for raw_type, value in _split(data):
        number = raw_type & ~wire.IGNORE_IF_UNKNOWN
        if ObjectType.AUTH in found:
            raise obj.malformed("AUTH is not the last object")
        if number != ObjectType.AUTH:
            if number < last or (number == last and number != ObjectType.NODE_INFO):
                raise obj.malformed(f"object {number} out of order or repeated")
            last = number
        if number not in ObjectType._value2member_map_:
            if raw_type & wire.IGNORE_IF_UNKNOWN:
                continue
            raise SignalingProtocolError(ErrorCode.UNKNOWN_OBJECT, f"unknown object {number}")
        known = ObjectType(number)
        if known not in allowed:
            raise obj.malformed(f"{kind.name} does not carry {known.name}")
        reader = obj.Reader(value, known.name)
        decoded = _DECODERS[known](reader)
        reader.done()
        if known is ObjectType.NODE_INFO:
            found.setdefault(known, []).append(decoded)  # type: ignore[union-attr]
        else:
            found[known] = decoded
    missing = wire.REQUIRED[kind] - set(found)
    if missing:
        names = ", ".join(sorted(m.name for m in missing))
        raise obj.malformed(f"{kind.name} lacks {names}")
    return found


def _build(kind: MessageType, flags: int, header: dict[str, object], o: dict) -> Message:
    allowed_flags = {
        MessageType.PROBE_RESPONSE: Flag.TRUNCATED,
        MessageType.ACK: 0,
        MessageType.ERROR: 0,
        MessageType.CHALLENGE_RESPONSE: 0,
    }.get(kind, Flag.RETRANSMISSION)
    if flags & ~allowed_flags:
        raise obj.malformed(f"flags {flags:#06x} not defined for {kind.name}")
    if not kind.is_response:
        header["retransmission"] = bool(flags)
    if kind in (MessageType.SETUP, MessageType.REFRESH):
        description = Description(
            requester=o[ObjectType.REQUESTER],
            flow=o[ObjectType.FLOW_FILTER],
            chain=o[ObjectType.MODULE_CHAIN],
            lifetime=o[ObjectType.LIFETIME],
            nodes=o[ObjectType.NODE_SELECTION],
        )
        return MESSAGE_CLASSES[kind](**header, description=description)  # type: ignore[return-value]
    if kind is MessageType.TEARDOWN:
        return Teardown(**header, requester=o[ObjectType.REQUESTER])
    if kind is MessageType.PROBE:
        return Probe(
            **header,
            requester=o[ObjectType.REQUESTER],
            flow=o[ObjectType.FLOW_FILTER],
            nodes=o[ObjectType.NODE_SELECTION],
        )
    if kind is MessageType.ACK:
        nodes = o.get(ObjectType.NODE_SELECTION)
        if nodes is not None and nodes.mode is not wire.NodeMode.NAMED:
            raise obj.malformed("an ACK names its nodes (mode NAMED)")
        return Ack(**header, lifetime=o.get(ObjectType.LIFETIME), nodes=nodes and nodes.dpids)
    if kind is MessageType.ERROR:
        code, reason = o[ObjectType.ERROR]
        return ErrorReply(**header, code=code, reason=reason)
    if kind is MessageType.CHALLENGE:
        return Challenge(
            **header, requester=o[ObjectType.REQUESTER], flow=o[ObjectType.FLOW_FILTER]
        )
    if kind is MessageType.CHALLENGE_RESPONSE:
        return ChallengeResponse(**header)
    return ProbeResponse(**header, nodes=tuple(o[ObjectType.NODE_INFO]), truncated=bool(flags))


def _decode(data: bytes) -> Message:
    if len(data) < wire.HEADER_SIZE:
        raise obj.malformed(f"{len(data)} bytes, shorter than the header")
    magic, version, kind, flags, length, session_id, sequence, reserved, timestamp, nonce = (
        wire.HEADER.unpack_from(data)
    )
    if magic != wire.MAGIC:
        raise obj.malformed(f"magic {magic:#06x} is not {wire.MAGIC:#06x}")
    if version != wire.VERSION:
        raise SignalingProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"version {version}; this speaks {wire.VERSION}"
        )
    if len(data) > wire.MAX_MESSAGE_SIZE:
        raise obj.malformed(f"{len(data)} bytes, more than {wire.MAX_MESSAGE_SIZE}")
    if length != len(data):
        raise obj.malformed(f"length field says {length}, the datagram has {len(data)}")
    if kind not in MessageType._value2member_map_:
        raise SignalingProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"message type {kind}")
    if reserved:
        raise obj.malformed("reserved header bits set")
    mtype = MessageType(kind)
    found = _read_objects(mtype, data)
    header: dict[str, object] = {
        "session_id": session_id,
        "sequence": sequence,
        "timestamp_ms": timestamp,
        "nonce": nonce,
        "auth": found.get(ObjectType.AUTH),
    }
    return _build(mtype, flags, header, found)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Return the message in `data` (exactly one datagram's payload).

    Raise SignalingProtocolError, with the ErrorCode to answer and, when the header was
    readable, what the answer must echo; SignalingUsageError if `data` is not bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SignalingUsageError(f"decode takes bytes, not {type(data).__name__}")
    data = bytes(data)
    try:
        return _decode(data)
    except SignalingProtocolError as exc:
        if exc.echo is None:
            exc.echo = peek_echo(data)
        raise
    except SignalingUsageError as exc:  # a decoded value broke a rule of the protocol
        raise SignalingProtocolError(ErrorCode.MALFORMED, str(exc), peek_echo(data)) from None
