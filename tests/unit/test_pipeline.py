"""The pipeline's forwarding, checked on a simulated switch."""

import pytest

from agentproto.limits import EXPIRY_GRACE
from controller import tables
from controller.match import parse_match
from controller.messages import FlowAdd, FlowDelete, MeterAdd, Output
from controller.network import Agent, Network
from controller.pipeline import (
    base_flows,
    hard_timeout,
    present_request,
    rearm_margin,
    reconcile,
    session_install,
    session_remove,
)
from controller.placement import select_nodes
from controller.requests import MAX_LIFETIME, ModuleSpec, SessionRequest
from controller.sessions import SessionTable, State
from signaling.wire import SIGNALING_PORT
from tests.unit.flowsim import SimSwitch

DPID, AGENT = 1, 4
H1, H2, H3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
PORTS = {1: "s1-eth1", 2: "s1-eth2", 3: "s1-eth3", AGENT: "s1-ns"}


def udp(in_port: int, src: str, dst: str, ip_src: str, ip_dst: str, dport: int) -> dict:
    return {
        "in_port": in_port,
        "eth_src": src,
        "eth_dst": dst,
        "eth_type": 0x0800,
        "ip_proto": 17,
        "ipv4_src": ip_src,
        "ipv4_dst": ip_dst,
        "udp_dst": dport,
    }


@pytest.fixture
def net() -> tuple[Network, SimSwitch]:
    network, sim = Network(), SimSwitch()
    network.switch_connected(DPID)
    sim.apply(reconcile(base_flows(None), sim.answer(present_request())))
    sim.apply(network.ports_changed(DPID, PORTS, set()))
    sim.apply(network.register_agent(Agent(DPID, "s1-ns", "http://x", "boot", 0.0))[1])
    sim.apply(network.ports_changed(DPID, {}, set()))  # nothing new: no duplicate flows
    restarted, msgs = network.register_agent(Agent(DPID, "s1-ns", "http://x", "boot", 1.0))
    assert not restarted
    network.switch_connected(DPID)  # a reconnect: what is there already stays
    expected = base_flows(network.agent_port(DPID))
    assert reconcile(expected, sim.answer(present_request())) == []
    return network, sim


def learn_hosts(network: Network, sim: SimSwitch) -> None:
    for port, mac in ((1, H1), (2, H2), (3, H3)):
        frame = udp(port, mac, "ff:ff:ff:ff:ff:ff", "10.0.0.9", "10.0.0.8", 1)
        result = sim.process(frame)
        assert tables.LEARN in result.to_controller
        sim.apply(network.packet_in(DPID, tables.LEARN, port, mac, "ff:ff:ff:ff:ff:ff", b"", 0.0))


def test_unknown_destination_goes_to_controller_which_floods_but_not_to_the_agent(net):
    network, sim = net
    result = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert result.to_controller == [tables.LEARN, tables.FORWARD]
    msgs = network.packet_in(DPID, tables.FORWARD, 1, H1, H2, b"frame", 0.0)
    (out,) = msgs
    assert {a.port for a in out.actions} == {2, 3}


def test_learned_hosts_forward_in_the_datapath(net):
    network, sim = net
    learn_hosts(network, sim)
    result = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert result.outputs == [(2, None)]
    assert result.to_controller == []


def test_frames_from_the_agent_never_teach_macs(net):
    network, sim = net
    assert network.packet_in(DPID, tables.LEARN, AGENT, H1, H2, b"", 0.0) == []
    assert H1 not in network.switches[DPID].macs


def _session(network: Network, sim: SimSwitch, table: SessionTable, match: dict) -> object:
    request = SessionRequest(parse_match(match), (ModuleSpec("counter", ()),), 30)
    (node,) = select_nodes(network, request.selection, request.ends)
    session = table.move(table.reserve(request, node, 0.0).id, State.ACTIVE)
    sim.apply(session_install(session, network.agent_port(DPID), hard_timeout(session, 0.0)))
    return session


