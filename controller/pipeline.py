"""Flow rules of the NetServ pipeline, as pure functions returning message descriptions.

table 0 (classify): link probes (LLDP) → the controller;
                    frames back from an agent → forward (they never teach MACs);
                    signaling (UDP to port 20051) → the controller, through a meter;
                    a session's flow → push its tag, out to the agent's port (a
                    detour); for a chain of observe-only modules, push its tag, out
                    to the agent's port, pop the tag, on to learn (a copy);
                    everything else → learn.
table 1 (learn):    known (in_port, eth_src) → forward; a miss is copied to the
                    controller, which learns the source, and goes on to forward.
table 2 (forward):  learned eth_dst → its port; a miss → the controller, which floods.
Once a host has been seen, its traffic never leaves the datapath.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping

from agentproto.limits import EXPIRY_GRACE
from agentproto.tags import tag_tci
from controller import tables as t
from controller.discovery import ETH_TYPE_LLDP
from controller.match import ETH_IPV4, ETH_IPV6, PROTO_UDP
from controller.messages import (
    Action,
    Barrier,
    FlowAdd,
    FlowDelete,
    FlowStats,
    FlowStatsRequest,
    Message,
    MeterAdd,
    MeterDelete,
    Output,
    PacketOut,
    PopVlan,
    PushVlan,
    ToController,
    as_match,
)
from controller.sessions import Session
from signaling.wire import SIGNALING_PORT

LEARNED_IDLE_TIMEOUT = 300  # a host silent this long is learned again when it speaks
BROADCAST_BIT = 0x01


def hard_timeout(session: Session, now: float, cap: int = t.HARD_TIMEOUT_CAP) -> int:
    """Return the hard timeout (s) for the session's detour installed at `now`.

    The rest of the lifetime plus EXPIRY_GRACE, rounded down so the switch never keeps
    the detour past what the agent keeps the chain (lifetime + the same grace,
    `agentproto/limits.py`): a controller that dies cannot leave traffic detoured. At
    most `cap`, which the 16-bit field holds; before a capped timer runs out the
    controller re-arms it.
    """
    return max(1, min(cap, int(session.expires - now) + EXPIRY_GRACE))


def rearm_margin(cap: int) -> float:
    """Return how long before a capped timer runs out the controller re-arms it."""
    return min(float(t.REARM_MARGIN), cap / 2)


def base_flows(agent_port: int | None) -> list[FlowAdd]:
    """Return the flows every NetServ switch holds: each table's miss, the link-probe
    and signaling punts, and the agent return once the node's agent port is known.
    The signaling punt needs its meter, which `reconcile` and `reinstall` make."""
    flows = [
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
        *signaling_punt(),
    ]
    return flows + (agent_return(agent_port) if agent_port is not None else [])


def present_request() -> FlowStatsRequest:
    """Return the request for every NetServ flow a switch holds (by the cookie prefix)."""
    return FlowStatsRequest(t.COOKIE_PREFIX, t.COOKIE_PREFIX_MASK)


def reinstall(expected: list[FlowAdd]) -> list[Message]:
    """Return the messages that wipe NetServ's flows and install `expected`: for a
    switch whose flows could not be read, so nothing can be kept."""
    return [
        FlowDelete(cookie=t.COOKIE_PREFIX, cookie_mask=t.COOKIE_PREFIX_MASK),
        *meters_anew(f.meter for f in expected if f.meter is not None),
        *expected,
        Barrier(),
    ]


def signaling_punt() -> list[FlowAdd]:
    """Return the flows that send signaling datagrams, IPv4 and IPv6, to the controller
    through the signaling meter. They sit above every session's detour, so no session
    swallows them."""
    return [
        FlowAdd(
            t.CLASSIFY,
            t.SIGNALING.low,
            as_match({"eth_type": eth_type, "ip_proto": PROTO_UDP, "udp_dst": SIGNALING_PORT}),
            actions=(ToController(),),
            cookie=t.cookie(t.KIND_SIGNALING),
            meter=t.SIGNALING_METER,
        )
        for eth_type in (ETH_IPV4, ETH_IPV6)
    ]


# Every meter NetServ's flows use, by id.
METERS = {t.SIGNALING_METER: MeterAdd(t.SIGNALING_METER, t.SIGNALING_RATE, t.SIGNALING_BURST)}


def meters_anew(meter_ids: Iterable[int]) -> list[Message]:
    """Return the messages that make the meters `meter_ids` anew. A switch keeps its
    meters across reconnects and adds a meter only where there is none, so each is
    deleted first, which deletes the flows that use it too: they are to be added after."""
    return [m for i in sorted(set(meter_ids)) for m in (MeterDelete(i), METERS[i])]


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


def reconcile(
    expected: Iterable[FlowAdd],
    present: Iterable[FlowStats],
    known_hosts: Mapping[str, int] | None = None,
) -> list[Message]:
    """Return the messages that turn a switch's NetServ flows `present` into `expected`.

    A present flow equal to an expected one (table, priority, match, cookie, actions,
    goto; not its timer) is left alone, so its counters and timer run on and not a
    frame misses it. Of the learned-MAC flows, those that forward (to a learned
    destination) are kept, so learned hosts stay reachable in the datapath; one that
    marks a source as learned is kept if the controller knows that host at that port
    (`known_hosts`: MAC → port), else it goes, so the host's next frame is copied to
    the controller, which learns again where it is (a controller that restarted knows
    no host), while the frame goes on in the datapath. Anything else of
    NetServ's is wrong or unknown and goes: a session's flows by their exact cookie
    (the expected ones it owns are added again), a base flow by a strict delete (its
    cookie is shared), unless an expected flow takes its place, which adding that one
    does. A metered flow that is missing or wrong has its meter made anew (the switch
    may have none), and so every flow on that meter is added again; one that is right
    shows the meter is there. Deletes come first, then the meters, then the missing
    flows, then one barrier; nothing when nothing differs.
    """
    want = {_key(f): f for f in expected}
    kept: set[tuple[int, int, frozenset[tuple[str, object]]]] = set()
    doomed: set[int] = set()  # session cookies whose flows are all deleted
    strict: list[Message] = []
    for flow in present:
        if flow.cookie & t.COOKIE_PREFIX_MASK != t.COOKIE_PREFIX:
            continue  # another application's
        kind = (flow.cookie & t.KIND_MASK) >> t.KIND_SHIFT
        if kind == t.KIND_LEARNED:
            if flow.table == t.LEARN and not _known(flow, known_hosts or {}):
                strict.append(_strict_delete(flow))
            continue
        key = _key(flow)
        same = want.get(key)
        if same is not None and _equal(same, flow):
            kept.add(key)
        elif kind == t.KIND_SESSION:
            doomed.add(flow.cookie)
        elif same is None:
            strict.append(_strict_delete(flow))
    deletes: list[Message] = [FlowDelete(c, t.COOKIE_ALL) for c in sorted(doomed)] + strict
    anew = {f.meter for k, f in want.items() if f.meter is not None and k not in kept}
    meters = meters_anew(anew)
    adds: list[Message] = [
        f
        for k, f in want.items()
        if k not in kept or f.cookie in doomed or (f.meter is not None and f.meter in anew)
    ]
    return deletes + meters + adds + [Barrier()] if deletes or adds else []


def _strict_delete(flow: FlowStats) -> FlowDelete:
    return FlowDelete(flow.cookie, t.COOKIE_ALL, flow.table, flow.match, flow.priority)


def _known(flow: FlowStats, hosts: Mapping[str, int]) -> bool:
    """Return True when a learned-source flow names a host where the controller has it."""
    fields = dict(flow.match)
    mac = fields.get("eth_src")
    return isinstance(mac, str) and hosts.get(mac.lower()) == fields.get("in_port")


def _key(flow: FlowAdd | FlowStats) -> tuple[int, int, frozenset[tuple[str, object]]]:
    """Return what a switch tells flows apart by: table, priority and match."""
    return flow.table, flow.priority, frozenset((k, _canon(v)) for k, v in flow.match)


def _equal(expected: FlowAdd, present: FlowStats) -> bool:
    return (expected.cookie, expected.actions, expected.goto, expected.meter) == (
        present.cookie,
        present.actions,
        present.goto,
        present.meter,
    )


def _canon(value: object) -> object:
    """Return a match value as a switch may spell it back: addresses in one canonical
    form, a mask of all ones dropped."""
    if isinstance(value, tuple) and len(value) == 2:
        addr, mask = _canon(value[0]), _canon(value[1])
        return addr if _all_ones(mask) else (addr, mask)
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return value.lower()
    return value


def _all_ones(mask: object) -> bool:
    if not isinstance(mask, str):
        return False
    try:
        addr = ipaddress.ip_address(mask)
    except ValueError:
        return mask == "ff:ff:ff:ff:ff:ff"
    return int(addr) == (1 << addr.max_prefixlen) - 1


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


def to_agent(tag: int, agent_port: int, copy: bool = False) -> tuple[Action, ...]:
    """Return the actions that hand a session's frame to its agent carrying session `tag`:
    the one place that says how the tag is carried. A VLAN header is pushed whose id and
    priority bits carry it (`agentproto/tags.py`), and the frame goes out of the port.

    With `copy` the tag is taken off again after the output, so the frame the switch
    forwards next is the flow's own (only the agent's copy carries the tag).
    """
    pcp, vid = tag_tci(tag)
    actions: tuple[Action, ...] = (PushVlan(vid, pcp), Output(agent_port))
    return (*actions, PopVlan()) if copy else actions


def session_detour(
    session: Session, agent_port: int, hard_timeout: int, copy: bool = False
) -> FlowAdd:
    """Return the flow of `session`: its match → push its tag → the agent's port.

    With `copy` (a chain of observe-only modules) the frame is not detoured but copied:
    the tag is popped after the output and the frame goes on to learning and
    forwarding at once, as a frame no session matched; nothing comes back from the
    agent. Adding it again while it is installed re-arms its hard timeout and keeps its
    counters.
    """
    if not 1 <= hard_timeout <= t.HARD_TIMEOUT_MAX:
        raise ValueError(f"hard timeout {hard_timeout} does not fit its 16-bit field")
    return FlowAdd(
        t.CLASSIFY,
        session.priority,
        session.match.fields,
        actions=to_agent(session.tag, agent_port, copy),
        goto=t.LEARN if copy else None,
        cookie=session.cookie,
        hard_timeout=hard_timeout,
        notify_removal=True,
    )


def session_install(
    session: Session, agent_port: int, hard_timeout: int, copy: bool = False
) -> list[Message]:
    """Return the messages that install (or re-arm) the session's flow, confirmed."""
    return [session_detour(session, agent_port, hard_timeout, copy), Barrier()]


