"""One PROBE and its answer, from the requester's side; pure, time passed in.

    p = ProbeExchange("alice", FlowFilter(dst="10.0.0.2"))
    send(sign(p.start(now), key))
    ... p.receive(decode(data), now, authenticated=ok)      # PROBE-RESPONSE / ERROR
    ... at p.deadline(): for m in p.poll(now): send(sign(m, key))
    p.state, p.response.nodes

Retransmitted like a SETUP (signaling/session.py), with a fresh nonce each time.
"""

from __future__ import annotations

import enum
import os

from signaling import wire
from signaling.errors import SignalingUsageError
from signaling.messages import ErrorReply, Message, Probe, ProbeResponse
from signaling.session import NonceSource, Pending, Timers, accept_answer, random_id
from signaling.values import FlowFilter, NodeSelection
from signaling.wire import MessageType


class ProbeState(enum.Enum):
    SENT = "sent"
    ANSWERED = "answered"
    REFUSED = "refused"
    NO_ANSWER = "no answer"


class ProbeExchange:
    """One PROBE and its answer, retransmitted like a SETUP. Pure, time passed in."""

    def __init__(
        self,
        requester: str,
        flow: FlowFilter,
        nodes: NodeSelection | None = None,
        *,
        timers: Timers | None = None,
        nonces: NonceSource = os.urandom,
        signed: bool = True,
    ) -> None:
        self.requester, self.flow = requester, flow
        self.nodes = nodes or NodeSelection.every()
        self.timers = timers or Timers()
        self.signed = signed
        self._nonces = nonces
        self.session_id = random_id(nonces)
        self.pending = Pending(MessageType.PROBE, 1)
        self.state: ProbeState | None = None
        self.response: ProbeResponse | None = None
        self.error: ErrorReply | None = None

    def start(self, now: float) -> Probe:
        """Return the PROBE to send."""
        if self.state is not None:
            raise SignalingUsageError("this probe was started already")
        self.state = ProbeState.SENT
        return self._transmit(now)

    def poll(self, now: float) -> list[Probe]:
        """Return the retransmission due at `now`, if any (and give up after the last)."""
        if self.state is not ProbeState.SENT or now < self.pending.retransmit_at:
            return []
        if len(self.pending.sent) >= self.timers.max_transmissions:
            self.state = ProbeState.NO_ANSWER
            return []
        return [self._transmit(now)]

    def deadline(self) -> float | None:
        """Return when `poll` next has something to do (None: nothing ever)."""
        return self.pending.retransmit_at if self.state is ProbeState.SENT else None

    def receive(self, message: Message, now: float, authenticated: bool = False) -> bool:
        """Take an answer; return True if it answered this probe and was acted on."""
        if self.state is not ProbeState.SENT:
            return False
        if not self.pending.answered_by(self.session_id, message):
            return False
        if not isinstance(message, ProbeResponse | ErrorReply):
            return False
        if not accept_answer(message, self.signed, authenticated):
            return False
        if isinstance(message, ErrorReply):
            self.error, self.state = message, ProbeState.REFUSED
        else:
            self.response, self.state = message, ProbeState.ANSWERED
        return True

    def _transmit(self, now: float) -> Probe:
        nonce = self._nonces(wire.NONCE_SIZE)
        retransmission = bool(self.pending.sent)
        self.pending.sent[nonce] = now
        self.pending.retransmit_at = now + self.timers.timeout(len(self.pending.sent))
        return Probe(
            session_id=self.session_id,
            sequence=self.pending.sequence,
            timestamp_ms=int(now * 1000),
            nonce=nonce,
            retransmission=retransmission,
            requester=self.requester,
            flow=self.flow,
            nodes=self.nodes,
        )
