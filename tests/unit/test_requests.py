from pathlib import Path

import pytest

from controller.errors import InvalidRequest
from controller.requests import (
    OPERATOR,
    flow_ends,
    flow_match,
    parse_dpid,
    parse_refresh,
    parse_session_request,
    request_from_description,
)
from nodes.bundle import Catalog
from signaling.values import Description, FlowFilter, ModuleRef, NodeSelection, PortRange

CATALOG = Catalog(Path(__file__).resolve().parents[2] / "services")


def test_a_good_request():
    req = parse_session_request(
        {
            "match": {"udp_dst": 9000},
            "module": "counter",
            "params": {"log_every": 5},
            "lifetime": 30,
            "node": "0000000000000001",
        },
        CATALOG,
    )
    assert req.lifetime == 30 and req.selection == NodeSelection.named(1)
    assert req.requester == OPERATOR
    assert [m.name for m in req.modules] == ["counter"]
    assert dict(req.modules[0].params) == {"log_every": 5}


def test_a_chain_and_defaults():
    req = parse_session_request(
        {"match": {"udp_dst": 1}, "modules": ["null", {"name": "counter"}]}, CATALOG
    )
    assert [m.name for m in req.modules] == ["null", "counter"]
    assert dict(req.modules[1].params) == {"log_every": 0}
    assert req.lifetime == 60 and req.selection == NodeSelection.first()
    assert req.ends is None  # the match names no source and destination: no path known


