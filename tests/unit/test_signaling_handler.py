"""On-path signaling at the controller: punted frames in, answers out, against the session
service on a simulated switch with a real in-process agent."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from agentproto.limits import SESSION_TAGS
from controller.messages import Output
from controller.policy import Policy, Requester
from controller.service import NetServService
from controller.signaling import AnswerCache, SignalingHandler, fit_node_infos
from controller.topology import SwitchPort
from signaling import wire
from signaling.auth import Key, sign, verify
from signaling.codec import decode, encode
from signaling.errors import ErrorCode
from signaling.messages import (
    Ack,
    Challenge,
    ChallengeResponse,
    ErrorReply,
    Message,
    Probe,
    ProbeResponse,
    Refresh,
    Setup,
    Teardown,
)
from signaling.values import Description, FlowFilter, ModuleRef, NodeInfo, NodeSelection, PortRange
from tests.unit.conftest import AGENT_PORT, DPID, connect, policy_of

NOW = 1767225600.0
KEY = Key(7, bytes(range(32)))
OTHER_KEY = Key(7, bytes(range(1, 33)))
SID = 0x0123456789ABCDEF
H1_PORT = 1
FLOW = FlowFilter(src="10.0.0.1", dst="10.0.0.2", protocol=17, dst_ports=9000)
DESCRIPTION = Description("alice@h1", FLOW, [ModuleRef("counter", {"log_every": 5})], 30)


class Wall:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sig(world):
    service, sim, switches, agents, agent, clock = world
    wall = Wall()
    service.policy = policy_of("alice@h1", keys={7: KEY.secret})
    handler = SignalingHandler(service, wall)
    return handler, service, sim, switches, agent, clock, wall


def header(sequence: int = 1, wall: float = NOW, **kw) -> dict:
    return {
        "session_id": SID,
        "sequence": sequence,
        "timestamp_ms": int(wall * 1000),
        "nonce": os.urandom(16),
    } | kw


def setup(description: Description = DESCRIPTION, **kw) -> Setup:
    return Setup(**header(**kw), description=description)


def refresh(description: Description = DESCRIPTION, **kw) -> Refresh:
    return Refresh(**header(**kw), description=description)


def teardown(**kw) -> Teardown:
    return Teardown(**header(**kw), requester="alice@h1")


def frame(payload: bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    pkt = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02") / IP(src=src, dst=dst)
    return bytes(pkt / UDP(sport=40000, dport=wire.SIGNALING_PORT) / Raw(payload))


def ask(handler: SignalingHandler, data: bytes | Message, key: Key | None = KEY) -> bytes | None:
    """Send a request (bytes, or a message signed with `key`) as h1 would, punted by the
    switch from h1's port; return the answer's payload (None: not answered)."""
    if not isinstance(data, bytes):
        data = sign(data, key) if key else encode(data)
    msgs = handler.packet_in(DPID, H1_PORT, frame(data))
    if not msgs:
        return None
    ((dpid, out),) = msgs
    assert dpid == DPID and out.in_port is None and out.actions == (Output(H1_PORT),)
    pkt = Ether(out.data)
    assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (
        "10.0.0.2",
        "10.0.0.1",
        wire.SIGNALING_PORT,
        40000,
    )
    return bytes(pkt[UDP].payload)


def answer(data: bytes | None, signed: bool = True) -> Message:
    """Return the answer in `data`, checking that it is signed with KEY (or unsigned)."""
    assert data is not None
    message = decode(data)
    if signed:
        verify(data, message, KEY.secret)
    else:
        assert message.auth is None
    return message


def locate(service, ip: str = "10.0.0.1", port: int = H1_PORT) -> None:
    """Let the controller's topology see a frame from host `ip` at `port` of switch DPID."""
    mac = f"00:00:00:00:00:{int(ip.rsplit('.', 1)[1]):02x}"
    service.network.topology.host_seen(SwitchPort(DPID, port), mac, ip, 0.0)


def challenge_in(sends: list) -> tuple[int, Challenge, Ether]:
    """Return the port a CHALLENGE went out of, the CHALLENGE, and its frame."""
    ((dpid, out),) = sends
    (action,) = out.actions
    pkt = Ether(out.data)
    challenge = decode(bytes(pkt[UDP].payload))
    assert dpid == DPID and isinstance(challenge, Challenge)
    return action.port, challenge, pkt