def sessions_rearm(
    detours: list[tuple[Session, int]], agent_port: int, copies: Collection[int] = ()
) -> list[Message]:
    """Return one batch re-adding each (session, hard timeout) flow, confirmed once;
    the sessions whose ids are in `copies` get copy rules."""
    return [session_detour(s, agent_port, hard, s.id in copies) for s, hard in detours] + [
        Barrier()
    ]


def session_drop(session: Session, hard_timeout: int) -> FlowAdd:
    """Return the flow that drops a suspended fail-closed session's frames.

    It takes the detour's place (same table, priority, match and cookie, no action),
    so adding the detour again replaces it and a teardown deletes it by the cookie.
    """
    if not 1 <= hard_timeout <= t.HARD_TIMEOUT_MAX:
        raise ValueError(f"hard timeout {hard_timeout} does not fit its 16-bit field")
    return FlowAdd(
        t.CLASSIFY,
        session.priority,
        session.match.fields,
        actions=(),
        cookie=session.cookie,
        hard_timeout=hard_timeout,
        notify_removal=True,
    )


def sessions_suspend(held: list[tuple[Session, bool, int]]) -> list[Message]:
    """Return one batch taking the detours of suspended sessions out, confirmed once.

    Each (session, fails closed, hard timeout): a session that fails open loses its
    detour (its frames take the normal path), one that fails closed has it replaced
    by a drop (nothing of the flow gets through). Empty for no session.
    """
    msgs: list[Message] = []
    for session, closed, hard in held:
        if closed:
            msgs.append(session_drop(session, hard))
        else:
            msgs.append(FlowDelete(cookie=session.cookie, cookie_mask=t.COOKIE_ALL))
    return msgs + [Barrier()] if msgs else []


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


def forget_learned() -> list[Message]:
    """Return the messages that delete every learned-MAC flow of a switch, confirmed."""
    return [FlowDelete(cookie=t.cookie(t.KIND_LEARNED), cookie_mask=t.COOKIE_ALL), Barrier()]


def forward_missed(
    macs: dict[str, int],
    in_port: int,
    eth_dst: str,
    ports: Iterable[int],
    no_flood: Iterable[int],
    data: bytes,
) -> PacketOut:
    """Return the packet-out for a frame that missed forwarding: to its port, or flooded.

    Flooding lists ports explicitly (not OFPP_FLOOD) and skips `no_flood`: agent ports,
    which must never see traffic that no session asked for, and links off the spanning
    tree, where a flooded frame would come back around a loop.
    """
    known = None if is_multicast(eth_dst) else macs.get(eth_dst)
    if known is not None and known != in_port:
        outs: list[int] = [known]
    elif known == in_port:
        outs = []
    else:
        skip = set(no_flood) | {in_port}
        outs = sorted(p for p in ports if p not in skip)
    return PacketOut(in_port=in_port, actions=tuple(Output(p) for p in outs), data=data)
