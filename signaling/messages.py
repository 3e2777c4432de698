"""The signaling messages, one frozen dataclass per message type.

Every message has the header's fields (session id, sequence number, timestamp, nonce)
and may carry an authentication object. Requests (SETUP, REFRESH, TEARDOWN, PROBE) say
whether they are a retransmission; answers (ACK, ERROR, PROBE-RESPONSE) copy session id,
sequence number and nonce from the request they answer (`answering`). CHALLENGE and
CHALLENGE-RESPONSE are the return-routability check, which goes the other way: from
the responder to the endpoint a request claims, and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from signaling import wire
from signaling.errors import Echo, ErrorCode, SignalingUsageError
from signaling.values import (
    Auth,
    Description,
    FlowFilter,
    NodeInfo,
    NodeSelection,
    check_requester,
    require,
    require_uint,
    utf8,
)
from signaling.wire import MessageType


@dataclass(frozen=True, kw_only=True)
class _Message:
    TYPE: ClassVar[MessageType]

    session_id: int
    sequence: int
    timestamp_ms: int
    nonce: bytes
    auth: Auth | None = None

    def __post_init__(self) -> None:
        require_uint("session id", self.session_id, wire.U64_MAX)
        require_uint("sequence number", self.sequence, wire.U32_MAX)
        require_uint("timestamp", self.timestamp_ms, wire.U64_MAX)
        require(
            isinstance(self.nonce, bytes) and len(self.nonce) == wire.NONCE_SIZE,
            f"the nonce is {wire.NONCE_SIZE} bytes",
        )
        require(self.auth is None or isinstance(self.auth, Auth), "auth must be an Auth")

    @property
    def echo(self) -> Echo:
        """Return what an answer to this message copies from it."""
        return Echo(self.TYPE, self.session_id, self.sequence, self.nonce)


@dataclass(frozen=True, kw_only=True)
class _Request(_Message):
    retransmission: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.retransmission, bool), "retransmission is a bool")
        require(self.session_id != 0, "a request's session id is not 0")


@dataclass(frozen=True, kw_only=True)
class _SessionRequest(_Request):
    description: Description

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.description, Description), "description must be a Description")

    @property
    def requester(self) -> str:
        return self.description.requester


@dataclass(frozen=True, kw_only=True)
class Setup(_SessionRequest):
    """Ask for the session `description`; answered by ACK or ERROR."""

    TYPE: ClassVar[MessageType] = MessageType.SETUP


@dataclass(frozen=True, kw_only=True)
class Refresh(_SessionRequest):
    """Keep a session alive; carries its whole description, like SETUP, so a responder
    that lost the session (a restart) can rebuild it."""

    TYPE: ClassVar[MessageType] = MessageType.REFRESH


@dataclass(frozen=True, kw_only=True)
class Teardown(_Request):
    """End the session `session_id` of `requester`; answered by ACK or ERROR."""

    TYPE: ClassVar[MessageType] = MessageType.TEARDOWN
    requester: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_requester(self.requester)


@dataclass(frozen=True, kw_only=True)
class Probe(_Request):
    """Ask what the selected NetServ nodes on `flow`'s path offer; answered by
    PROBE-RESPONSE or ERROR. Creates no session."""

    TYPE: ClassVar[MessageType] = MessageType.PROBE
    requester: str
    flow: FlowFilter
    nodes: NodeSelection

    def __post_init__(self) -> None:
        super().__post_init__()
        check_requester(self.requester)
        require(isinstance(self.flow, FlowFilter), "flow must be a FlowFilter")
        require(isinstance(self.nodes, NodeSelection), "nodes must be a NodeSelection")


def _answer_fields(to: _Message | Echo, timestamp_ms: int) -> dict[str, object]:
    echo = to.echo if isinstance(to, _Message) else to
    return {
        "session_id": echo.session_id,
        "sequence": echo.sequence,
        "nonce": echo.nonce,
        "timestamp_ms": timestamp_ms,
    }


@dataclass(frozen=True, kw_only=True)
class Ack(_Message):
    """Success. Answering SETUP or REFRESH it gives the granted `lifetime` and the
    datapath ids of the nodes serving the session, in path order (`nodes`); answering
    TEARDOWN it carries neither."""

    TYPE: ClassVar[MessageType] = MessageType.ACK
    lifetime: int | None = None
    nodes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            (self.lifetime is None) == (self.nodes is None),
            "an ACK gives both lifetime and nodes (SETUP, REFRESH) or neither (TEARDOWN)",
        )
        if self.lifetime is not None:
            require_uint("lifetime", self.lifetime, wire.MAX_LIFETIME, lo=1)
            require(isinstance(self.nodes, tuple | list), "nodes is a tuple of datapath ids")
            object.__setattr__(self, "nodes", NodeSelection.named(*self.nodes).dpids)

    @classmethod
    def answering(
        cls,
        request: _Message | Echo,
        timestamp_ms: int,
        lifetime: int | None = None,
        nodes: tuple[int, ...] | None = None,
    ) -> Ack:
        """Return the ACK of `request`."""
        return cls(**_answer_fields(request, timestamp_ms), lifetime=lifetime, nodes=nodes)


@dataclass(frozen=True, kw_only=True)
class ErrorReply(_Message):
    """Refusal or failure: a numeric `code` (ErrorCode when known) and a short reason."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_uint("error code", self.code, 0xFFFF)
        if self.code in ErrorCode._value2member_map_:
            object.__setattr__(self, "code", ErrorCode(self.code))
        utf8("reason", self.reason)

    @classmethod
    def answering(
        cls, request: _Message | Echo, timestamp_ms: int, code: ErrorCode, reason: str
    ) -> ErrorReply:
        """Return the ERROR answering `request` (a message, or the `echo` of a
        SignalingProtocolError). A reason too long for the wire is cut at a character
        boundary."""
        raw = reason.encode(errors="replace")[: wire.MAX_STRING]
        reason = raw.decode(errors="ignore")
        return cls(**_answer_fields(request, timestamp_ms), code=code, reason=reason)


