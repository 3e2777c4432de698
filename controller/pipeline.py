"""Flow rules of the NetServ pipeline, as pure functions returning message descriptions.

table 0 (classify): link probes (LLDP) → the controller;
                    frames back from an agent → forward (they never teach MACs);
                    signaling (UDP to port 20051) → the controller, through a meter;
                    a session's flow → push its tag, out to the agent's port;
                    everything else → learn.
table 1 (learn):    known (in_port, eth_src) → forward; a miss is copied to the
                    controller, which learns the source, and goes on to forward.
table 2 (forward):  learned eth_dst → its port; a miss → the controller, which floods.
Once a host has been seen, its traffic never leaves the datapath.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller import tables as t
from controller.discovery import ETH_TYPE_LLDP
from controller.match import ETH_IPV4, ETH_IPV6, PROTO_UDP
from controller.messages import (
    Barrier,
    FlowAdd,
    FlowDelete,
    Message,
    MeterAdd,
    MeterDelete,
    Output,
    PacketOut,
    PushVlan,
    ToController,
    as_match,
)
from controller.sessions import Session
from signaling.wire import SIGNALING_PORT

LEARNED_IDLE_TIMEOUT = 300  # a host silent this long is learned again when it speaks
# In a session's last stretch the switch drops its detour by itself this long after the
# session should have ended (the controller ends it first), so a controller that dies
# cannot leave traffic detoured; before that the capped timer is re-armed.
HARD_TIMEOUT_GRACE = 10
BROADCAST_BIT = 0x01


def hard_timeout(session: Session, now: float, cap: int = t.HARD_TIMEOUT_CAP) -> int:
    """Return the hard timeout (s) for the session's detour installed at `now`.

    The rest of the lifetime plus grace, rounded down so the switch never keeps the
    detour past what the agent keeps the chain (lifetime + the same grace), and at
    most `cap`, which the 16-bit field holds.
    """
    return max(1, min(cap, int(session.expires - now) + HARD_TIMEOUT_GRACE))


def rearm_margin(cap: int) -> float:
    """Return how long before a capped timer runs out the controller re-arms it."""
    return min(float(t.REARM_MARGIN), cap / 2)


def switch_reset() -> list[Message]:
    """Return the messages that wipe NetServ's flows and install the base pipeline."""
    return [
        FlowDelete(cookie=t.COOKIE_PREFIX, cookie_mask=t.COOKIE_PREFIX_MASK),
        *signaling_punt(),
        FlowAdd(t.CLASSIFY, t.CLASSIFY_MISS.low, (), goto=t.LEARN, cookie=t.cookie(t.KIND_BASE)),
        FlowAdd(
            t.LEARN,
            t.LEARN_MISS.low,
            (),
            actions=(ToController(),),
            goto=t.FORWARD,
            cookie=t.cookie(t.KIND_BASE),
        ),
        FlowAdd(
            t.FORWARD,
            t.FORWARD_MISS.low,
            (),
            actions=(ToController(),),
            cookie=t.cookie(t.KIND_BASE),
        ),
        discovery_punt(),
        Barrier(),
    ]


def signaling_punt() -> list[Message]:
    """Return the signaling meter (made anew: a switch keeps meters across reconnects)
    and the flows that send signaling datagrams, IPv4 and IPv6, to the controller
    through it. They sit above every session's detour, so no session swallows them."""
    return [
        MeterDelete(t.SIGNALING_METER),
        MeterAdd(t.SIGNALING_METER, t.SIGNALING_RATE, t.SIGNALING_BURST),
        *(
            FlowAdd(
                t.CLASSIFY,
                t.SIGNALING.low,
                as_match({"eth_type": eth_type, "ip_proto": PROTO_UDP, "udp_dst": SIGNALING_PORT}),
                actions=(ToController(),),
                cookie=t.cookie(t.KIND_SIGNALING),
                meter=t.SIGNALING_METER,
            )
            for eth_type in (ETH_IPV4, ETH_IPV6)
        ),
    ]


def discovery_punt() -> FlowAdd:
    """Return the flow that sends every link probe (LLDP) to the controller, and only there."""
    return FlowAdd(
        t.CLASSIFY,
        t.DISCOVERY.low,
        as_match({"eth_type": ETH_TYPE_LLDP}),
        actions=(ToController(),),
        cookie=t.cookie(t.KIND_DISCOVERY),
    )


def probe_out(port: int, frame: bytes) -> PacketOut:
    """Return the packet-out that sends a link probe out of `port`."""
    return PacketOut(in_port=None, actions=(Output(port),), data=frame)


