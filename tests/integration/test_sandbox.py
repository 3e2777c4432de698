"""Hostile modules on a real node: contained, reported, and no other session loses a frame.

Modules that raise, loop forever, allocate without bound, fork, open a socket and read
/etc/shadow, each on a session of its own, while a second session (the shipped
`counter`, in the agent) forwards a steady stream on the same node; and a node whose
module loops forever in the agent itself stays alive to the controller.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodes.bundle import SHIPPED_MODULES
from signaling.client import NetServClient
from tests.agents import call_agent
from tests.integration.test_sandbox_worker import CONTAINED, HOSTILE, write_module
from tools.procs import REPO, python_env, stop_process
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.node import NetServSwitch
from topo.topos import SingleSwitchTopo

AGENT_DEAD_AFTER = 3.0


@dataclass
class Node:
    net: Any
    client: NetServClient
    hosts: list[Any]

    def ready(self) -> bool:
        (node,) = self.client.nodes()
        return bool(node["ready"])


def modules(root: Path) -> Path:
    """Write the hostile modules, and the shipped counter's code under another name
    (`counter_copy`: not in the shipped folder, so isolated), into `root`."""
    for name, body in HOSTILE.items():
        write_module(root, name, body)
    write_module(root, "spinner", HOSTILE["looper"], 'tier = "trusted"\n')
    copy = root / "counter_copy"
    copy.mkdir()
    manifest = (SHIPPED_MODULES / "counter" / "manifest.toml").read_text()
    (copy / "manifest.toml").write_text(manifest.replace('"counter"', '"counter_copy"', 1))
    (copy / "module.py").write_text((SHIPPED_MODULES / "counter" / "module.py").read_text())
    return root


@pytest.fixture
def node(unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    mods = [modules(tmp_path / "modules")]
    # `spinner` runs in the agent (the test of a node whose module hogs the packet loop)
    argv = NetServSwitch.agent_argv
    monkeypatch.setattr(
        NetServSwitch, "agent_argv", lambda self: argv(self) + ["--trusted", "shipped,spinner"]
    )
    logfile = tmp_path / "controller.log"
    with ControllerProcess(logfile, module_path=mods, agent_dead_after=AGENT_DEAD_AFTER) as ctl:
        topo = SingleSwitchTopo(k=3, prefix=unique_prefix)
        with netserv_network(
            topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path, module_path=mods
        ) as net:
            client = NetServClient(ctl.url)
            wait_connected(net)
            wait_ready(client, [net.switches[0].dpid])
            h1, h2, h3 = net.hosts
            warm_up((h1, h2), (h3, h2))
            yield Node(net, client, [h1, h2, h3])


def match(src: Any, dst: Any, port: int) -> dict[str, object]:
    return {"ipv4_src": src.IP(), "ipv4_dst": dst.IP(), "udp_dst": port}


def start_sending(src: Any, dst: Any, port: int, count: int, rate: float) -> Any:
    """Start sending `count` UDP frames at `rate` a second in the background; return the process."""
    argv = [sys.executable, "-m", "tools.traffic", "send", "--iface", src.defaultIntf().name]
    argv += ["--src-mac", src.MAC(), "--dst-mac", dst.MAC(), "--src-ip", src.IP()]
    argv += ["--dst-ip", dst.IP(), "--dport", str(port), "--count", str(count)]
    argv += ["--rate", str(rate)]
    return src.popen(argv, cwd=str(REPO), env=python_env(), stdout=-1, stderr=-1, text=True)


def test_hostile_modules_are_contained_and_another_session_loses_nothing(node: Node) -> None:
    h1, h2, h3 = node.hosts
    steady = node.client.setup(match(h3, h2, 9000), module="counter", lifetime=120)
    n_steady, n_each = 4000, 40
    with Receiver(h2) as rx:
        sender = start_sending(h3, h2, 9000, n_steady, rate=200.0)
        try:
            sessions = {}
            for port, name in enumerate(HOSTILE, 9101):
                s = node.client.setup(match(h1, h2, port), module=name, lifetime=120)
                sessions[name] = s["id"]
                assert send_udp(h1, h2, port, n_each, rate=500.0) == n_each
                assert node.ready()
            assert sender.poll() is None, "the steady stream ended before the hostile ones"
            out, err = sender.communicate(timeout=60)
            assert sender.returncode == 0, err
        finally:
            stop_process(sender)
    stats = node.client.stats(steady["id"])["stats"]
    # The steady session: every frame went through its counter and reached h2.
    assert rx.got(h3, 9000) == n_steady
    assert stats["modules"][0]["stats"]["packets"] == stats["returned"] == n_steady
    assert stats["modules"][0]["state"] == "running" and stats["errors"] == 0
    for port, name in enumerate(HOSTILE, 9101):
        entry = node.client.stats(sessions[name])["stats"]["modules"][0]
        assert entry["tier"] == "isolated" and entry["state"] == "quarantined", name
        assert CONTAINED[name] in entry["reason"], (name, entry["reason"])
        assert rx.got(h1, port) == n_each, name  # failure "open": its frames went on
    reader = node.client.stats(sessions["reader"])["stats"]
    assert "PermissionError" in reader["last_error"]
    assert node.ready()


def test_counter_counts_the_same_isolated_as_trusted(node: Node) -> None:
    h1, h2, _ = node.hosts
    n = 300
    trusted = node.client.setup(match(h1, h2, 9200), module="counter", lifetime=60)
    isolated = node.client.setup(match(h1, h2, 9201), module="counter_copy", lifetime=60)
    with Receiver(h2) as rx:
        assert send_udp(h1, h2, 9200, n, rate=2000.0) == n
        assert send_udp(h1, h2, 9201, n, rate=2000.0) == n
    a = node.client.stats(trusted["id"])["stats"]
    b = node.client.stats(isolated["id"])["stats"]
    assert (a["modules"][0]["tier"], b["modules"][0]["tier"]) == ("trusted", "isolated")
    assert rx.got(h1, 9200) == rx.got(h1, 9201) == n
    counts = ("packets", "bytes")
    assert [a["modules"][0]["stats"][k] for k in counts] == [
        b["modules"][0]["stats"][k] for k in counts
    ]
    assert a["modules"][0]["stats"]["packets"] == n
    assert (a["returned"], a["errors"]) == (b["returned"], b["errors"]) == (n, 0)
    # The agent says which modules it trusts, and what confines the others.
    tiers = call_agent(node.client, node.net.switches[0])["tiers"]
    assert tiers["policy"]["trusted"] == ["shipped", "spinner"]
    assert tiers["isolation"]["landlock_abi"] >= 1
    assert b["modules"][0]["confined"]["landlock_abi"] == tiers["isolation"]["landlock_abi"]


def test_a_module_looping_in_the_agent_never_makes_the_node_look_dead(node: Node) -> None:
    h1, h2, h3 = node.hosts
    other = node.client.setup(match(h3, h2, 9300), module="counter", lifetime=120)
    spin = node.client.setup(match(h1, h2, 9301), module="spinner", lifetime=120)
    assert node.client.stats(spin["id"])["stats"]["modules"][0]["tier"] == "trusted"
    send_udp(h1, h2, 9301, 3)  # the packet loop enters the module and never comes back
    deadline = time.monotonic() + 3 * AGENT_DEAD_AFTER
    while time.monotonic() < deadline:
        assert node.ready(), "the controller took the node for dead"
        time.sleep(0.5)
    # The control API answers too, from its own threads: both sessions are still there.
    assert node.client.stats(other["id"])["stats"]["session"] == other["id"]
    assert node.client.session(spin["id"])["id"] == spin["id"]
