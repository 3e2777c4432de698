"""The signaling protocol's error codes and its two exception kinds.

`SignalingUsageError`: the caller asked the library for something the protocol cannot
express (a chain of nine modules, a port without a protocol). `SignalingProtocolError`:
the peer sent bytes that are not a valid message; it carries the ERROR code to answer
with and, when the header was readable, what the answer must echo.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorCode(enum.IntEnum):
    """ERROR codes (docs/signaling.md, "Error codes"). The hundreds say who is at fault."""

    # 1xx: the message itself
    MALFORMED = 100
    UNSUPPORTED_VERSION = 101
    UNKNOWN_MESSAGE_TYPE = 102
    UNKNOWN_OBJECT = 103
    # 2xx: who sent it, and when
    BAD_AUTH = 200
    REPLAY = 201
    STALE_TIMESTAMP = 202
    UNKNOWN_REQUESTER = 203
    # 3xx: what it asks for is not allowed or not valid
    NOT_ENDPOINT = 300
    MODULE_NOT_ALLOWED = 301
    QUOTA_EXCEEDED = 302
    INVALID_REQUEST = 303
    NOT_ROUTABLE = 304
    # 4xx: the session's state
    UNKNOWN_SESSION = 400
    CONFLICT = 401
    # 5xx: the network and its parts (trying again later may work)
    NO_NETSERV_NODE = 500
    NODE_UNAVAILABLE = 501
    PART_FAILED = 502
    INTERNAL_ERROR = 503


# A responder answers these before it has checked (or could check) the requester's key,
# so it cannot sign them; a requester accepts them unsigned (docs/signaling.md).
UNSIGNED_CODES = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.UNKNOWN_MESSAGE_TYPE,
        ErrorCode.UNKNOWN_OBJECT,
        ErrorCode.BAD_AUTH,
        ErrorCode.UNKNOWN_REQUESTER,
    }
)


@dataclass(frozen=True)
class Echo:
    """What an answer copies from the message it answers (read from its header)."""

    message_type: int
    session_id: int
    sequence: int
    nonce: bytes

    @property
    def answerable(self) -> bool:
        """Return True if the message may be answered: requests only (high bit clear),
        so that no ERROR ever answers an answer."""
        return not self.message_type & 0x80


class SignalingError(Exception):
    """Base of the signaling library's own exceptions."""


class SignalingUsageError(SignalingError):
    """The caller asked for a message (or an operation) the protocol does not allow."""


class SignalingProtocolError(SignalingError):
    """The peer sent something that is not a valid message.

    `code` is the ErrorCode to answer with, `reason` a short text for the answer, and
    `echo` what the answer copies from the offending header. Answer only when `echo` is
    not None (the header could be read) and `echo.answerable` (it came in a request).
    """

    def __init__(self, code: ErrorCode, reason: str, echo: Echo | None = None) -> None:
        super().__init__(f"{code.name.lower()} ({int(code)}): {reason}")
        self.code = code
        self.reason = reason
        self.echo = echo