def reply_frame(pkt: Ether, payload: bytes, src: str | None = None) -> bytes:
    """Return the frame that answers the CHALLENGE frame `pkt` with `payload` (from
    `src` instead of the address challenged, when given)."""
    back = Ether(src=pkt.dst, dst=pkt.src) / IP(src=src or pkt[IP].dst, dst=pkt[IP].src)
    return bytes(back / UDP(sport=pkt[UDP].dport, dport=pkt[UDP].sport) / Raw(payload))


def ask_checked(handler: SignalingHandler, message: Message, port: int = H1_PORT) -> bytes | None:
    """Send `message` as `ask` does, answer its CHALLENGE as the endpoint's client
    does, from switch port `port`; return the request's answer."""
    sends = handler.packet_in(DPID, H1_PORT, frame(sign(message, KEY)))
    _, challenge, pkt = challenge_in(sends)
    reply = encode(ChallengeResponse.answering(challenge, 0))
    ((dpid, out),) = handler.packet_in(DPID, port, reply_frame(pkt, reply))
    assert dpid == DPID and out.actions == (Output(H1_PORT),)
    return bytes(Ether(out.data)[UDP].payload)


def served(sim, dport: int = 9000) -> list:
    return sim.process(
        {
            "in_port": H1_PORT,
            "eth_src": "00:00:00:00:00:01",
            "eth_dst": "00:00:00:00:00:02",
            "eth_type": 0x0800,
            "ip_proto": 17,
            "ipv4_src": "10.0.0.1",
            "ipv4_dst": "10.0.0.2",
            "udp_dst": dport,
        }
    ).outputs


# --- the session's life, on-path ---------------------------------------------------


def test_a_setup_installs_the_session_and_is_acknowledged(sig):
    handler, service, sim, _, agent, _, _ = sig
    request = setup()
    ack = answer(ask(handler, request))
    assert isinstance(ack, Ack) and (ack.lifetime, ack.nodes) == (30, (DPID,))
    assert (ack.session_id, ack.sequence, ack.nonce) == (SID, 1, request.nonce)
    (session,) = service.sessions.all()
    assert (session.requester, session.ref, session.lifetime) == ("alice@h1", SID, 30)
    assert dict(session.modules[0].params) == {"log_every": 5}
    assert served(sim) == [(AGENT_PORT, session.tag)] and served(sim, 9001) == []
    assert [c.session_id for c in agent.dispatcher.chains()] == [session.id]
    assert handler.counts["answered: setup"] == 1


def test_a_retransmission_gets_the_stored_answer_and_installs_nothing_again(sig):
    handler, service, _, switches, agent, _, wall = sig
    first = ask(handler, setup())
    sent = len(switches.sent)
    wall.now += 1.5
    again = ask(handler, setup(retransmission=True, wall=wall.now))  # new nonce and time
    assert again == first and len(switches.sent) == sent
    assert len(service.sessions.all()) == 1 and len(agent.dispatcher.chains()) == 1
    assert handler.counts["retransmission answered"] == 1


def test_a_late_copy_of_an_older_request_is_dropped(sig):
    handler, service, _, switches, _, _, wall = sig
    ask(handler, setup())
    assert isinstance(answer(ask(handler, refresh(sequence=2))), Ack)
    sent = len(switches.sent)
    assert ask(handler, setup(retransmission=True)) is None
    assert len(switches.sent) == sent and handler.counts["dropped: late copy"] == 1


def test_a_retransmission_while_the_first_is_acted_on_is_dropped(sig, monkeypatch):
    handler, service, _, _, _, _, _ = sig
    agents, during = service.agents, []
    attach = agents.attach

    def slow_attach(agent, session):
        during.append(ask(handler, setup(retransmission=True)))
        attach(agent, session)

    monkeypatch.setattr(agents, "attach", slow_attach)
    assert isinstance(answer(ask(handler, setup())), Ack)
    assert during == [None] and handler.counts["dropped: in progress"] == 1


def test_a_refresh_keeps_the_session_past_its_first_lifetime(sig):
    handler, service, sim, _, agent, clock, wall = sig
    ask(handler, setup())
    clock.now += 20
    wall.now += 20
    longer = replace(DESCRIPTION, lifetime=40)
    ack = answer(ask(handler, refresh(longer, sequence=2, wall=wall.now)))
    assert isinstance(ack, Ack) and ack.lifetime == 40
    clock.now += 30  # 50 s after the SETUP of 30 s
    service.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    assert service.tick() == []
    (session,) = service.sessions.all()
    assert served(sim) == [(AGENT_PORT, session.tag)]


