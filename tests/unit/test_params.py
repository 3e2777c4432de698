"""Module parameters: strict types and declared ranges, one check for controller and agent."""

from pathlib import Path

import pytest

from agentproto.messages import Attach
from controller.errors import InvalidRequest
from controller.requests import parse_session_request
from nodes.agent import AgentConfig, AttachError, NodeAgent
from nodes.bundle import (
    INT64_MAX,
    INT64_MIN,
    STR_MAX_LENGTH,
    BundleError,
    Catalog,
    read_manifest,
)

SERVICES = Path(__file__).resolve().parents[2] / "services"
CATALOG = Catalog(SERVICES)


def manifest(tmp_path: Path, params: str):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.toml").write_text(f'name = "m"\nentry = "module:M"\n{params}')
    (folder / "module.py").write_text("")
    return read_manifest(folder)


def counter(log_every: object) -> dict[str, object]:
    return {"match": {"udp_dst": 1}, "module": "counter", "params": {"log_every": log_every}}


@pytest.mark.parametrize("value", [2**64, 10**4000, -1, -(2**63), 2**63, 1.5, 1e3, True, "5"])
def test_counter_refuses_log_every_out_of_range_or_of_another_type(value):
    with pytest.raises(InvalidRequest, match="log_every"):
        parse_session_request(counter(value), CATALOG)


def test_counter_takes_log_every_within_its_range():
    spec = CATALOG.get("counter").params["log_every"]
    assert spec.min == 0 and spec.max is not None
    for value in (0, 1, spec.max):
        request = parse_session_request(counter(value), CATALOG)
        assert dict(request.modules[0].params) == {"log_every": value}


@pytest.mark.parametrize(
    "body",
    [
        {"match": {"udp_dst": 1}, "modules": [{"name": {"name": "counter"}}]},
        {"match": {"udp_dst": 1}, "module": {"name": "counter"}},
        {"match": {"udp_dst": 1}, "module": ["counter"]},
        {"match": {"udp_dst": 1}, "modules": [["counter"]]},
        {"match": {"udp_dst": 1}, "module": "counter\n"},
        {"match": {"udp_dst": 1}, "module": 7},
    ],
)
def test_a_module_is_named_by_a_string(body):
    with pytest.raises(InvalidRequest, match="module"):
        parse_session_request(body, CATALOG)


INT = '[params.p]\ntype = "int"\n'
FLOAT = '[params.p]\ntype = "float"\n'
STR = '[params.p]\ntype = "str"\n'


@pytest.mark.parametrize(
    "params, good, bad",
    [
        (INT, [0, INT64_MIN, INT64_MAX], [INT64_MAX + 1, INT64_MIN - 1, 1.0, False, None]),
        (INT + "min = -5\nmax = 5\n", [-5, 0, 5], [-6, 6, 10**30]),
        (FLOAT, [0, 1.5, -1e300, 10**20], [float("inf"), float("nan"), 10**400, True, "1"]),
        (FLOAT + "min = 0\nmax = 1.5\n", [0, 0.5, 1.5], [-0.1, 1.6]),
        (STR, ["", "x" * STR_MAX_LENGTH], [1, None, "x" * (STR_MAX_LENGTH + 1)]),
        (STR + "max_length = 3\n", ["abc"], ["abcd"]),
        (STR + 'choices = ["fast", "slow"]\n', ["fast", "slow"], ["FAST", ""]),
        ('[params.p]\ntype = "bool"\n', [True, False], [0, 1, "true"]),
    ],
)
def test_declared_types_and_ranges(tmp_path, params, good, bad):
    spec = manifest(tmp_path, params).params["p"]
    for value in good:
        assert spec.check(value) == value
    for value in bad:
        with pytest.raises(BundleError, match="'p'"):
            spec.check(value)


def test_a_float_parameter_given_an_integer_is_a_float(tmp_path):
    spec = manifest(tmp_path, FLOAT).params["p"]
    assert isinstance(spec.check(3), float)


@pytest.mark.parametrize(
    "params, message",
    [
        (INT + "min = 5\nmax = 1\n", "min 5 is above max 1"),
        (INT + "max = 9223372036854775808\n", "max"),
        (INT + "min = 1.5\n", "min"),
        (FLOAT + "max = inf\n", "max"),
        (FLOAT + 'min = "0"\n', "min"),
        (STR + "min = 1\n", "unknown key"),
        (INT + 'choices = ["a"]\n', "unknown key"),
        (STR + "choices = []\n", "choices"),
        (STR + "choices = [1]\n", "choices"),
        (STR + "max_length = 0\n", "max_length"),
        (INT + "min = 0\ndefault = -1\n", "default"),
        (STR + 'choices = ["a"]\ndefault = "b"\n', "default"),
    ],
)
def test_bad_parameter_declarations_say_what_is_wrong(tmp_path, params, message):
    with pytest.raises(BundleError, match=message):
        manifest(tmp_path, params)


def test_the_module_list_shows_the_declared_range():
    listed = CATALOG.get("counter").to_json()["params"]["log_every"]
    assert listed["type"] == "int" and listed["min"] == 0 and "max" in listed


def test_the_agent_rechecks_parameters_with_the_same_code():
    agent = NodeAgent(AgentConfig(1, "s1-na", "s1-ns", "http://c"), CATALOG)
    body = {"tag": 1, "lifetime": 5, "modules": [{"name": "counter", "params": {"log_every": -1}}]}
    with pytest.raises(AttachError, match="log_every"):
        agent.attach(Attach.from_json(body, 1))
    assert agent.dispatcher.chains() == [] and agent.host.loaded() == {}
