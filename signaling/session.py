"""The requester's side of a session, as one transition table; pure, time passed in.

    s = RequesterSession(description)
    send(sign(s.open(now), key))                      # SETUP
    ... s.receive(decode(data), now, authenticated=ok)     # ACK / ERROR; ok: verify() passed
    ... at s.deadline(): for m in s.poll(now): send(sign(m, key))   # retransmits, REFRESH
    send(sign(s.close(now), key))                     # TEARDOWN (None if nothing to tear down)

The caller owns the socket and the clock; this says what to send and when. `now` is
wall-clock seconds (time.time()), since it also stamps the messages. Every transmission
has a fresh nonce and timestamp; a retransmission keeps its request's sequence number,
and an answer counts only if it echoes the session id, sequence number and the nonce
of one of that request's transmissions.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from signaling import wire
from signaling.errors import UNSIGNED_CODES, SignalingUsageError
from signaling.messages import (
    Ack,
    ErrorReply,
    Message,
    Refresh,
    Request,
    Setup,
    Teardown,
)
from signaling.values import Description
from signaling.wire import MessageType

NonceSource = Callable[[int], bytes]


class SessionState(enum.Enum):
    IDLE = "idle"
    SETUP_SENT = "setup-sent"
    ESTABLISHED = "established"
    REFRESH_SENT = "refresh-sent"
    TEARDOWN_SENT = "teardown-sent"
    CLOSED = "closed"


class Trigger(enum.Enum):
    OPEN = "open"  # the caller starts the session
    CLOSE = "close"  # the caller ends it
    ACK = "ack"  # a matching ACK arrived
    ERROR = "error"  # a matching ERROR arrived
    RETRANSMIT_DUE = "retransmit-due"  # no answer within the retransmission time-out
    GIVE_UP = "give-up"  # no answer after the last transmission
    REFRESH_DUE = "refresh-due"  # a fraction of the lifetime has passed
    EXPIRED = "expired"  # the lifetime has passed without a refresh being answered


class Outcome(enum.Enum):
    """Why a session is CLOSED."""

    TORN_DOWN = "torn down"
    REFUSED = "refused"  # an ERROR answered (see RequesterSession.error)
    NO_ANSWER = "no answer"
    EXPIRED = "expired"
    NOT_OPENED = "not opened"


@dataclass(frozen=True)
class Transition:
    next: SessionState
    send: MessageType | None = None  # a new request of this type
    retransmit: bool = False  # send the outstanding request again
    outcome: Outcome | None = None  # set when `next` is CLOSED


S, T = SessionState, Trigger
TRANSITIONS: dict[tuple[SessionState, Trigger], Transition] = {
    (S.IDLE, T.OPEN): Transition(S.SETUP_SENT, send=MessageType.SETUP),
    (S.IDLE, T.CLOSE): Transition(S.CLOSED, outcome=Outcome.NOT_OPENED),
    (S.SETUP_SENT, T.ACK): Transition(S.ESTABLISHED),
    (S.SETUP_SENT, T.ERROR): Transition(S.CLOSED, outcome=Outcome.REFUSED),
    (S.SETUP_SENT, T.RETRANSMIT_DUE): Transition(S.SETUP_SENT, retransmit=True),
    (S.SETUP_SENT, T.GIVE_UP): Transition(S.CLOSED, outcome=Outcome.NO_ANSWER),
    # The SETUP may have been installed with its answer lost: tear it down to be sure.
    (S.SETUP_SENT, T.CLOSE): Transition(S.TEARDOWN_SENT, send=MessageType.TEARDOWN),
    (S.ESTABLISHED, T.REFRESH_DUE): Transition(S.REFRESH_SENT, send=MessageType.REFRESH),
    (S.ESTABLISHED, T.EXPIRED): Transition(S.CLOSED, outcome=Outcome.EXPIRED),
    (S.ESTABLISHED, T.CLOSE): Transition(S.TEARDOWN_SENT, send=MessageType.TEARDOWN),
    (S.REFRESH_SENT, T.ACK): Transition(S.ESTABLISHED),
    (S.REFRESH_SENT, T.ERROR): Transition(S.CLOSED, outcome=Outcome.REFUSED),
    # A refresh is retried until the session's lifetime runs out, not a number of times.
    (S.REFRESH_SENT, T.RETRANSMIT_DUE): Transition(S.REFRESH_SENT, retransmit=True),
    (S.REFRESH_SENT, T.EXPIRED): Transition(S.CLOSED, outcome=Outcome.EXPIRED),
    (S.REFRESH_SENT, T.CLOSE): Transition(S.TEARDOWN_SENT, send=MessageType.TEARDOWN),
    (S.TEARDOWN_SENT, T.ACK): Transition(S.CLOSED, outcome=Outcome.TORN_DOWN),
    (S.TEARDOWN_SENT, T.ERROR): Transition(S.CLOSED, outcome=Outcome.REFUSED),
    (S.TEARDOWN_SENT, T.RETRANSMIT_DUE): Transition(S.TEARDOWN_SENT, retransmit=True),
    # Unanswered, the session still ends at the responder when its lifetime runs out.
    (S.TEARDOWN_SENT, T.GIVE_UP): Transition(S.CLOSED, outcome=Outcome.NO_ANSWER),
    (S.TEARDOWN_SENT, T.CLOSE): Transition(S.TEARDOWN_SENT),
    (S.CLOSED, T.CLOSE): Transition(S.CLOSED),
}
del S, T


@dataclass(frozen=True)
class Timers:
    """Retransmission and refresh timing, in seconds."""

    rto: float = 1.0  # first retransmission time-out
    backoff: float = 2.0  # each further time-out is this much longer ...
    max_rto: float = 8.0  # ... up to this
    max_transmissions: int = 5  # of a SETUP, TEARDOWN or PROBE, then give up
    refresh_fraction: float = 1 / 3  # refresh when this much of the lifetime has passed

    def __post_init__(self) -> None:
        if not (0 < self.rto <= self.max_rto and self.backoff >= 1):
            raise SignalingUsageError("timers need 0 < rto <= max_rto and backoff >= 1")
        if self.max_transmissions < 1 or not 0 < self.refresh_fraction < 1:
            raise SignalingUsageError("max_transmissions >= 1, 0 < refresh_fraction < 1")

    def timeout(self, transmissions: int) -> float:
        """Return how long to wait for an answer after the `transmissions`-th send."""
        return min(self.rto * self.backoff ** (transmissions - 1), self.max_rto)


@dataclass
class Pending:
    """The request awaiting an answer: its sequence number and every transmission."""

    kind: MessageType
    sequence: int
    sent: dict[bytes, float] = field(default_factory=dict)  # nonce -> when
    retransmit_at: float = 0.0

    def answered_by(self, session_id: int, message: Message) -> bool:
        """Return True if `message` answers this request (echoes one transmission)."""
        return (
            message.session_id == session_id
            and message.sequence == self.sequence
            and message.nonce in self.sent
        )


def random_id(nonces: NonceSource) -> int:
    """Return a random non-zero 64-bit session id drawn from `nonces`."""
    while True:
        value = int.from_bytes(nonces(8), "big")
        if value:
            return value


def accept_answer(message: Message, signed: bool, authenticated: bool) -> bool:
    """Return True if an answer may be acted on: a requester that signs its requests
    acts only on signed answers, except the ERRORs a responder cannot sign."""
    if authenticated or not signed:
        return True
    return isinstance(message, ErrorReply) and message.code in UNSIGNED_CODES


class RequesterSession:
    """One session as its requester sees it (see the module's docstring).

    `signed`: the caller signs what it sends, so unsigned answers are not trusted.
    `auto_refresh`: refresh before the lifetime ends (else the session just expires).
    """

    def __init__(
        self,
        description: Description,
        *,
        session_id: int | None = None,
        timers: Timers | None = None,
        nonces: NonceSource = os.urandom,
        auto_refresh: bool = True,
        signed: bool = True,
    ) -> None:
        if not isinstance(description, Description):
            raise SignalingUsageError("a session needs a Description")
        self.description = description
        self.session_id = random_id(nonces) if session_id is None else session_id
        self.timers = timers or Timers()
        self.auto_refresh = auto_refresh
        self.signed = signed
        self._nonces = nonces
        self.state = SessionState.IDLE
        self.sequence = 0
        self.pending: Pending | None = None
        self.lifetime: int | None = None  # as granted by the last ACK
        self.nodes: tuple[int, ...] = ()  # serving the session, in path order
        self.expires: float | None = None
        self.refresh_at: float | None = None
        self.error: ErrorReply | None = None
        self.outcome: Outcome | None = None

    # -- what the caller does --------------------------------------------------------

    def open(self, now: float) -> Setup:
        """Start the session; return the SETUP to send."""
        return self._fire(Trigger.OPEN, now)  # type: ignore[return-value]

    def close(self, now: float) -> Teardown | None:
        """End the session; return the TEARDOWN to send, or None when there is nothing
        to tear down (never opened, already closed, or a TEARDOWN already under way)."""
        return self._fire(Trigger.CLOSE, now)  # type: ignore[return-value]

    def poll(self, now: float) -> list[Request]:
        """Act on every timer due at `now`; return what to send (retransmissions,
        REFRESH), possibly nothing."""
        out = []
        while (trigger := self._due(now)) is not None:
            message = self._fire(trigger, now)
            if message is not None:
                out.append(message)
        return out

    def deadline(self) -> float | None:
        """Return when `poll` next has something to do (None: nothing ever)."""
        times = []
        if self.pending is not None:
            times.append(self.pending.retransmit_at)
        if self.state in (SessionState.ESTABLISHED, SessionState.REFRESH_SENT):
            times.append(self.expires)
            if self.state is SessionState.ESTABLISHED and self.auto_refresh:
                times.append(self.refresh_at)
        return min((t for t in times if t is not None), default=None)

    def receive(self, message: Message, now: float, authenticated: bool = False) -> bool:
        """Take an answer that arrived at `now` (`authenticated`: its MAC was verified
        with this requester's key). Return True if it answered the outstanding request
        and was acted on; False if it is ignored (stale, foreign, or untrusted)."""
        pending = self.pending
        if pending is None or not pending.answered_by(self.session_id, message):
            return False
        if not isinstance(message, Ack | ErrorReply):
            return False
        if not accept_answer(message, self.signed, authenticated):
            return False
        if isinstance(message, ErrorReply):
            self.error = message
            self._fire(Trigger.ERROR, now)
            return True
        if pending.kind in (MessageType.SETUP, MessageType.REFRESH):
            sent_at = pending.sent[message.nonce]  # the responder's lifetime began later
            self.lifetime = message.lifetime or self.description.lifetime
            self.nodes = message.nodes or ()
            self.expires = sent_at + self.lifetime
            self.refresh_at = sent_at + self.lifetime * self.timers.refresh_fraction
        self._fire(Trigger.ACK, now)
        return True

    # -- the machine -----------------------------------------------------------------

    def _due(self, now: float) -> Trigger | None:
        live = self.state in (SessionState.ESTABLISHED, SessionState.REFRESH_SENT)
        if live and self.expires is not None and now >= self.expires:
            return Trigger.EXPIRED
        pending = self.pending
        if pending is not None and now >= pending.retransmit_at:
            gives_up = self.state is not SessionState.REFRESH_SENT
            if gives_up and len(pending.sent) >= self.timers.max_transmissions:
                return Trigger.GIVE_UP
            return Trigger.RETRANSMIT_DUE
        if self.state is SessionState.ESTABLISHED and self.auto_refresh:
            if self.refresh_at is not None and now >= self.refresh_at:
                return Trigger.REFRESH_DUE
        return None

    def _fire(self, trigger: Trigger, now: float) -> Request | None:
        try:
            step = TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise SignalingUsageError(
                f"{trigger.value} is not possible in state {self.state.value}"
            ) from None
        self.state = step.next
        message = None
        if step.send is not None:
            self.sequence = self.sequence % wire.U32_MAX + 1
            self.pending = Pending(step.send, self.sequence)
            message = self._transmit(now)
        elif step.retransmit:
            message = self._transmit(now)
        elif trigger in (Trigger.ACK, Trigger.ERROR):
            self.pending = None
        if step.next is SessionState.CLOSED:
            self.pending = None
            self.outcome = self.outcome or step.outcome
        return message

    def _timeout(self, transmissions: int) -> float:
        timeout = self.timers.timeout(transmissions)
        if self.state is SessionState.REFRESH_SENT and self.lifetime:
            # never wait longer than the refresh interval: the lifetime is running out
            timeout = min(timeout, self.lifetime * self.timers.refresh_fraction)
        return timeout

    def _transmit(self, now: float) -> Request:
        pending = self.pending
        assert pending is not None
        nonce = self._nonces(wire.NONCE_SIZE)
        header = {
            "session_id": self.session_id,
            "sequence": pending.sequence,
            "timestamp_ms": int(now * 1000),
            "nonce": nonce,
            "retransmission": bool(pending.sent),
        }
        pending.sent[nonce] = now
        pending.retransmit_at = now + self._timeout(len(pending.sent))
        if pending.kind is MessageType.SETUP:
            return Setup(**header, description=self.description)
        if pending.kind is MessageType.REFRESH:
            return Refresh(**header, description=self.description)
        return Teardown(**header, requester=self.description.requester)
