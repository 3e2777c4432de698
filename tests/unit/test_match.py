import pytest

from controller.errors import InvalidRequest
from controller.match import overlaps, parse_match


def test_prerequisites_are_filled_in():
    m = dict(parse_match({"udp_dst": 9000}).fields)
    assert m == {"udp_dst": 9000, "ip_proto": 17, "eth_type": 0x0800}
    m6 = dict(parse_match({"ipv6_dst": "2001:db8::1", "tcp_dst": "80"}).fields)
    assert m6["eth_type"] == 0x86DD and m6["ip_proto"] == 6 and m6["tcp_dst"] == 80


def test_values_are_normalised():
    m = parse_match({"eth_dst": "0:0:0:0:0:A", "ipv4_src": "10.1.2.3/8", "eth_type": "0x0800"})
    assert dict(m.fields)["eth_dst"] == "00:00:00:00:00:0a"
    assert dict(m.fields)["ipv4_src"] == ("10.0.0.0", "255.0.0.0")
    assert m.as_dict()["ipv4_src"] == "10.0.0.0/255.0.0.0"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "at least one field"),
        ([], "JSON object"),
        ({"nw_dst": "10.0.0.1"}, "unknown match field"),
        ({"udp_dst": 70000}, "0..65535"),
        ({"udp_dst": True}, "integer"),
        ({"ipv4_dst": "10.0.0.300"}, "not an IPv4"),
        ({"ipv4_dst": "2001:db8::1"}, "not IPv4"),
        ({"eth_src": "zz:00:00:00:00:00"}, "MAC"),
        ({"udp_dst": 53, "ip_proto": 6}, "contradicts"),
        ({"ipv6_dst": "::1", "eth_type": 0x0800}, "contradicts"),
        ({"ip_proto": 6, "eth_type": 0x0806}, "needs eth_type"),
    ],
)
def test_bad_matches_say_what_is_wrong(raw, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_match(raw)


def test_overlaps():
    a = parse_match({"udp_dst": 9000})
    b = parse_match({"udp_dst": 9000, "ipv4_src": "10.0.0.1"})
    c = parse_match({"udp_dst": 9001})
    d = parse_match({"ipv4_src": "10.0.0.0/24"})
    e = parse_match({"ipv4_src": "10.0.1.0/24"})
    assert overlaps(a, b) and overlaps(b, a)
    assert not overlaps(a, c)
    assert overlaps(b, d) and not overlaps(d, e)
    assert not overlaps(parse_match({"tcp_dst": 9000}), a)  # ip_proto differs
