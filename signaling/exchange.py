"""One request and its answer, from the requester's side; pure, time passed in.

    x = Exchange(lambda header: Teardown(**header, requester="alice"), session_id, sequence)
    send(sign(x.start(now), key))
    ... x.receive(decode(data), now, authenticated=ok)      # ACK / ERROR
    ... at x.deadline(): for m in x.poll(now): send(sign(m, key))
    x.state, x.answer

For a REFRESH or TEARDOWN sent on its own, by a process that did not send the session's
earlier requests (`netserv signal refresh`), and for a PROBE (`signaling.probe`, built
on this): retransmitted like a SETUP, with the same sequence number and a fresh nonce
and timestamp each time. `sequence_from_clock` gives such a request a sequence number
above any its session used before.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import ClassVar

from signaling import wire
from signaling.errors import SignalingUsageError
from signaling.messages import Ack, Answer, ErrorReply, Message, Request
from signaling.session import NonceSource, Pending, Timers, accept_answer
from signaling.wire import MessageType

# Sequence numbers from the clock count milliseconds from here (2025-01-01 UTC), so two
# requests of a session sent by separate processes one after the other differ, and are
# above the 1, 2, 3 ... a session's own requester uses. They wrap every 49.7 days: a
# request sent within a minute after a wrap (as long as a responder keeps an answer)
# may be taken for a late copy of the one before it and go unanswered.
SEQUENCE_EPOCH = 1_735_689_600


def sequence_from_clock(now: float) -> int:
    """Return a sequence number (2 .. 2^32 - 1) for a request sent at `now` (seconds
    since the Unix epoch) by a process that does not know its session's last one."""
    return int((now - SEQUENCE_EPOCH) * 1000) % (wire.U32_MAX - 1) + 2


class ExchangeState(enum.Enum):
    SENT = "sent"
    ANSWERED = "answered"
    REFUSED = "refused"  # an ERROR answered
    NO_ANSWER = "no answer"


class Exchange:
    """One request, built by `build` from its header fields, and its answer: one of
    ANSWERS (an ERROR among them)."""

    ANSWERS: ClassVar[tuple[type[Answer], ...]] = (Ack, ErrorReply)

    def __init__(
        self,
        build: Callable[[dict[str, object]], Request],
        session_id: int,
        sequence: int,
        *,
        timers: Timers | None = None,
        nonces: NonceSource = os.urandom,
        signed: bool = True,
        kind: MessageType = MessageType.SETUP,  # what the request is; its timing is a SETUP's
    ) -> None:
        self.build = build
        self.session_id = session_id
        self.timers = timers or Timers()
        self.signed = signed
        self._nonces = nonces
        self.pending = Pending(kind, sequence)
        self.state: ExchangeState | None = None
        self.answer: Answer | None = None

    @property
    def error(self) -> ErrorReply | None:
        """Return the ERROR that answered, if one did."""
        return self.answer if isinstance(self.answer, ErrorReply) else None

    def start(self, now: float) -> Request:
        """Return the request to send."""
        if self.state is not None:
            raise SignalingUsageError("this exchange was started already")
        self.state = ExchangeState.SENT
        return self._transmit(now)

    def poll(self, now: float) -> list[Request]:
        """Return the retransmission due at `now`, if any (and give up after the last)."""
        if self.state is not ExchangeState.SENT or now < self.pending.retransmit_at:
            return []
        if len(self.pending.sent) >= self.timers.max_transmissions:
            self.state = ExchangeState.NO_ANSWER
            return []
        return [self._transmit(now)]

    def deadline(self) -> float | None:
        """Return when `poll` next has something to do (None: nothing ever)."""
        return self.pending.retransmit_at if self.state is ExchangeState.SENT else None

    def receive(self, message: Message, now: float, authenticated: bool = False) -> bool:
        """Take an answer; return True if it answered this request and was acted on."""
        if self.state is not ExchangeState.SENT:
            return False
        if not self.pending.answered_by(self.session_id, message):
            return False
        if not isinstance(message, self.ANSWERS):
            return False
        if not accept_answer(message, self.signed, authenticated):
            return False
        self.answer = message
        refused = isinstance(message, ErrorReply)
        self.state = ExchangeState.REFUSED if refused else ExchangeState.ANSWERED
        return True

    def _transmit(self, now: float) -> Request:
        nonce = self._nonces(wire.NONCE_SIZE)
        retransmission = bool(self.pending.sent)
        self.pending.sent[nonce] = now
        self.pending.retransmit_at = now + self.timers.timeout(len(self.pending.sent))
        return self.build(
            {
                "session_id": self.session_id,
                "sequence": self.pending.sequence,
                "timestamp_ms": int(now * 1000),
                "nonce": nonce,
                "retransmission": retransmission,
            }
        )
