"""Numbers of the signaling wire format, declared once (docs/signaling.md is their spec)."""

from __future__ import annotations

import enum
import re
import struct

# A session's lifetime and chain are bounded as for every transport and the agents.
from agentproto.limits import MAX_CHAIN as MAX_CHAIN
from agentproto.limits import MAX_LIFETIME as MAX_LIFETIME

SIGNALING_PORT = 20051  # UDP; 0x4e53, "NS", as in NetServ's flow cookies
MAGIC = 0x4E53
VERSION = 1

# Header: magic, version, type, flags, length, session id, sequence, reserved,
# timestamp (ms since the Unix epoch), nonce. Network byte order throughout.
HEADER = struct.Struct("!HBBHHQII Q16s")
HEADER_SIZE = HEADER.size  # 48
NONCE_SIZE = 16
OBJECT_HEADER = struct.Struct("!HH")  # type (bit 15: ignore if unknown), value length
ALIGN = 4

# One UDP datagram over IPv6's minimum MTU (1280 - 40 IPv6 - 8 UDP), so a message is never
# fragmented: a switch that punts by UDP port would not see the later fragments.
MAX_MESSAGE_SIZE = 1232
MAX_OBJECTS = 32
MAX_PARAMS = 16  # per module
MAX_PATH_NODES = 16  # named nodes in a selection, nodes in a PROBE-RESPONSE or an ACK
MAX_NODE_MODULES = 64  # modules one PROBE-RESPONSE entry lists
MAX_REQUESTER_ID = 64  # bytes
MAX_NAME = 32  # bytes: module and parameter names
MAX_STRING = 255  # bytes: string parameter values and ERROR reasons
MAX_LOAD = 1000  # thousandths

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

# Module and parameter names, as nodes/bundle.py NAME_RE for module names.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Requester ids: printable ASCII without space, so they log and quote safely.
REQUESTER_RE = re.compile(r"[\x21-\x7e]{1,64}")


class MessageType(enum.IntEnum):
    SETUP = 0x01
    REFRESH = 0x02
    TEARDOWN = 0x03
    PROBE = 0x04
    CHALLENGE = 0x05  # return-routability: the responder to a claimed endpoint
    ACK = 0x81
    ERROR = 0x82
    PROBE_RESPONSE = 0x84
    CHALLENGE_RESPONSE = 0x85  # the endpoint's echo of a CHALLENGE's cookie

    @property
    def is_response(self) -> bool:
        """Return True for the answers (high bit set)."""
        return bool(self & 0x80)


class Flag(enum.IntFlag):
    RETRANSMISSION = 0x0001  # requests: a repeat of an earlier request (same sequence)
    TRUNCATED = 0x0002  # PROBE-RESPONSE: more nodes or modules than fit


IGNORE_IF_UNKNOWN = 0x8000  # bit 15 of an object's type


class ObjectType(enum.IntEnum):
    REQUESTER = 1
    FLOW_FILTER = 2
    MODULE_CHAIN = 3
    LIFETIME = 4
    NODE_SELECTION = 5
    ERROR = 6
    NODE_INFO = 7
    AUTH = 8


class ParamType(enum.IntEnum):
    INT64 = 1
    FLOAT64 = 2
    BOOL = 3
    STRING = 4


class NodeMode(enum.IntEnum):
    FIRST = 1
    LAST = 2
    ALL = 3
    NAMED = 4


class Algorithm(enum.IntEnum):
    HMAC_SHA256 = 1
    ED25519 = 2  # reserved: decoded, not yet verified

    @property
    def mac_size(self) -> int:
        """Return the length in bytes of this algorithm's MAC or signature."""
        return 32 if self is Algorithm.HMAC_SHA256 else 64


# Filter fields present (a clear bit = wildcard).
FILTER_SRC, FILTER_DST, FILTER_PROTO, FILTER_SPORT, FILTER_DPORT = 1, 2, 4, 8, 16
PORT_PROTOCOLS = frozenset({6, 17, 132})  # TCP, UDP, SCTP

# Which objects each message must and may carry (besides AUTH, which any may carry).
REQUIRED: dict[MessageType, frozenset[ObjectType]] = {
    MessageType.SETUP: frozenset(
        {
            ObjectType.REQUESTER,
            ObjectType.FLOW_FILTER,
            ObjectType.MODULE_CHAIN,
            ObjectType.LIFETIME,
            ObjectType.NODE_SELECTION,
        }
    ),
    MessageType.TEARDOWN: frozenset({ObjectType.REQUESTER}),
    MessageType.PROBE: frozenset(
        {ObjectType.REQUESTER, ObjectType.FLOW_FILTER, ObjectType.NODE_SELECTION}
    ),
    MessageType.ACK: frozenset(),
    MessageType.ERROR: frozenset({ObjectType.ERROR}),
    MessageType.PROBE_RESPONSE: frozenset({ObjectType.NODE_INFO}),
    MessageType.CHALLENGE: frozenset({ObjectType.REQUESTER, ObjectType.FLOW_FILTER}),
    MessageType.CHALLENGE_RESPONSE: frozenset(),
}
REQUIRED[MessageType.REFRESH] = REQUIRED[MessageType.SETUP]
OPTIONAL: dict[MessageType, frozenset[ObjectType]] = {
    t: frozenset({ObjectType.AUTH}) for t in MessageType
}
OPTIONAL[MessageType.ACK] = frozenset(
    {ObjectType.LIFETIME, ObjectType.NODE_SELECTION, ObjectType.AUTH}
)
