import pytest

from tools.cli import _pairs, chain, parser


def test_values_are_json_when_they_parse():
    assert _pairs(["udp_dst=9000", "ipv4_src=10.0.0.1", "on=true"], "x") == {
        "udp_dst": 9000,
        "ipv4_src": "10.0.0.1",
        "on": True,
    }
    with pytest.raises(SystemExit, match="name=value"):
        _pairs(["udp_dst"], "match field")


def test_one_module_takes_plain_parameter_names():
    assert chain(["counter"], {"log_every": 5}) == [{"name": "counter", "params": {"log_every": 5}}]


def test_a_chain_needs_module_qualified_parameters():
    assert chain(["null", "counter"], {"counter.log_every": 5}) == [
        {"name": "null", "params": {}},
        {"name": "counter", "params": {"log_every": 5}},
    ]
    with pytest.raises(SystemExit, match="MODULE.NAME=VALUE"):
        chain(["null", "counter"], {"log_every": 5})
    with pytest.raises(SystemExit, match="names no module"):
        chain(["counter"], {"other.x": 1})


def test_session_setup_arguments():
    args = parser().parse_args(
        ["session", "setup", "--module", "null", "--module", "counter", "--match", "udp_dst=1"]
    )
    assert args.module == ["null", "counter"] and args.match == ["udp_dst=1"]
