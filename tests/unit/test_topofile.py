"""Topology files: the shipped examples, what a file becomes, and every refusal naming
its line (topo/file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.policy import load_policy
from topo.file import FileTopo, TopologyFileError, load, parse, policy_toml, shaping_problems

EXAMPLES = Path(__file__).resolve().parents[2] / "topo" / "examples"


def spec_of(text: str, tmp_path: Path, prefix: str | None = None):
    path = tmp_path / "net.yaml"
    path.write_text(text)
    return load(path, prefix)


def ports(topo: FileTopo, a: str, b: str) -> tuple[int, int]:
    """Return the ports of the link between a and b, a's first."""
    for x, y, info in topo.links(withInfo=True):
        if (x, y) == (a, b):
            return info["port1"], info["port2"]
        if (x, y) == (b, a):
            return info["port2"], info["port1"]
    raise AssertionError(f"no link {a}-{b}")


def test_every_shipped_example_is_read():
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert names == ["linear.yaml", "single.yaml", "tree.yaml", "two-paths.yaml"]
    shapes = {}
    for name in names:
        spec = load(EXAMPLES / name)
        topo = FileTopo(spec=spec)
        shapes[name] = (len(topo.switches()), len(topo.hosts()), len(topo.links()))
    assert shapes == {
        "linear.yaml": (3, 2, 4),
        "single.yaml": (1, 3, 3),
        "tree.yaml": (3, 4, 6),
        "two-paths.yaml": (4, 2, 6),
    }


def test_the_two_paths_example_is_a_ring_with_netserv_nodes_on_both_ways():
    spec = load(EXAMPLES / "two-paths.yaml", prefix="p")
    topo = FileTopo(spec=spec)
    assert [(s.name, s.dpid, s.node is not None) for s in spec.switches] == [
        ("ps1", 1, False),
        ("ps2", 2, True),
        ("ps3", 3, False),
        ("ps4", 4, True),
    ]
    assert len(spec.wires()) == 4
    # ports count up per switch in the order of the links, as the docs say
    assert ports(topo, "ps1", "ps2") == (1, 1) and ports(topo, "ps4", "ps1") == (2, 2)
    assert ports(topo, "ps3", "ps4") == (2, 1) and ports(topo, "ph1", "ps3") == (0, 3)
    assert topo.nodeInfo("ph1") == {"ip": "10.0.0.1/8", "mac": "00:00:00:00:00:01"}
    assert topo.nodeInfo("ps2")["netserv"] and not topo.nodeInfo("ps1")["netserv"]
    assert topo.nodeInfo("ps2")["dpid"] == "0000000000000002"


def test_a_node_s_options_reach_its_agent_and_its_folders_the_controller(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "more").mkdir()
    text = """
module_path: [mods]
switches:
  s1:
    netserv: {module_path: [more], trusted: [counter], grant: [geo=net], hang_after: 1.5}
links: []
"""
    spec = spec_of(text, tmp_path)
    info = FileTopo(spec=spec).nodeInfo("s1")
    assert info["module_path"] == [str(tmp_path / "mods"), str(tmp_path / "more")]
    assert info["agent_args"] == [
        "--trusted",
        "counter",
        "--grant",
        "geo=net",
        "--hang-after",
        "1.5",
    ]
    assert spec.all_module_folders() == (str(tmp_path / "mods"), str(tmp_path / "more"))


def test_requesters_become_a_policy_the_controller_takes(tmp_path):
    (tmp_path / "alice-1.key").write_bytes(b"k" * 32)
    (tmp_path / "alice-1.key").chmod(0o600)
    text = """
switches: {s1: }
links: []
requesters:
  alice:
    keys: {1: "file:alice-1.key"}
    prefixes: [10.0.0.1/32]
    modules: [counter]
    max_sessions: 2
"""
    spec = spec_of(text, tmp_path)
    assert spec.requesters["alice"]["keys"] == {1: f"file:{tmp_path / 'alice-1.key'}"}
    policy = tmp_path / "out" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(policy_toml(spec.requesters))
    (alice,) = [r for r in load_policy(policy).to_json()["requesters"] if r["id"] == "alice"]
    assert (alice["keys"], alice["prefixes"]) == ([1], ["10.0.0.1/32"])
    tree = load_policy(policy_file(tmp_path, load(EXAMPLES / "tree.yaml").requesters))
    assert [r["id"] for r in tree.to_json()["requesters"]] == ["alice", "operator"]


