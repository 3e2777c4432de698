"""One PROBE and its answer, from the requester's side; pure, time passed in.

    p = ProbeExchange("alice", FlowFilter(dst="10.0.0.2"))
    send(sign(p.start(now), key))
    ... p.receive(decode(data), now, authenticated=ok)      # PROBE-RESPONSE / ERROR
    ... at p.deadline(): for m in p.poll(now): send(sign(m, key))
    p.state, p.response.nodes

An `Exchange` (signaling/exchange.py) whose request is a PROBE: retransmitted like a
SETUP, with a fresh nonce each time.
"""

from __future__ import annotations

import os
from typing import ClassVar

from signaling.exchange import Exchange
from signaling.messages import Answer, ErrorReply, Probe, ProbeResponse
from signaling.session import NonceSource, Timers, random_id
from signaling.values import FlowFilter, NodeSelection
from signaling.wire import MessageType


class ProbeExchange(Exchange):
    """One PROBE and its answer, retransmitted like a SETUP. Pure, time passed in."""

    ANSWERS: ClassVar[tuple[type[Answer], ...]] = (ProbeResponse, ErrorReply)

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
        super().__init__(
            lambda header: Probe(**header, requester=requester, flow=flow, nodes=self.nodes),
            random_id(nonces),
            1,
            timers=timers,
            nonces=nonces,
            signed=signed,
            kind=MessageType.PROBE,
        )

    @property
    def response(self) -> ProbeResponse | None:
        """Return the PROBE-RESPONSE that answered, if one did."""
        return self.answer if isinstance(self.answer, ProbeResponse) else None
