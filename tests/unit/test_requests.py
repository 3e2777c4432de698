from pathlib import Path

import pytest

from controller.errors import InvalidRequest
from controller.requests import parse_dpid, parse_session_request
from nodes.bundle import Catalog

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
    assert req.lifetime == 30 and req.node == 1
    assert [m.name for m in req.modules] == ["counter"]
    assert dict(req.modules[0].params) == {"log_every": 5}


def test_a_chain_and_defaults():
    req = parse_session_request(
        {"match": {"udp_dst": 1}, "modules": ["null", {"name": "counter"}]}, CATALOG
    )
    assert [m.name for m in req.modules] == ["null", "counter"]
    assert dict(req.modules[1].params) == {"log_every": 0}
    assert req.lifetime == 60 and req.node is None


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