def policy_file(tmp_path: Path, requesters: dict) -> Path:
    path = tmp_path / "tree-policy.toml"
    path.write_text(policy_toml(requesters))
    path.chmod(0o600)  # it holds a key
    return path


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("switches:\n  s1:\nlinks:\n  - [s1, s2\n", 5, "not valid YAML"),
        ("", None, "the file is empty"),
        ("switches: {}\nlinks: []\n", 1, "at least one is needed"),
        ("hosts: {}\nlinks: []\n", 1, "the file has no 'switches'"),
        ("switches:\n  s1:\nlinks: []\ncolour: red\n", 4, "unknown key 'colour'"),
        ("switches:\n  s1:\n  s1:\nlinks: []\n", 3, "'s1' is given twice"),
        (
            "switches:\n  s1: {netserv: maybe}\nlinks: []\n",
            2,
            "netserv is true, false or a mapping",
        ),
        ("switches:\n  s1: {dpid: 2}\n  s2:\nlinks: []\n", 3, "dpid 2 is s1's too"),
        ("switches:\n  1s:\nlinks: []\n", 2, "switch name '1s'"),
        ("switches:\n  s1:\nhosts:\n  h1: {ip: 10.0.0.300/8}\nlinks: []\n", 4, "not an IPv4"),
        ("switches:\n  s1:\nhosts:\n  h1: {ip: 10.0.0.1}\nlinks: []\n", 4, "prefix length"),
        (
            "switches:\n  s1:\nhosts:\n  h1: {ip: 10.0.0.1/8}\nlinks: []\n",
            5,
            "hosts with no link: h1",
        ),
        ("switches:\n  s1:\nlinks:\n  - [s1, s9]\n", 4, "end 's9' is no switch or host"),
        ("switches:\n  s1:\nlinks:\n  - [s1, s1]\n", 4, "joins 's1' to itself"),
        ("switches:\n  s1:\nlinks:\n  - {ends: [s1, s1x], bw: 0}\n", 4, "no switch or host"),
        (
            "switches:\n  s1:\n  s2:\nlinks:\n  - {ends: [s1, s2], bw: 5000}\n",
            5,
            "bw (Mbit/s) must be 0.001 to 1000",
        ),
        (
            "switches:\n  s1:\n  s2:\nlinks:\n  - {ends: [s1, s2], delay: soon}\n",
            5,
            "delay 'soon'",
        ),
        (
            "switches:\n  s1:\nhosts:\n  h1: {ip: 10.0.0.1/8}\nlinks:\n  - [h1, s1]\n"
            "  - [s1, h1]\n",
            7,
            "host 'h1' is linked already (line 6)",
        ),
        (
            "switches:\n  averyverylongname:\nlinks: []\n",
            2,
            "Linux allows 1 to 15",
        ),
    ],
)
def test_a_malformed_file_is_refused_with_its_line_and_problem(tmp_path, text, line, problem):
    with pytest.raises(TopologyFileError) as err:
        spec_of(text, tmp_path)
    where = f"{tmp_path / 'net.yaml'}:{line}: " if line else f"{tmp_path / 'net.yaml'}: "
    assert str(err.value).startswith(where), str(err.value)
    assert problem in str(err.value)


def test_a_delay_this_kernel_cannot_make_is_refused_and_bandwidth_is_kept(tmp_path):
    text = "switches:\n  s1:\n  s2:\nlinks:\n  - {ends: [s1, s2], bw: 10, delay: 5ms}\n"
    spec = spec_of(text, tmp_path)
    assert shaping_problems(spec, {"htb", "netem"}) == []
    (problem,) = shaping_problems(spec, {"htb"})
    assert problem.startswith(f"{tmp_path / 'net.yaml'}:5: link s1-s2 asks for delay 5ms")
    assert "no netem queueing discipline" in problem
    assert len(shaping_problems(spec, set())) == 2


def test_a_prefix_goes_in_front_of_every_name(tmp_path):
    text = "prefix: a_\nswitches:\n  s1:\nhosts:\n  h1: {ip: 10.1.0.1/16}\nlinks:\n  - [h1, s1]\n"
    spec = spec_of(text, tmp_path)
    assert [s.name for s in spec.switches] == ["a_s1"] and spec.hosts[0].name == "a_h1"
    assert [s.name for s in spec_of(text, tmp_path, prefix="b").switches] == ["bs1"]
    assert parse(text, tmp_path / "x.yaml").links[0].a == "a_h1"