def test_only_the_sessions_flow_detours_to_the_agent_with_its_tag(net):
    network, sim = net
    learn_hosts(network, sim)
    session = _session(network, sim, SessionTable(), {"ipv4_src": "10.0.0.1", "udp_dst": 9000})
    served = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert served.outputs == [(AGENT, session.tag)]
    other_port = sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9001))
    other_host = sim.process(udp(3, H3, H2, "10.0.0.3", "10.0.0.2", 9000))
    assert other_port.outputs == other_host.outputs == [(2, None)]
    # the frame the agent sends back matches the session too, but is not detoured again
    back = sim.process(udp(AGENT, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
    assert back.outputs == [(2, None)]


def test_teardown_deletes_only_that_sessions_flows(net):
    network, sim = net
    learn_hosts(network, sim)
    table = SessionTable()
    a = _session(network, sim, table, {"udp_dst": 9000})
    b = _session(network, sim, table, {"udp_dst": 9001})
    sim.apply(session_remove(a))
    assert a.cookie not in sim.cookies() and b.cookie in sim.cookies()
    assert sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000)).outputs == [(2, None)]
    assert sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9001)).outputs == [(AGENT, b.tag)]


def test_session_flow_has_a_hard_timeout_safety_net_and_a_session_cookie(net):
    network, sim = net
    session = _session(network, sim, SessionTable(), {"udp_dst": 9000})
    (flow,) = [f for f in sim.flows if f.cookie == session.cookie]
    assert flow.hard_timeout > session.lifetime and flow.notify_removal
    assert tables.session_of_cookie(flow.cookie) == session.id
    assert flow.priority in tables.SESSION


@pytest.mark.parametrize("lifetime", [1, 30, 3590, 3600, 65_525, 65_526, 80_000, MAX_LIFETIME])
def test_a_detours_hard_timeout_is_capped_fits_its_field_and_never_outlives_the_session(lifetime):
    table = SessionTable()
    request = SessionRequest(parse_match({"udp_dst": 1}), (ModuleSpec("null", ()),), lifetime)
    session = table.reserve(request, DPID, 100.0)
    for now in (100.0, 100.4, session.expires - 3600.5, session.expires - 1.5, session.expires):
        if now < 100.0:
            continue
        hard = hard_timeout(session, now)
        assert 1 <= hard <= tables.HARD_TIMEOUT_CAP < 1 << 16
        # The switch never keeps the detour past the session's end plus grace (the agent
        # keeps the chain that long), and in the last stretch it keeps it past the end,
        # so the controller's expiry, not the switch, ends a session whose controller lives.
        assert now + hard <= session.expires + EXPIRY_GRACE
        if session.expires - now + EXPIRY_GRACE <= tables.HARD_TIMEOUT_CAP:
            assert now + hard > session.expires
    assert hard_timeout(session, 100.0, cap=8) == min(8, lifetime + EXPIRY_GRACE)


def test_the_rearm_margin_leaves_room_for_retries_and_shrinks_with_a_small_cap():
    assert rearm_margin(tables.HARD_TIMEOUT_CAP) == tables.REARM_MARGIN
    assert rearm_margin(8) == 4.0
    assert tables.REARM_MARGIN < tables.HARD_TIMEOUT_CAP / 2


@pytest.mark.parametrize(
    "raw, cap", [(None, tables.HARD_TIMEOUT_CAP), ("", tables.HARD_TIMEOUT_CAP), ("8", 8)]
)
def test_the_hard_timeout_cap_can_be_set(raw, cap):
    assert tables.parse_hard_timeout_cap(raw) == cap


@pytest.mark.parametrize("raw", ["0", "-5", "65536", "1e3", "ten", "3.5"])
def test_a_hard_timeout_cap_that_does_not_fit_is_refused(raw):
    with pytest.raises(ValueError, match="hard timeout cap"):
        tables.parse_hard_timeout_cap(raw)


def test_a_flow_outside_its_band_is_refused():
    with pytest.raises(ValueError, match="outside every declared band"):
        FlowAdd(tables.CLASSIFY, 500, (), actions=(Output(1),))


def test_cookies_of_other_kinds_are_not_sessions():
    assert tables.session_of_cookie(tables.cookie(tables.KIND_LEARNED, 5)) is None
    assert tables.session_of_cookie(0x1234) is None
    with pytest.raises(ValueError):
        tables.cookie(tables.KIND_SESSION, tables.SESSION_ID_MAX + 1)