def agent_return(agent_port: int) -> list[Message]:
    """Return the flow that sends frames coming back from an agent on to forwarding."""
    return [
        FlowAdd(
            t.CLASSIFY,
            t.AGENT_RETURN.low,
            as_match({"in_port": agent_port}),
            goto=t.FORWARD,
            cookie=t.cookie(t.KIND_BASE),
        )
    ]


def session_detour(session: Session, agent_port: int, hard_timeout: int) -> FlowAdd:
    """Return the detour flow of `session`: its match → push its tag → the agent's port.

    Adding it again while it is installed re-arms its hard timeout and keeps its counters.
    """
    if not 1 <= hard_timeout <= t.HARD_TIMEOUT_MAX:
        raise ValueError(f"hard timeout {hard_timeout} does not fit its 16-bit field")
    return FlowAdd(
        t.CLASSIFY,
        session.priority,
        session.match.fields,
        actions=(PushVlan(session.tag), Output(agent_port)),
        cookie=session.cookie,
        hard_timeout=hard_timeout,
        notify_removal=True,
    )


def session_install(session: Session, agent_port: int, hard_timeout: int) -> list[Message]:
    """Return the messages that install (or re-arm) the session's detour, confirmed."""
    return [session_detour(session, agent_port, hard_timeout), Barrier()]


def sessions_rearm(detours: list[tuple[Session, int]], agent_port: int) -> list[Message]:
    """Return one batch re-adding each (session, hard timeout) detour, confirmed once."""
    return [session_detour(s, agent_port, hard) for s, hard in detours] + [Barrier()]


def session_remove(session: Session) -> list[Message]:
    """Return the messages that delete every flow the session owns, on any table."""
    return [FlowDelete(cookie=session.cookie, cookie_mask=t.COOKIE_ALL), Barrier()]


def is_multicast(mac: str) -> bool:
    """Return True for group (broadcast or multicast) MAC addresses."""
    return bool(int(mac[:2], 16) & BROADCAST_BIT)


def learn(
    macs: dict[str, int], in_port: int, eth_src: str, agent_ports: Iterable[int]
) -> list[Message]:
    """Learn `eth_src` at `in_port` into `macs` (mutated); return the flows to install.

    Frames that come back from an agent never teach where a host lives: the agent is
    not a host, and learning there would detour every later frame through it. A host
    that moves is learned again: its flows for the port it left are deleted first, or
    a move back to that port would be neither seen nor forwarded to until they idle out.
    """
    if in_port in set(agent_ports) or is_multicast(eth_src):
        return []
    before = macs.get(eth_src)
    macs[eth_src] = in_port
    moved: list[Message] = []
    if before is not None and before != in_port:
        moved += (
            FlowDelete(
                cookie=t.cookie(t.KIND_LEARNED),
                cookie_mask=t.COOKIE_ALL,
                table=t.LEARN,
                match=as_match({"eth_src": eth_src}),
            ),
            Barrier(),  # the delete must not reach the flow added next
        )
    return moved + [
        FlowAdd(
            t.LEARN,
            t.LEARNED_SRC.low,
            as_match({"in_port": in_port, "eth_src": eth_src}),
            goto=t.FORWARD,
            cookie=t.cookie(t.KIND_LEARNED),
            idle_timeout=LEARNED_IDLE_TIMEOUT,
        ),
        # No idle timeout: a host that only receives must stay reachable in the datapath.
        FlowAdd(
            t.FORWARD,
            t.LEARNED_DST.low,
            as_match({"eth_dst": eth_src}),
            actions=(Output(in_port),),
            cookie=t.cookie(t.KIND_LEARNED),
        ),
    ]


def forward_missed(
    macs: dict[str, int],
    in_port: int,
    eth_dst: str,
    ports: Iterable[int],
    agent_ports: Iterable[int],
    data: bytes,
) -> PacketOut:
    """Return the packet-out for a frame that missed forwarding: to its port, or flooded.

    Flooding lists ports explicitly (not OFPP_FLOOD) so agent ports never see traffic
    that no session asked for.
    """
    known = None if is_multicast(eth_dst) else macs.get(eth_dst)
    if known is not None and known != in_port:
        outs: list[int] = [known]
    elif known == in_port:
        outs = []
    else:
        skip = set(agent_ports) | {in_port}
        outs = sorted(p for p in ports if p not in skip)
    return PacketOut(in_port=in_port, actions=tuple(Output(p) for p in outs), data=data)
