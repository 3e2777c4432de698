"""Statistics from a switch: requests built, replies waited for and read back as records."""

import warnings

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

with warnings.catch_warnings():  # oslo.config and Ryu still use distutils' versions
    warnings.simplefilter("ignore", DeprecationWarning)
    from ryu.lib import hub
    from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser

    from controller import app

from controller import tables  # noqa: E402
from controller.errors import PartFailed, Unavailable  # noqa: E402
from controller.framepath import flow_request, port_request  # noqa: E402
from controller.match import parse_match  # noqa: E402
from controller.messages import Barrier, FlowDelete, FlowStats, PortStats, as_match  # noqa: E402
from controller.ofbuild import build, flow_stats, port_stats  # noqa: E402
from controller.pipeline import base_flows, reconcile, session_detour  # noqa: E402
from controller.sessions import Session  # noqa: E402

DPID = 7


class FakeDatapath:
    """A datapath whose switch answers each request through `answer` (a green thread)."""

    ofproto, ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser

    def __init__(self, switches, answer):
        self.id, self.switches, self.answer, self.sent, self._xid = DPID, switches, answer, [], 0

    def set_xid(self, msg):
        self._xid += 1
        msg.xid = self._xid
        return self._xid

    def send_msg(self, msg):
        self.sent.append(msg)
        hub.spawn(self.answer, self.switches, msg.xid)


def switches_with(answer):
    switches = app.RyuSwitches()
    dp = FakeDatapath(switches, answer)
    switches.datapaths[DPID] = dp
    return switches, dp


def test_a_flow_stats_request_names_the_cookie_and_collects_every_reply_part():
    def answer(switches, xid):
        switches.stats_reply(DPID, xid, [FlowStats(0, 1000, 5, 3, 300)], more=True)
        switches.stats_reply(DPID, xid, [FlowStats(0, 1001, 5, 4, 400)], more=False)

    switches, dp = switches_with(answer)
    records = switches.request(DPID, flow_request(tables.session_cookie(5)))
    assert [r.packets for r in records] == [3, 4]
    (msg,) = dp.sent
    assert isinstance(msg, ofproto_v1_3_parser.OFPFlowStatsRequest)
    assert (msg.cookie, msg.cookie_mask) == (tables.session_cookie(5), tables.COOKIE_ALL)
    assert msg.table_id == ofproto_v1_3.OFPTT_ALL and switches._pending == {}


def test_a_refused_request_raises_and_a_silent_switch_times_out(monkeypatch):
    switches, _ = switches_with(lambda s, xid: s.error(DPID, xid, "bad request"))
    with pytest.raises(PartFailed, match="bad request"):
        switches.request(DPID, port_request(4))
    monkeypatch.setattr(app, "STATS_TIMEOUT", 0.05)
    switches, _ = switches_with(lambda s, xid: None)
    with pytest.raises(Unavailable, match="did not answer"):
        switches.request(DPID, port_request(4))
    assert switches._pending == {}
    with pytest.raises(Unavailable, match="not connected"):
        switches.request(DPID + 1, port_request(4))


def test_replies_are_read_into_records():
    parser = ofproto_v1_3_parser
    flow = parser.OFPFlowStats(
        table_id=0,
        priority=1003,
        cookie=9,
        packet_count=12,
        byte_count=3400,
        match=parser.OFPMatch(),
        instructions=[],
    )
    port = parser.OFPPortStats(
        port_no=4,
        rx_packets=1,
        tx_packets=2,
        rx_bytes=0,
        tx_bytes=0,
        rx_dropped=3,
        tx_dropped=4,
        rx_errors=5,
        tx_errors=6,
        rx_frame_err=0,
        rx_over_err=0,
        rx_crc_err=0,
        collisions=0,
        duration_sec=0,
        duration_nsec=0,
    )
    assert flow_stats([flow]) == [FlowStats(0, 1003, 9, 12, 3400)]
    assert port_stats([port]) == [PortStats(4, 1, 2, 3, 4, 5, 6)]
    request = build(FakeDatapath(None, None), port_request(4))
    assert isinstance(request, parser.OFPPortStatsRequest) and request.port_no == 4