def test_a_refresh_that_changes_the_session_conflicts_and_changes_nothing(sig):
    handler, service, sim, switches, _, _, _ = sig
    ask(handler, setup())
    before, sent = service.sessions.all(), len(switches.flow_mods())
    changed = replace(DESCRIPTION, chain=(ModuleRef("null"),))
    error = answer(ask(handler, refresh(changed, sequence=2)))
    assert isinstance(error, ErrorReply) and error.code == ErrorCode.CONFLICT
    assert "only the lifetime" in error.reason
    assert service.sessions.all() == before and len(switches.flow_mods()) == sent


def test_a_refresh_of_a_session_the_controller_lost_rebuilds_it(sig, services):
    handler, service, sim, switches, agent, clock, wall = sig
    # a controller that restarted: a new service and handler over the same switch and agent
    fresh = NetServService(service.catalog, switches, service.agents, clock)
    connect(fresh, switches, DPID, {1: "s1-eth1", AGENT_PORT: "s1-ns"})
    fresh.register_agent(
        {"dpid": 1, "switch_port": "s1-ns", "url": "http://a", "boot_id": agent.boot_id}
    )
    fresh.policy = service.policy
    restarted = SignalingHandler(fresh, wall)
    ack = answer(ask(restarted, refresh(sequence=5)))
    assert isinstance(ack, Ack) and ack.nodes == (DPID,)
    (session,) = fresh.sessions.all()
    assert (session.requester, session.ref) == ("alice@h1", SID)
    assert served(sim) == [(AGENT_PORT, session.tag)]
    assert restarted.counts["rebuilt from a refresh"] == 1


def test_a_teardown_removes_the_session_and_a_second_one_finds_none(sig):
    handler, service, sim, _, agent, _, _ = sig
    ask(handler, setup())
    ack = answer(ask(handler, teardown(sequence=2)))
    assert isinstance(ack, Ack) and ack.lifetime is None and ack.nodes is None
    assert service.sessions.all() == [] and agent.dispatcher.chains() == []
    assert served(sim) == []
    # a retransmission gets the same ACK; a new TEARDOWN, that the session is unknown
    assert answer(ask(handler, teardown(sequence=2, retransmission=True))) == ack
    error = answer(ask(handler, teardown(sequence=3)))
    assert isinstance(error, ErrorReply) and error.code == ErrorCode.UNKNOWN_SESSION


# --- refusals: each with its code, logged, counted, and no flow-mod sent ------------------


def _tampered(message: Message) -> bytes:
    data = bytearray(sign(message, KEY))
    data[-1] ^= 1
    return bytes(data)


def _byte(offset: int, value: int) -> bytes:
    data = bytearray(encode(setup()))
    data[offset] = value
    return bytes(data)


def _stale() -> Setup:
    return setup(wall=NOW - 31)


REFUSALS = [
    # (what is sent, its ERROR code, the answer is signed)
    (lambda: encode(setup())[:-4], ErrorCode.MALFORMED, False),
    (lambda: _byte(2, 2), ErrorCode.UNSUPPORTED_VERSION, False),
    (lambda: _byte(3, 9), ErrorCode.UNKNOWN_MESSAGE_TYPE, False),
    (lambda: encode(setup()), ErrorCode.BAD_AUTH, False),  # unsigned
    (lambda: _tampered(setup()), ErrorCode.BAD_AUTH, False),
    (lambda: sign(setup(), OTHER_KEY), ErrorCode.BAD_AUTH, False),
    (lambda: sign(setup(), Key(8, KEY.secret)), ErrorCode.UNKNOWN_REQUESTER, False),
    (
        lambda: sign(setup(replace(DESCRIPTION, requester="mallory")), KEY),
        ErrorCode.UNKNOWN_REQUESTER,
        False,
    ),
    (lambda: sign(_stale(), KEY), ErrorCode.STALE_TIMESTAMP, True),
    (
        lambda: sign(setup(replace(DESCRIPTION, chain=(ModuleRef("nope"),))), KEY),
        ErrorCode.INVALID_REQUEST,
        True,
    ),
    (
        lambda: sign(setup(replace(DESCRIPTION, chain=(ModuleRef("counter", {"x": 1}),))), KEY),
        ErrorCode.INVALID_REQUEST,
        True,
    ),
    (
        lambda: sign(
            setup(replace(DESCRIPTION, flow=replace(FLOW, dst_ports=PortRange(9000, 9010)))), KEY
        ),
        ErrorCode.INVALID_REQUEST,
        True,
    ),
    (
        lambda: sign(setup(replace(DESCRIPTION, nodes=NodeSelection.named(9))), KEY),
        ErrorCode.NO_NETSERV_NODE,
        True,
    ),
    (
        lambda: sign(setup(replace(DESCRIPTION, chain=(ModuleRef("broken"),))), KEY),
        ErrorCode.PART_FAILED,
        True,
    ),
    (lambda: sign(teardown(), KEY), ErrorCode.UNKNOWN_SESSION, True),
]


