import argparse

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


def test_a_module_may_name_its_version():
    assert chain(["null", "tally@1.2.0"], {"tally.small": 5}) == [
        {"name": "null", "params": {}},
        {"name": "tally", "params": {"small": 5}, "version": "1.2.0"},
    ]
    assert chain(["tally@2"], {"small": 1}) == [
        {"name": "tally", "params": {"small": 1}, "version": "2"}
    ]


def test_session_setup_arguments():
    args = parser().parse_args(
        ["session", "setup", "--module", "null", "--module", "counter", "--match", "udp_dst=1"]
    )
    assert args.module == ["null", "counter"] and args.match == ["udp_dst=1"]


def _options(p: argparse.ArgumentParser, path: str = "netserv"):
    """Yield (command, option or subcommand) for every argument of `p` and its subcommands."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield path, choice
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_says_what_it_does():
    missing = [
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, a in _options(parser())
        if not a.help
    ]
    assert missing == []


def test_session_subcommands_are_described_as_they_behave():
    helps = {a.dest: a.help for path, a in _options(parser()) if path == "netserv session"}
    assert "counters" in helps["stats"] and "stats a session" not in helps["stats"]
    assert "lifetime" in helps["refresh"]


@pytest.mark.parametrize(
    "text, dpid", [("1", 1), ("10", 16), ("0x10", 16), ("0000000000000010", 16), ("ff", 255)]
)
def test_agent_dpid_is_hex_as_the_rest_api_shows_it(text, dpid):
    args = parser().parse_args(["agent", "--dpid", text, "--iface", "a", "--switch-port", "b"])
    assert args.dpid == dpid


@pytest.mark.parametrize("text", ["", "g", "+1", "1_0", " 1", "0x", "1" * 17])
def test_agent_dpid_refuses_what_is_not_one(text, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["agent", "--dpid", text, "--iface", "a", "--switch-port", "b"])
    assert "datapath id" in capsys.readouterr().err


def test_module_path_is_taken_by_controller_agent_and_modules(tmp_path):
    agent = ["agent", "--dpid", "1", "--iface", "a", "--switch-port", "b"]
    for argv in (["controller"], agent, ["modules"]):
        args = parser().parse_args([*argv, "--module-path", str(tmp_path)])
        assert args.module_path == [str(tmp_path)]


def test_agent_dead_after_has_one_default():
    from agentproto.limits import AGENT_DEAD_AFTER

    assert parser().parse_args(["controller"]).agent_dead_after == AGENT_DEAD_AFTER


def test_sessions_are_asked_for_with_the_token_file_given(tmp_path, monkeypatch, capsys):
    from tools import cli

    token = tmp_path / "mine.token"
    token.write_text("t0ken\n")
    sent = []
    monkeypatch.setattr(
        "signaling.client.call_json",
        lambda url, method, body, timeout, headers: sent.append(headers) or [],
    )
    assert cli.main(["session", "--token-file", str(token), "list"]) == 0
    assert sent == [{"Authorization": "Bearer t0ken"}]
    assert cli.main(["session", "--token-file", str(tmp_path / "none"), "list"]) == 1
    assert "cannot read the token file" in capsys.readouterr().err