def _wire(item, parse):
    """Return `item` (a match or an instruction) serialized and parsed back."""
    buf = bytearray()
    item.serialize(buf, 0)
    return parse(bytes(buf), 0)


SESSION = Session(
    5,
    DPID,
    7,
    parse_match({"ipv4_src": "10.0.0.0/8", "eth_dst": "aa:bb:cc:dd:ee:ff", "udp_dst": 1}),
    (),
    60,
    0.0,
    60.0,
)


@pytest.mark.parametrize(
    "flow",
    [
        session_detour(SESSION, 4, 70),
        session_detour(SESSION, 4, 70, copy=True),
        session_detour(  # a tag beyond 12 bits: its priority bits are set too
            Session(6, DPID, 10_000, parse_match({"udp_dst": 2}), (), 60, 0.0, 60.0), 4, 70
        ),
        *base_flows(4),
    ],
    ids=[
        "detour",
        "copy",
        "detour-tag-10000",
        "classify-miss",
        "learn-miss",
        "forward-miss",
        "probe-punt",
        "signaling-punt-ipv4",
        "signaling-punt-ipv6",
        "agent-return",
    ],
)
def test_a_flow_read_back_off_the_wire_is_the_flow_sent(flow):
    parser = ofproto_v1_3_parser
    mod = build(FakeDatapath(None, None), flow)
    reply = parser.OFPFlowStats(
        table_id=mod.table_id,
        duration_sec=3,
        duration_nsec=500_000_000,
        priority=mod.priority,
        idle_timeout=0,
        hard_timeout=mod.hard_timeout,
        flags=mod.flags,
        cookie=mod.cookie,
        packet_count=8,
        byte_count=800,
        match=_wire(mod.match, parser.OFPMatch.parser),
        instructions=[_wire(i, parser.OFPInstruction.parser) for i in mod.instructions],
    )
    (record,) = flow_stats([reply])
    assert (record.actions, record.goto) == (flow.actions, flow.goto)
    assert (record.hard_timeout, record.duration, record.packets) == (flow.hard_timeout, 3.5, 8)
    assert reconcile([flow], [record]) == []  # the same flow: left alone


def test_an_action_netserv_never_sends_reads_back_as_text_and_is_never_ours():
    parser = ofproto_v1_3_parser
    flow = base_flows(None)[0]
    inst = parser.OFPInstructionActions(
        ofproto_v1_3.OFPIT_APPLY_ACTIONS, [parser.OFPActionDecNwTtl()]
    )
    reply = parser.OFPFlowStats(
        table_id=0, priority=0, cookie=flow.cookie, packet_count=0, byte_count=0,
        match=parser.OFPMatch(), instructions=[inst, parser.OFPInstructionGotoTable(1)],
    )  # fmt: skip
    (record,) = flow_stats([reply])
    assert isinstance(record.actions[0], str) and record.goto == 1
    assert reconcile([flow], [record]) == [flow, Barrier()]


def test_a_strict_delete_names_table_priority_and_match():
    delete = FlowDelete(9, tables.COOKIE_ALL, 0, as_match({"in_port": 4}), 3000)
    mod = build(FakeDatapath(None, None), delete)
    assert mod.command == ofproto_v1_3.OFPFC_DELETE_STRICT
    assert (mod.table_id, mod.priority, mod.match["in_port"]) == (0, 3000, 4)
    loose = build(FakeDatapath(None, None), FlowDelete(9, tables.COOKIE_ALL))
    assert loose.command == ofproto_v1_3.OFPFC_DELETE and loose.table_id == ofproto_v1_3.OFPTT_ALL
