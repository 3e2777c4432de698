"""Tracing a flow: the flow given to ofproto/trace, its answer read, the trace put together
over a line of three simulated NetServ nodes with real in-process agents, its REST
route and the CLI's text."""

import json

import pytest

from controller.entry import _eventlet_compat

_eventlet_compat()  # Ryu's wsgi module needs it before import

from ryu.app.wsgi import WSGIApplication  # noqa: E402
from webob import Request  # noqa: E402

from controller.errors import InvalidRequest  # noqa: E402
from controller.match import parse_match  # noqa: E402
from controller.rest import AUTH, INSTANCE, TRACER, RestApi, guard  # noqa: E402
from controller.trace import (  # noqa: E402
    Tracer,
    ovs_flow,
    parse_trace,
    trace_ends,
    verdict,
)
from tests.unit.conftest import AGENT_PORT, TOKEN, make  # noqa: E402
from tools.trace_cli import format_trace  # noqa: E402

DETOURED = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:04

bridge("tqs1")
--------------
 0. udp,nw_src=10.0.0.1,nw_dst=10.0.0.4,tp_dst=9000, priority 1005, cookie 0x4e53020000000001
    push_vlan:0x8100
    set_field:4097->vlan_vid
    output:4

Final flow: udp,in_port=1,dl_vlan=1,dl_vlan_pcp=0,vlan_tci1=0x0000,dl_src=00:00:00:00:00:01
Megaflow: recirc_id=0,eth,udp,in_port=1,nw_src=10.0.0.1,nw_dst=10.0.0.4,nw_frag=no,tp_dst=9000
Datapath actions: push_vlan(vid=1,pcp=0),5
"""
PLAIN = """\
Flow: udp,in_port=1,vlan_tci=0x0000,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:04

bridge("tqs1")
--------------
 0. priority 0, cookie 0x4e53000000000000
    goto_table:1
 1. in_port=1,dl_src=00:00:00:00:00:01, priority 100, cookie 0x4e53010000000000
    goto_table:2
 2. dl_dst=00:00:00:00:00:04, priority 100, cookie 0x4e53010000000000
    output:3

Final flow: unchanged
Megaflow: recirc_id=0,eth,udp,in_port=1,dl_src=00:00:00:00:00:01,nw_frag=no,tp_dst=9001
Datapath actions: 1
"""
MISS = """\
bridge("tqs1")
--------------
 0. No match.
    drop

Final flow: unchanged
Datapath actions: drop
"""


def test_the_traced_flow_is_one_of_the_match_with_the_hosts_macs():
    match = parse_match({"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.0/8", "udp_dst": 53})
    assert ovs_flow(match, 3, ("00:00:00:00:00:01", "00:00:00:00:00:02")) == (
        "in_port=3,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:02,dl_type=0x800,nw_proto=17,"
        "nw_dst=10.0.0.0,nw_src=10.0.0.1,udp_dst=53"
    )
    own = parse_match({"eth_dst": "00:00:00:00:00:09", "udp_dst": 53})
    assert ovs_flow(own, 1, ("00:00:00:00:00:01", "00:00:00:00:00:02")) == (
        "in_port=1,dl_src=00:00:00:00:00:01,dl_dst=00:00:00:00:00:09,dl_type=0x800,nw_proto=17,"
        "udp_dst=53"
    )


def test_a_trace_answer_is_read_rule_by_rule():
    detoured = parse_trace(DETOURED, 1)
    (rule,) = detoured.rules
    assert (rule.table, rule.priority, rule.cookie, rule.session) == (
        0,
        1005,
        0x4E53020000000001,
        1,
    )
    assert rule.match == "udp,nw_src=10.0.0.1,nw_dst=10.0.0.4,tp_dst=9000"
    assert rule.actions == ("push_vlan:0x8100", "set_field:4097->vlan_vid", "output:4")
    assert detoured.datapath_actions == "push_vlan(vid=1,pcp=0),5" and detoured.detour == 1
    plain = parse_trace(PLAIN, 1)
    assert [(r.table, r.match, r.actions) for r in plain.rules] == [
        (0, "", ("goto_table:1",)),
        (1, "in_port=1,dl_src=00:00:00:00:00:01", ("goto_table:2",)),
        (2, "dl_dst=00:00:00:00:00:04", ("output:3",)),
    ]
    assert plain.detour is None and all(r.session is None for r in plain.rules)
    (miss,) = parse_trace(MISS, 1).rules
    assert (miss.match, miss.priority, miss.actions) == ("no match", None, ("drop",))


@pytest.mark.parametrize(
    "module, said",
    [
        ({"frames": 0, "dropped": 0}, "no frame yet"),
        ({"frames": 9, "dropped": 0}, "forward"),
        ({"frames": 9, "dropped": 9}, "drop"),
        ({"frames": 9, "dropped": 4}, "dropped 4 of 9"),
        (
            {"frames": 9, "dropped": 0, "state": "quarantined", "failure": "closed"},
            "quarantined (failure closed)",
        ),  # fmt: skip
        ({}, "not counted by this agent"),
    ],
)
def test_a_modules_verdict_sums_up_its_counts(module, said):
    assert verdict(module) == said


def test_a_trace_needs_the_flows_two_hosts():
    for raw in ({"udp_dst": 53}, {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.0/8"}):
        with pytest.raises(InvalidRequest, match="ipv4_src and ipv4_dst"):
            trace_ends(parse_match(raw))


class FakeOvs:
    """Each switch a bridge `b<dpid>`; its trace: the detour when `detour` names the
    switch and the frame enters by a host's port, the plain way otherwise."""

    def __init__(self, detour: dict[str, int]) -> None:
        self.detour, self.asked = detour, []

    def bridge_of(self, ports):
        ports = list(ports)
        return "b" + ports[0][1] if ports else None

    def trace(self, bridge, flow):
        self.asked.append((bridge, flow.split(",")[0]))
        session = self.detour.get(bridge)
        if session is not None and not flow.startswith(f"in_port={AGENT_PORT},"):
            return DETOURED.replace("0x4e53020000000001", f"{0x4E53020000000000 | session:#x}")
        return PLAIN


