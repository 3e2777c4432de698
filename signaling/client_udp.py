"""The on-path signaling client: a UDP socket driving the protocol's pure state machines.

    with SignalingClient("10.0.0.2", key) as client:      # toward the flow's far end
        session = client.setup(description)                # RequesterSession, answered
        ...
        client.close_session(session)                       # TEARDOWN, answered

The socket lives here; what to send and when is decided by `signaling.session`,
`signaling.probe` and `signaling.exchange`, which this only feeds: every datagram that
arrives is decoded, its MAC checked with the requester's key, and handed over. A
requester sends toward the flow's far endpoint, so that the first NetServ switch on
the flow's path hands the request to its controller; the answer comes back from there.

Before that, a CHALLENGE (the controller's return-routability check of a request that
claims this host's address) is answered at once when it is about a session this client
sets up or refreshes (`signaling.routability.claims`), and ignored otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from signaling import wire
from signaling.auth import Key, sign, verify
from signaling.codec import decode, encode
from signaling.errors import SignalingProtocolError
from signaling.exchange import Exchange, sequence_from_clock
from signaling.messages import Challenge, Message, Refresh, Request, Teardown
from signaling.probe import ProbeExchange
from signaling.routability import answer_challenge, claims, is_challenge
from signaling.session import RequesterSession, SessionState, Timers
from signaling.values import Description, FlowFilter, NodeSelection

SLICE = 0.25  # seconds a wait lasts at most, so that `stopped` is noticed soon


class Machine(Protocol):
    def poll(self, now: float) -> list[Request]: ...
    def deadline(self) -> float | None: ...
    def receive(self, message: Message, now: float, authenticated: bool = False) -> bool: ...


def never() -> bool:
    return False


class SignalingClient:
    """Sends signaling to `to`:`port` over UDP and feeds the answers to state machines.

    `key` signs every request (None: unsigned, which a controller with a policy
    refuses). `timers` sets the retransmission schedule (signaling.session.Timers).
    """

    def __init__(
        self,
        to: str,
        key: Key | None = None,
        port: int = wire.SIGNALING_PORT,
        timers: Timers | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.to = (str(ipaddress.ip_address(to)), port)
        self.key = key
        self.timers = timers or Timers()
        self.clock = clock
        family = socket.AF_INET6 if ipaddress.ip_address(to).version == 6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("", 0))
        self.ignored = 0  # datagrams that were no answer to anything outstanding
        self.challenges_answered = 0
        self._mine: dict[int, Description] = {}  # the sessions it speaks for, by id

    def __enter__(self) -> SignalingClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sock.close()

    # --- the requests ------------------------------------------------------------------
    def setup(
        self,
        description: Description,
        session_id: int | None = None,
        keep: bool = False,
        stopped: Callable[[], bool] = never,
    ) -> RequesterSession:
        """Send a SETUP; return the session once answered (ESTABLISHED) or given up on
        (CLOSED, with its `outcome` and `error`). `keep`: it refreshes itself while it
        is driven on (see `keep`)."""
        session = RequesterSession(
            description,
            session_id=session_id,
            timers=self.timers,
            auto_refresh=keep,
            signed=self.key is not None,
        )
        self._mine[session.session_id] = description
        self.send(session.open(self.clock()))
        self.run(session, lambda: session.state is not SessionState.SETUP_SENT, stopped)
        return session

    def keep(
        self,
        session: RequesterSession,
        stopped: Callable[[], bool],
        refreshed: Callable[[RequesterSession], None] = lambda s: None,
    ) -> None:
        """Keep `session` alive (REFRESH before its lifetime runs out) until `stopped()`
        or it closes (refused, expired); call `refreshed` after each answered REFRESH."""
        while session.state is not SessionState.CLOSED and not stopped():
            before = session.expires
            self.pump(session, stopped)
            if session.state is SessionState.ESTABLISHED and session.expires != before:
                refreshed(session)

    def close_session(self, session: RequesterSession) -> RequesterSession:
        """Send the session's TEARDOWN (if it needs one); return it once CLOSED."""
        teardown = session.close(self.clock())
        if teardown is not None:
            self.send(teardown)
            self.run(session, lambda: session.state is SessionState.CLOSED)
        return session

    def refresh(self, description: Description, session_id: int) -> Exchange:
        """Send a REFRESH of session `session_id` on its own; return the answered
        exchange (its `state` and `answer`). A controller that lost the session sets it
        up again from it, after challenging this host: the CHALLENGE is answered."""
        self._mine[session_id] = description
        return self._one(lambda h: Refresh(**h, description=description), session_id)

    def teardown(self, requester: str, session_id: int) -> Exchange:
        """Send a TEARDOWN of session `session_id` on its own; return the answered exchange."""
        return self._one(lambda h: Teardown(**h, requester=requester), session_id)

    def probe(
        self, requester: str, flow: FlowFilter, nodes: NodeSelection | None = None
    ) -> ProbeExchange:
        """Send a PROBE; return the answered exchange (its `response` or `error`)."""
        probe = ProbeExchange(
            requester, flow, nodes, timers=self.timers, signed=self.key is not None
        )
        self.send(probe.start(self.clock()))
        self.run(probe, lambda: probe.deadline() is None)
        return probe

    def _one(self, build: Callable[[dict[str, object]], Request], session_id: int) -> Exchange:
        now = self.clock()
        exchange = Exchange(
            build,
            session_id,
            sequence_from_clock(now),
            timers=self.timers,
            signed=self.key is not None,
        )
        self.send(exchange.start(now))
        self.run(exchange, lambda: exchange.deadline() is None)
        return exchange

    # --- the socket ----------------------------------------------------------------------
    def send(self, message: Request) -> None:
        """Send `message`, signed when there is a key."""
        data = sign(message, self.key) if self.key is not None else encode(message)
        self.sock.sendto(data, self.to)

    def run(
        self, machine: Machine, done: Callable[[], bool], stopped: Callable[[], bool] = never
    ) -> None:
        """Drive `machine` until `done()`, `stopped()`, or it has nothing left to do."""
        while not done() and not stopped() and machine.deadline() is not None:
            self.pump(machine, stopped)

    def pump(self, machine: Machine, stopped: Callable[[], bool] = never) -> bool:
        """Wait until the machine's next deadline for an answer, hand what arrives to it,
        then send what it says is due. Return True when an answer was acted on (the
        wait then ends early, as it does when `stopped()`)."""
        acted = False
        while not acted and not stopped():
            deadline = machine.deadline()
            now = self.clock()
            if deadline is None or now >= deadline:
                break
            acted = self._receive(machine, min(deadline - now, SLICE))
        for message in machine.poll(self.clock()):
            self.send(message)
        return acted

    def _receive(self, machine: Machine, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, sender = self.sock.recvfrom(65535)
        except TimeoutError:
            return False
        if is_challenge(data):
            self._answer_challenge(data, sender)
            return False
        try:
            message = decode(data)
        except SignalingProtocolError:
            self.ignored += 1
            return False
        authenticated = False
        if self.key is not None and message.auth is not None:
            try:
                verify(data, message, self.key.secret)
                authenticated = True
            except SignalingProtocolError:
                pass
        acted = machine.receive(message, self.clock(), authenticated)
        self.ignored += not acted
        return acted

    def _answer_challenge(self, data: bytes, sender: tuple[str, int]) -> None:
        """Answer a CHALLENGE about a session of this client, back to where it came
        from; anything else is ignored, so no one else's claim is ever confirmed."""
        reply = answer_challenge(data, self._claimed, int(self.clock() * 1000))
        if reply is None:
            self.ignored += 1
            return
        self.sock.sendto(reply, sender[:2])
        self.challenges_answered += 1

    def _claimed(self, challenge: Challenge) -> bool:
        description = self._mine.get(challenge.session_id)
        return description is not None and claims(challenge, challenge.session_id, description)