@dataclass(frozen=True, kw_only=True)
class ProbeResponse(_Message):
    """One NodeInfo per selected NetServ node on the path, in path order. `truncated`:
    more nodes or modules were there than fit in one message."""

    TYPE: ClassVar[MessageType] = MessageType.PROBE_RESPONSE
    nodes: tuple[NodeInfo, ...]
    truncated: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.nodes, tuple | list), "nodes is a tuple of NodeInfos")
        require(isinstance(self.truncated, bool), "truncated is a bool")
        nodes = tuple(self.nodes)
        require(1 <= len(nodes) <= wire.MAX_PATH_NODES, "a PROBE-RESPONSE lists 1..16 nodes")
        require(all(isinstance(n, NodeInfo) for n in nodes), "nodes holds NodeInfos")
        object.__setattr__(self, "nodes", nodes)

    @classmethod
    def answering(
        cls,
        request: _Message | Echo,
        timestamp_ms: int,
        nodes: tuple[NodeInfo, ...],
        truncated: bool = False,
    ) -> ProbeResponse:
        """Return the PROBE-RESPONSE of `request`."""
        return cls(**_answer_fields(request, timestamp_ms), nodes=nodes, truncated=truncated)


@dataclass(frozen=True, kw_only=True)
class Challenge(_Request):
    """The return-routability check of the request (`session_id`, `sequence`) by which
    `requester` claims `flow`: sent by the responder to the claimed endpoint address.
    Its nonce is the cookie, which only that address's CHALLENGE-RESPONSE may echo."""

    TYPE: ClassVar[MessageType] = MessageType.CHALLENGE
    requester: str
    flow: FlowFilter

    def __post_init__(self) -> None:
        super().__post_init__()
        check_requester(self.requester)
        require(isinstance(self.flow, FlowFilter), "flow must be a FlowFilter")

    @property
    def cookie(self) -> bytes:
        return self.nonce


@dataclass(frozen=True, kw_only=True)
class ChallengeResponse(_Message):
    """The claimed endpoint's answer to a CHALLENGE: it echoes the cookie (the nonce)."""

    TYPE: ClassVar[MessageType] = MessageType.CHALLENGE_RESPONSE

    @classmethod
    def answering(cls, challenge: Challenge | Echo, timestamp_ms: int) -> ChallengeResponse:
        """Return the CHALLENGE-RESPONSE to `challenge`."""
        return cls(**_answer_fields(challenge, timestamp_ms))


Request = Union[Setup, Refresh, Teardown, Probe]  # noqa: UP007
Answer = Union[Ack, ErrorReply, ProbeResponse]  # noqa: UP007
Routability = Union[Challenge, ChallengeResponse]  # noqa: UP007
Message = Union[Request, Answer, Routability]  # noqa: UP007
MESSAGE_CLASSES: dict[MessageType, type[_Message]] = {
    c.TYPE: c
    for c in (
        Setup,
        Refresh,
        Teardown,
        Probe,
        Ack,
        ErrorReply,
        ProbeResponse,
        Challenge,
        ChallengeResponse,
    )
}

__all__ = [
    "Ack",
    "Answer",
    "Challenge",
    "ChallengeResponse",
    "ErrorReply",
    "MESSAGE_CLASSES",
    "Message",
    "Probe",
    "ProbeResponse",
    "Refresh",
    "Request",
    "Routability",
    "SignalingUsageError",
    "Setup",
    "Teardown",
]