@pytest.mark.parametrize("make, code, signed", REFUSALS, ids=lambda x: getattr(x, "name", ""))
def test_each_refusal_has_its_code_and_sends_no_flow_mod(sig, caplog, make, code, signed):
    handler, service, sim, switches, agent, _, _ = sig
    caplog.set_level(logging.INFO, logger="netserv.rejections")
    flows, mods = list(sim.flows), len(switches.flow_mods())
    error = answer(ask(handler, make()), signed=bool(signed))
    assert isinstance(error, ErrorReply) and error.code == code
    assert len(switches.flow_mods()) == mods
    assert sim.flows == flows and service.sessions.all() == []
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}
    (counted,) = service.rejections.to_json()["signaling"].items()
    assert counted[1] == 1 and f"refused (signaling, {counted[0]})" in caplog.text


STRICT = Requester(
    "alice@h1",
    keys=MappingProxyType({7: KEY.secret}),
    prefixes=(ipaddress.ip_network("10.0.0.1/32"),),
    modules=frozenset({"counter"}),
    max_sessions=1,
)


@pytest.mark.parametrize(
    "description, code",
    [
        (replace(DESCRIPTION, flow=FlowFilter(src="10.0.0.2", dst="10.0.0.3")), "NOT_ENDPOINT"),
        (replace(DESCRIPTION, flow=FlowFilter(protocol=17, dst_ports=53)), "NOT_ENDPOINT"),
        (replace(DESCRIPTION, chain=(ModuleRef("null"),)), "MODULE_NOT_ALLOWED"),
        (replace(DESCRIPTION, flow=replace(FLOW, dst_ports=9001)), "QUOTA_EXCEEDED"),
    ],
)
def test_the_policy_refuses_on_path_as_over_rest(sig, description, code):
    handler, service, sim, switches, _, _, _ = sig
    service.policy = Policy(MappingProxyType({"alice@h1": STRICT}), source=Path("p.toml"))
    locate(service)
    assert isinstance(answer(ask_checked(handler, setup(session_id=1))), Ack)  # her one session
    before, mods = service.sessions.all(), len(switches.flow_mods())
    error = answer(ask(handler, setup(description, session_id=2)))
    assert isinstance(error, ErrorReply) and error.code == ErrorCode[code]
    assert service.sessions.all() == before and len(switches.flow_mods()) == mods


def test_a_replay_is_refused_and_the_original_stands(sig):
    handler, service, _, switches, _, _, _ = sig
    data = sign(setup(), KEY)
    assert isinstance(answer(ask(handler, data)), Ack)
    mods = len(switches.flow_mods())
    error = answer(ask(handler, data))
    assert isinstance(error, ErrorReply) and error.code == ErrorCode.REPLAY
    assert len(switches.flow_mods()) == mods and len(service.sessions.all()) == 1


def test_a_setup_for_a_session_that_exists_conflicts(sig):
    handler, service, _, switches, _, _, _ = sig
    ask(handler, setup())
    mods = len(switches.flow_mods())
    error = answer(ask(handler, setup(sequence=2)))
    assert isinstance(error, ErrorReply) and error.code == ErrorCode.CONFLICT
    assert len(switches.flow_mods()) == mods and len(service.sessions.all()) == 1