def test_signaling_goes_to_the_controller_through_the_meter_ahead_of_any_detour(net):
    network, sim = net
    learn_hosts(network, sim)
    greedy = _session(network, sim, SessionTable(), {"ip_proto": 17})  # all UDP
    meter = sim.meters[tables.SIGNALING_METER]
    assert (meter.rate, meter.burst) == (tables.SIGNALING_RATE, tables.SIGNALING_BURST)
    for frame in (
        udp(1, H1, H2, "10.0.0.1", "10.0.0.2", SIGNALING_PORT),
        {
            "in_port": 1,
            "eth_src": H1,
            "eth_dst": H2,
            "eth_type": 0x86DD,
            "ip_proto": 17,
            "ipv6_src": "2001:db8::1",
            "ipv6_dst": "2001:db8::2",
            "udp_dst": SIGNALING_PORT,
        },
    ):
        result = sim.process(frame)
        assert result.to_controller == [tables.CLASSIFY] and result.outputs == []
        assert result.meters == [tables.SIGNALING_METER]
    assert sim.process(udp(1, H1, H2, "10.0.0.1", "10.0.0.2", 9000)).outputs == [
        (AGENT, greedy.tag)
    ]
    # what an agent sends back is forwarded, whatever its port
    back = sim.process(udp(AGENT, H1, H2, "10.0.0.1", "10.0.0.2", SIGNALING_PORT))
    assert back.outputs == [(2, None)] and back.meters == []


def test_the_signaling_meter_is_made_when_its_flows_are_missing_and_left_when_not(net):
    network, sim = net
    expected = base_flows(network.agent_port(DPID))
    punts = [f for f in sim.flows if f.meter is not None]
    assert len(punts) == 2 and all(f.priority in tables.SIGNALING for f in punts)
    assert reconcile(expected, sim.answer(present_request())) == []  # the meter is there
    # Its flows gone, the meter may be left (the switch keeps meters): made anew, as a
    # switch refuses to add a meter it has, and every flow on it added again.
    sim.apply([FlowDelete(punts[0].cookie, tables.COOKIE_ALL)])
    assert tables.SIGNALING_METER in sim.meters
    sim.apply(reconcile(expected, sim.answer(present_request())))
    assert [f for f in sim.flows if f.meter is not None] == punts
    # A switch that lost everything (it restarted) gets the meter before its flows.
    empty = SimSwitch()
    msgs = reconcile(expected, empty.answer(present_request()))
    empty.apply(msgs)
    assert empty.meters == sim.meters and len(empty.flows) == len(expected)
    assert msgs.index(MeterAdd(tables.SIGNALING_METER, 100, 20)) < msgs.index(punts[0])


def test_a_host_that_moves_away_and_back_is_relearned_each_time(net):
    network, sim = net
    learn_hosts(network, sim)
    for port, other in ((3, 1), (1, 3)):  # H1 moves to port 3 (H3 left it), then back
        moved = sim.process(udp(port, H1, H2, "10.0.0.1", "10.0.0.2", 9000))
        assert moved.to_controller == [tables.LEARN], f"H1's move to port {port} was not seen"
        sim.apply(network.packet_in(DPID, tables.LEARN, port, H1, H2, b"", 0.0))
        back = sim.process(udp(2, H2, H1, "10.0.0.2", "10.0.0.1", 9000))
        assert back.outputs == [(port, None)]
        # nothing is left of where it was: a frame from there is seen as a move again
        assert sim.process(udp(other, H1, H2, "10.0.0.1", "10.0.0.2", 1)).to_controller


def test_link_probes_go_to_the_controller_only_whatever_a_session_matches(net):
    network, sim = net
    learn_hosts(network, sim)
    _session(network, sim, SessionTable(), {"eth_src": H1})
    lldp = {"in_port": 1, "eth_src": H1, "eth_dst": "01:80:c2:00:00:0e", "eth_type": 0x88CC}
    for in_port in (1, AGENT):
        result = sim.process(lldp | {"in_port": in_port})
        assert result.to_controller == [tables.CLASSIFY] and result.outputs == []
    (punt,) = [f for f in sim.flows if f.priority in tables.DISCOVERY]
    assert punt.cookie == tables.cookie(tables.KIND_DISCOVERY)
