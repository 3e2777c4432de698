"""The return-routability check's messages, for both of its ends (docs/signaling.md).

No sockets. The responder (the controller) builds a CHALLENGE for a request with
`challenge_for` and sends it to the endpoint address the request claims; the endpoint
(a requester's client) answers the CHALLENGEs of its own requests only:

    reply = answer_challenge(data, lambda c: claims(c, session_id, description), now_ms)
    if reply is not None:
        sock.sendto(reply, sender)  # back to the address and port the CHALLENGE came from

A client runs this on every datagram it receives before its session logic: a CHALLENGE
is not an answer to anything it sent, and must not be taken for one.
"""

from __future__ import annotations

from collections.abc import Callable

from signaling import wire
from signaling.codec import decode, encode
from signaling.errors import SignalingProtocolError
from signaling.messages import Challenge, ChallengeResponse, Refresh, Setup
from signaling.values import Description

__all__ = ["answer_challenge", "challenge_for", "claims", "is_challenge"]


def challenge_for(request: Setup | Refresh, cookie: bytes, timestamp_ms: int) -> Challenge:
    """Return the CHALLENGE that checks `request`: its session id, sequence number,
    requester and flow, with `cookie` (16 random bytes) as its nonce."""
    return Challenge(
        session_id=request.session_id,
        sequence=request.sequence,
        timestamp_ms=timestamp_ms,
        nonce=cookie,
        requester=request.requester,
        flow=request.description.flow,
    )


def is_challenge(data: bytes) -> bool:
    """Return True when `data` starts like a CHALLENGE (magic, version, type), without
    decoding the rest: a cheap test to route datagrams by."""
    return (
        len(data) >= wire.HEADER_SIZE
        and int.from_bytes(data[:2], "big") == wire.MAGIC
        and data[2] == wire.VERSION
        and data[3] == wire.MessageType.CHALLENGE
    )


def claims(challenge: Challenge, session_id: int, description: Description) -> bool:
    """Return True when `challenge` checks a request of the session `session_id` that
    `description` describes: the same session id, requester and flow."""
    return (
        challenge.session_id == session_id
        and challenge.requester == description.requester
        and challenge.flow == description.flow
    )


def answer_challenge(
    data: bytes, mine: Callable[[Challenge], bool], timestamp_ms: int
) -> bytes | None:
    """Return the CHALLENGE-RESPONSE to send back for `data`, or None to stay silent.

    Only a valid CHALLENGE that `mine` accepts (a request this endpoint made itself,
    see `claims`) is answered: anything else, malformed bytes included, gets no answer,
    so an endpoint never confirms a claim on its flow that someone else made.
    """
    try:
        message = decode(data)
    except SignalingProtocolError:
        return None
    if not isinstance(message, Challenge) or not mine(message):
        return None
    return encode(ChallengeResponse.answering(message, timestamp_ms))