def test_an_unreachable_agent_is_node_unavailable(sig):
    handler, service, sim, switches, _, _, _ = sig
    service.agents.down = True
    mods = len(switches.flow_mods())
    error = answer(ask(handler, setup()))
    assert error.code == ErrorCode.NODE_UNAVAILABLE and service.sessions.all() == []
    assert len(switches.flow_mods()) == mods


def test_an_unforeseen_failure_is_an_internal_error_that_tells_nothing(sig, monkeypatch, caplog):
    handler, service, _, _, _, _, _ = sig

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(service, "create", broken)
    error = answer(ask(handler, setup()))
    assert error.code == ErrorCode.INTERNAL_ERROR and "secret" not in error.reason
    assert "secret detail" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NS",
        b"XY" + encode(setup())[2:],  # wrong magic: nothing to echo
        encode(Ack(**header(), lifetime=5, nodes=(1,))),  # an answer is never answered
        _byte(3, 0x99),  # an unknown answer type
    ],
)
def test_what_cannot_be_answered_is_dropped_and_counted(sig, data):
    handler, _, _, switches, _, _, _ = sig
    sent = len(switches.sent)
    assert ask(handler, data) is None and len(switches.sent) == sent
    assert (
        handler.counts["received"] == 1
        and sum(n for what, n in handler.counts.items() if what.startswith("dropped")) == 1
    )


def test_a_frame_that_is_no_signaling_datagram_is_dropped(sig):
    handler, *_ = sig
    assert handler.packet_in(DPID, H1_PORT, b"\x00" * 60) == []
    assert handler.counts["dropped: not a signaling datagram"] == 1


# --- PROBE ---------------------------------------------------------------------------


def test_a_probe_lists_the_node_its_modules_and_its_sessions(sig):
    handler, service, *_ = sig
    ask(handler, setup())
    probe = Probe(
        **header(session_id=99), requester="alice@h1", flow=FLOW, nodes=NodeSelection.every()
    )
    response = answer(ask(handler, probe))
    assert isinstance(response, ProbeResponse) and not response.truncated
    (node,) = response.nodes
    assert node.dpid == DPID and node.sessions == 1 and node.load == 1000 // len(SESSION_TAGS)
    assert {"counter", "null"} <= set(node.modules) and "broken" in node.modules
    assert list(node.modules) == sorted(node.modules)


def test_a_probe_lists_the_nodes_of_the_path_in_order(line, monkeypatch):
    line.service.policy = policy_of("alice@h1", keys={7: KEY.secret})
    handler = SignalingHandler(line.service, Wall())
    monkeypatch.setattr(line.service.network, "path_nodes", lambda s, d: [3, 9, 1, 2])
    probe = Probe(**header(), requester="alice@h1", flow=FLOW, nodes=NodeSelection.every())
    response = answer(ask(handler, probe))
    assert [n.dpid for n in response.nodes] == [3, 1, 2]
    last = Probe(
        **header(session_id=2), requester="alice@h1", flow=FLOW, nodes=NodeSelection.last()
    )
    assert [n.dpid for n in answer(ask(handler, last)).nodes] == [2]


def test_a_probe_response_fits_one_message():
    modules = tuple(f"module_{i:02d}_{'x' * 20}" for i in range(40))
    fitted, truncated = fit_node_infos([NodeInfo(d, modules) for d in range(1, 20)])
    assert truncated and 1 <= len(fitted) < 19
    response = ProbeResponse(**header(), nodes=fitted, truncated=True)
    assert len(sign(response, KEY)) <= wire.MAX_MESSAGE_SIZE
    small = [NodeInfo(d, ("counter",)) for d in (1, 2)]
    assert fit_node_infos(small) == (tuple(small), False)


# --- the answer cache ------------------------------------------------------------------


def test_answers_are_kept_for_a_while_and_a_number():
    cache = AnswerCache(keep=60, capacity=2)
    cache.put(("a", 1), 1, b"one", 0.0)
    cache.put(("a", 2), 1, b"two", 10.0)
    assert cache.get(("a", 1), 59.0).data == b"one"
    assert cache.get(("a", 1), 60.0) is None and cache.get(("a", 2), 60.0).data == b"two"
    cache.put(("a", 3), 1, b"three", 61.0)
    cache.put(("a", 4), 1, b"four", 61.0)
    assert len(cache) == 2 and cache.get(("a", 2), 61.0) is None
