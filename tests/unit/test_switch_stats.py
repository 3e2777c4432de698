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
from controller.messages import FlowStats, PortStats  # noqa: E402
from controller.ofbuild import build, flow_stats, port_stats  # noqa: E402

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
