"""Signing and verifying signaling messages with a requester's key (HMAC-SHA256).

The MAC covers the whole message as sent, header included, with the MAC's own bytes
set to zero. The AUTH object is always the last object and its value a multiple of 4
bytes long, so the MAC is the message's last 32 bytes (docs/signaling.md).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace

from signaling import wire
from signaling.codec import encode
from signaling.errors import ErrorCode, SignalingProtocolError, SignalingUsageError
from signaling.messages import Message
from signaling.values import Auth, require_uint
from signaling.wire import Algorithm

MIN_KEY_SIZE = 16  # bytes; 32 random bytes is what `netserv` provisions


@dataclass(frozen=True)
class Key:
    """A requester's key: its number (`key_id`, for rotation) and the shared secret."""

    key_id: int
    secret: bytes

    def __post_init__(self) -> None:
        require_uint("key id", self.key_id, wire.U32_MAX)
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_KEY_SIZE:
            raise SignalingUsageError(f"a key's secret is at least {MIN_KEY_SIZE} bytes")

    def __repr__(self) -> str:  # never print the secret
        return f"Key(key_id={self.key_id}, secret=<{len(self.secret)} bytes>)"


def _mac(secret: bytes, data: bytes) -> bytes:
    size = Algorithm.HMAC_SHA256.mac_size
    return hmac.new(secret, data[:-size] + bytes(size), hashlib.sha256).digest()


def sign(message: Message, key: Key) -> bytes:
    """Return the bytes of `message` with an AUTH object (HMAC-SHA256 under `key`);
    any AUTH object it had is replaced. Raise SignalingUsageError if it does not fit."""
    blank = Auth(key.key_id, bytes(Algorithm.HMAC_SHA256.mac_size))
    data = encode(replace(message, auth=blank))
    return data[: -len(blank.mac)] + _mac(key.secret, data)


def verify(data: bytes, message: Message, secret: bytes) -> None:
    """Check that `data`, the bytes `message` was decoded from, carries a valid
    HMAC-SHA256 under `secret`. Raise SignalingProtocolError(BAD_AUTH) if not."""
    auth = message.auth
    if auth is None:
        raise SignalingProtocolError(ErrorCode.BAD_AUTH, "the message is not signed")
    if auth.algorithm is not Algorithm.HMAC_SHA256:
        raise SignalingProtocolError(
            ErrorCode.BAD_AUTH, f"algorithm {auth.algorithm.name} is not supported"
        )
    data = bytes(data)
    if len(data) < wire.HEADER_SIZE or data[-len(auth.mac) :] != auth.mac:
        raise SignalingUsageError("`data` are not the bytes `message` was decoded from")
    if not hmac.compare_digest(_mac(secret, data), auth.mac):
        raise SignalingProtocolError(ErrorCode.BAD_AUTH, "the MAC does not match")