@pytest.mark.parametrize(
    "body, message",
    [
        ("not an object", "JSON object"),
        ({"module": "counter"}, "'match' is required"),
        ({"match": {"udp_dst": 1}}, "needs 'module'"),
        ({"match": {"udp_dst": 1}, "module": "nope"}, "unknown module 'nope'"),
        ({"match": {"udp_dst": 1}, "module": "../etc"}, "not a valid module name"),
        ({"match": {"bogus": 1}, "module": "counter"}, "unknown match field"),
        ({"match": {"udp_dst": 1}, "module": "counter", "lifetime": -5}, "between 1 and"),
        ({"match": {"udp_dst": 1}, "module": "counter", "lifetime": "10"}, "whole number"),
        ({"match": {"udp_dst": 1}, "module": "counter", "params": {"x": 1}}, "no parameter"),
        (
            {"match": {"udp_dst": 1}, "module": "counter", "params": {"log_every": "a"}},
            "must be int",
        ),
        ({"match": {"udp_dst": 1}, "module": "counter", "colour": "red"}, "unknown key"),
        ({"match": {"udp_dst": 1}, "module": "counter", "modules": []}, "not both"),
        ({"match": {"udp_dst": 1}, "module": "counter", "node": "xyz"}, "datapath id"),
        ({"match": {"udp_dst": 1}, "module": "counter", "node": 1, "nodes": "every"}, "not both"),
        ({"match": {"udp_dst": 1}, "module": "counter", "nodes": "all"}, "'every'"),
        ({"match": {"udp_dst": 1}, "module": "counter", "nodes": []}, "non-empty list"),
        ({"match": {"udp_dst": 1}, "module": "counter", "nodes": [1, 1]}, "named twice"),
        ({"match": {"udp_dst": 1}, "module": "counter", "nodes": ["x"]}, "datapath id"),
    ],
)
def test_bad_requests_say_what_is_wrong(body, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_session_request(body, CATALOG)


def test_dpids():
    assert parse_dpid("00000000000000ff") == 255 == parse_dpid(255)
    for bad in (True, -1, "g", 1 << 64):
        with pytest.raises(InvalidRequest):
            parse_dpid(bad)


@pytest.mark.parametrize(
    "nodes, selection",
    [
        ("first", NodeSelection.first()),
        ("last", NodeSelection.last()),
        ("every", NodeSelection.every()),
        (["0000000000000002", 1], NodeSelection.named(2, 1)),
    ],
)
def test_a_rest_body_may_select_nodes(nodes, selection):
    body = {"match": {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2"}, "module": "null"}
    req = parse_session_request(body | {"nodes": nodes}, CATALOG)
    assert req.selection == selection and req.ends == ("10.0.0.1", "10.0.0.2")


def test_a_refresh_body_names_a_lifetime_or_none():
    assert parse_refresh({}) is None and parse_refresh({"lifetime": 5}) == 5
    for bad in ([], {"lifetime": 0}, {"x": 1}):
        with pytest.raises(InvalidRequest):
            parse_refresh(bad)


# --- a signaling description becomes the same request --------------------------------


def description(flow: FlowFilter, **kwargs) -> Description:
    chain = kwargs.pop("chain", [ModuleRef("counter", {"log_every": 5})])
    return Description("alice@h1", flow, chain, kwargs.pop("lifetime", 30), **kwargs)


UDP_FLOW = FlowFilter(src="10.0.0.1", dst="10.0.0.2", protocol=17, dst_ports=9000)


def test_a_description_is_the_request_its_rest_body_would_be():
    body = {
        "match": {"ipv4_src": "10.0.0.1", "ipv4_dst": "10.0.0.2", "udp_dst": 9000},
        "module": "counter",
        "params": {"log_every": 5},
        "lifetime": 30,
        "nodes": "last",
    }
    rest = parse_session_request(body, CATALOG, requester="alice@h1")
    signaled = request_from_description(
        description(UDP_FLOW, nodes=NodeSelection.last()), CATALOG, ("10.0.0.1", "10.0.0.2")
    )
    assert signaled == rest


@pytest.mark.parametrize(
    "flow, fields",
    [
        (FlowFilter(), {"eth_type": 0x0800}),
        (FlowFilter(family=6), {"eth_type": 0x86DD}),
        (
            FlowFilter(src="10.0.0.0/8", protocol=6, src_ports=PortRange(0, 65535)),
            {"eth_type": 0x0800, "ipv4_src": ("10.0.0.0", "255.0.0.0"), "ip_proto": 6},
        ),
        (
            FlowFilter(dst="2001:db8::1", protocol=17, src_ports=53),
            {"eth_type": 0x86DD, "ipv6_dst": "2001:db8::1", "ip_proto": 17, "udp_src": 53},
        ),
        (FlowFilter(src="0.0.0.0/0", protocol=1), {"eth_type": 0x0800, "ip_proto": 1}),
    ],
)
def test_flow_filters_become_exact_matches(flow, fields):
    assert dict(flow_match(flow).fields) == fields


@pytest.mark.parametrize(
    "flow, message",
    [
        (FlowFilter(protocol=17, dst_ports=PortRange(9000, 9001)), "not a range"),
        (FlowFilter(protocol=6, src_ports=PortRange(1, 65535)), "not a range"),
        (FlowFilter(protocol=132, dst_ports=9000), "protocol 132"),
    ],
)
def test_what_openflow_cannot_match_exactly_is_refused(flow, message):
    with pytest.raises(InvalidRequest, match=message):
        request_from_description(description(flow), CATALOG)


def test_an_unknown_module_or_parameter_in_a_description_is_refused():
    with pytest.raises(InvalidRequest, match="unknown module"):
        request_from_description(description(UDP_FLOW, chain=[ModuleRef("nope")]), CATALOG)
    with pytest.raises(InvalidRequest, match="no parameter"):
        chain = [ModuleRef("counter", {"x": 1})]
        request_from_description(description(UDP_FLOW, chain=chain), CATALOG)


@pytest.mark.parametrize(
    "flow, sender, ends",
    [
        (UDP_FLOW, None, ("10.0.0.1", "10.0.0.2")),
        (UDP_FLOW, ("10.0.0.9", "10.0.0.8"), ("10.0.0.1", "10.0.0.2")),  # the filter wins
        (FlowFilter(src="10.0.0.1"), None, None),
        # the requester is the source: the far end is where the datagram went
        (FlowFilter(src="10.0.0.1"), ("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.2")),
        # the requester is the destination, asking toward the flow's source
        (FlowFilter(dst="10.0.0.1"), ("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.1")),
        (FlowFilter(), ("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.2")),
        (FlowFilter(src="10.0.0.0/24"), ("10.0.0.1", "10.0.0.2"), ("10.0.0.1", "10.0.0.2")),
        (FlowFilter(src="10.1.0.0/16"), ("10.0.0.1", "10.0.0.2"), None),
        (FlowFilter(family=6), ("10.0.0.1", "10.0.0.2"), None),
    ],
)
def test_the_path_ends_come_from_the_filter_then_the_datagram(flow, sender, ends):
    assert flow_ends(flow, sender) == ends