def test_a_trace_follows_the_path_and_shows_the_detours_modules(line):
    body = {"match": {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.3", "udp_dst": 9000}}
    session = make(line.service, body | {"module": "counter", "node": "0000000000000002"})
    for _ in range(3):
        line.agent(2).dispatcher.dispatch(session.tag, memoryview(bytearray(60)))
    ovs = FakeOvs({"b2": session.id})
    trace = Tracer(line.service, ovs).trace(parse_match(body["match"]))
    assert [(h["dpid"][-1], h["in_port"], h["out_port"]) for h in trace["hops"]] == [
        ("1", 1, 3),
        ("2", 2, 3),
        ("3", 2, 1),
    ]
    # in path order, and the node with the detour again for the frame back from its agent
    assert ovs.asked == [
        ("b1", "in_port=1"),
        ("b2", "in_port=2"),
        ("b2", f"in_port={AGENT_PORT}"),
        ("b3", "in_port=2"),
    ]
    first, second, third = trace["hops"]
    assert first["detour"] is None and third["detour"] is None
    detour = second["detour"]
    assert detour["session"] == session.id and detour["state"] == "active"
    assert [(m["name"], m["frames"], m["verdict"]) for m in detour["modules"]] == [
        ("counter", 3, "forward")
    ]
    text = format_trace(trace)
    assert f"detour: session {session.id} (active)" in text
    assert "1. counter: frames 3, dropped 0, errors 0: forward" in text
    assert f"back from the agent (port {AGENT_PORT})" in text


def test_a_switch_not_in_this_hosts_ovs_is_listed_untraced(line):
    class Elsewhere(FakeOvs):
        def bridge_of(self, ports):
            return None

    match = parse_match({"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2", "udp_dst": 9000})
    trace = Tracer(line.service, Elsewhere({})).trace(match)
    assert [(h["traced"], "passes" in h) for h in trace["hops"]] == [(False, False)] * 2
    assert "not traced" in format_trace(trace)


@pytest.fixture
def rest(line, rest_auth):
    app = WSGIApplication()
    tracer = Tracer(line.service, FakeOvs({}))
    app.register(RestApi, {INSTANCE: line.service, AUTH: rest_auth, TRACER: tracer})

    def call(path: str, token: str | None = TOKEN) -> tuple[int, object, str]:
        req = Request.blank(path)
        if token:
            req.headers["Authorization"] = f"Bearer {token}"
        resp = req.get_response(guard(app))
        is_json = resp.content_type == "application/json"
        return resp.status_int, json.loads(resp.body) if is_json else resp.text, resp.content_type

    return call


def test_the_trace_route_takes_a_match_as_query_and_a_token(rest):
    path = "/netserv/trace?ipv4_src=10.0.0.1&ipv4_dst=10.0.0.3&udp_dst=9000"
    status, trace, _ = rest(path)
    assert status == 200 and trace["match"]["udp_dst"] == 9000 and len(trace["hops"]) == 3
    assert rest(path, token=None)[0] == 401
    status, error, _ = rest(path + "&udp_dst=9001")
    assert status == 400 and "once" in error["error"]
    status, error, _ = rest("/netserv/trace?udp_dst=9000")
    assert status == 400 and "ipv4_src and ipv4_dst" in error["error"]
    status, error, _ = rest("/netserv/trace?ipv4_src=10.0.0.1&ipv4_dst=10.0.0.9")
    assert status == 503 and "not located" in error["error"]


def test_the_web_view_is_served_and_nothing_else_from_its_folder(rest):
    status, page, kind = rest("/netserv/ui", token=None)
    assert status == 200 and kind == "text/html" and "/netserv/ui/netserv.js" in page
    status, script, kind = rest("/netserv/ui/netserv.js", token=None)
    assert status == 200 and kind == "text/javascript" and "textContent" in script
    assert rest("/netserv/ui/../rest.py", token=None)[0] == 404
    assert rest("/netserv/ui/secret.txt", token=None)[0] == 404
