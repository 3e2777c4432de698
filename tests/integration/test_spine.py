"""The whole spine on real parts: Ryu controller, OVS, node agent, namespaces, traffic."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.agent_client import agent_call
from controller.keyfiles import read_secret
from signaling.client import ClientError, NetServClient
from tests.agents import call_agent
from tools import ovs
from tools.procs import REPO, python_env
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import LinearTopo, SingleSwitchTopo

AGENT_DEAD_AFTER = 3.0


@dataclass
class Node:
    net: Any
    client: NetServClient
    switch: Any
    hosts: list[Any]

    def agent(self) -> dict[str, Any]:
        return call_agent(self.client, self.switch)

    def to_agent(self) -> int:
        return ovs.port_counters(self.switch.name, self.switch.agent_port_name)["tx_packets"]

    def flows(self) -> set[str]:
        """Return the switch's flows without their counters, to compare before and after."""
        return {
            " ".join(
                w for w in line.split() if not w.startswith(("duration", "n_packets", "n_bytes"))
            )
            for line in ovs.dump_flows(self.switch.name)
        }


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    with ControllerProcess(tmp_path / "controller.log", agent_dead_after=AGENT_DEAD_AFTER) as ctl:
        yield ctl


@pytest.fixture
def node(controller: ControllerProcess, unique_prefix: str, tmp_path: Path) -> Iterator[Node]:
    topo = SingleSwitchTopo(k=3, prefix=unique_prefix)
    with netserv_network(
        topo, controller=controller.of_addr, rest_url=controller.url, rundir=tmp_path
    ) as net:
        client = NetServClient(controller.url)
        wait_connected(net)
        switch = net.switches[0]
        wait_ready(client, [switch.dpid])
        hosts = net.hosts
        warm_up((hosts[0], hosts[1]), (hosts[2], hosts[1]))
        yield Node(net, client, switch, hosts)


def served_match(src: Any, dst: Any, port: int = 9000) -> dict[str, object]:
    return {"ipv4_src": src.IP(), "ipv4_dst": dst.IP(), "udp_dst": port}


def module_stats(client: NetServClient, session_id: int) -> dict[str, Any]:
    return client.stats(session_id)["stats"]["modules"][0]["stats"]


def test_a_service_applies_to_its_flow_only(node: Node) -> None:
    h1, h2, h3 = node.hosts
    n, m = 150, 120
    session = node.client.setup(served_match(h1, h2), module="counter", lifetime=60)
    before = node.to_agent()
    with Receiver(h2) as rx:
        send_udp(h1, h2, 9000, n)
        send_udp(h1, h2, 9001, m)
        send_udp(h3, h2, 9000, m)
    assert module_stats(node.client, session["id"])["packets"] == n
    assert node.to_agent() - before == n  # the 2m other frames never reached the agent
    assert ovs.flow_packets(node.switch.name, int(session["cookie"], 16)) == n
    assert (rx.got(h1, 9000), rx.got(h1, 9001), rx.got(h3, 9000)) == (n, m, m)


def test_teardown_leaves_no_flow_no_chain_no_module(node: Node) -> None:
    h1, h2, _ = node.hosts
    session = node.client.setup(served_match(h1, h2), module="counter", lifetime=60)
    cookie = int(session["cookie"], 16)
    assert len(ovs.dump_flows(node.switch.name, cookie)) == 1
    send_udp(h1, h2, 9000, 20)
    final = node.client.teardown(session["id"])
    assert final["stats"]["modules"][0]["stats"]["packets"] == 20
    assert ovs.dump_flows(node.switch.name, cookie) == []
    assert node.agent()["sessions"] == [] and node.agent()["modules_loaded"] == {}
    with pytest.raises(ClientError) as err:
        node.client.session(session["id"])
    assert err.value.status == 404
    before = node.to_agent()
    send_udp(h1, h2, 9000, 20)
    assert node.to_agent() == before


def test_modules_load_and_unload_at_run_time_while_another_session_forwards(node: Node) -> None:
    h1, h2, h3 = node.hosts
    keeper = node.client.setup(served_match(h3, h2, 9001), module="counter", lifetime=60)
    assert set(node.agent()["modules_loaded"]) == {"counter"}
    agent_pid = node.switch.agent_pid
    with Receiver(h2) as rx:
        send_udp(h3, h2, 9001, 50)
        passing = node.client.setup(served_match(h1, h2), module="null", lifetime=60)
        assert set(node.agent()["modules_loaded"]) == {"counter", "null"}
        send_udp(h1, h2, 9000, 50)
        send_udp(h3, h2, 9001, 50)
        node.client.teardown(passing["id"])
        assert set(node.agent()["modules_loaded"]) == {"counter"}
        send_udp(h3, h2, 9001, 50)
    assert module_stats(node.client, keeper["id"])["packets"] == 150
    assert (rx.got(h3, 9001), rx.got(h1, 9000)) == (150, 50)
    assert node.switch.agent_pid == agent_pid  # the same agent process throughout


def test_lifetime_expiry_removes_the_session_everywhere(node: Node) -> None:
    h1, h2, _ = node.hosts
    session = node.client.setup(served_match(h1, h2), module="counter", lifetime=2)
    cookie = int(session["cookie"], 16)
    deadline = time.monotonic() + 10
    while node.client.sessions() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert node.client.sessions() == []
    assert ovs.dump_flows(node.switch.name, cookie) == []
    assert node.agent()["sessions"] == []


def test_refresh_extends_the_session_at_controller_switch_and_agent(node: Node) -> None:
    h1, h2, _ = node.hosts
    session = node.client.setup(served_match(h1, h2), module="counter", lifetime=3)
    cookie = int(session["cookie"], 16)
    send_udp(h1, h2, 9000, 10)
    time.sleep(1.5)
    refreshed = node.client.refresh(session["id"], lifetime=30)
    assert refreshed["lifetime"] == 30 and refreshed["expires_in"] > 29
    (flow,) = ovs.dump_flows(node.switch.name, cookie)
    # the rest of the lifetime + grace, counted from the refresh, in whole seconds rounded down
    assert "hard_timeout=39" in flow or "hard_timeout=40" in flow
    time.sleep(3)  # past the first lifetime: still there, still counting
    send_udp(h1, h2, 9000, 10)
    assert module_stats(node.client, session["id"])["packets"] == 20
    assert [s["id"] for s in node.client.sessions()] == [session["id"]]


def _post_raw(url: str, data: bytes, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/netserv/sessions", data=data, method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "not JSON"),
        (b'{"match": {"udp_dst": 9000}, "module": "nope"}', 400, "unknown module"),
        (b'{"match": {"udp_port": 9000}, "module": "counter"}', 400, "unknown match field"),
        (b'{"match": {"udp_dst": 9000}, "module": "counter", "lifetime": -1}', 400, "lifetime"),
        (
            b'{"match": {"udp_dst": 9000}, "module": "counter", "node": "00000000000000ee"}',
            404,
            "no NetServ node",
        ),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    node: Node, controller: ControllerProcess, body: bytes, status: int, words: str
) -> None:
    flows = node.flows()
    got, reply = _post_raw(controller.url, body, controller.token)
    assert got == status and words in reply["error"]
    assert node.flows() == flows
    assert node.client.sessions() == []
    assert node.agent()["sessions"] == [] and node.agent()["modules_loaded"] == {}


def test_an_overlapping_request_conflicts_and_changes_nothing(node: Node) -> None:
    h1, h2, _ = node.hosts
    node.client.setup(served_match(h1, h2), module="counter")
    flows = node.flows()
    with pytest.raises(ClientError) as err:
        node.client.setup(served_match(h1, h2), module="null")
    assert err.value.status == 409
    assert node.flows() == flows and len(node.client.sessions()) == 1
    assert set(node.agent()["modules_loaded"]) == {"counter"}


def test_a_killed_agent_is_bypassed_at_once_then_restarted_and_its_session_served(
    node: Node,
) -> None:
    h1, h2, _ = node.hosts
    session = node.client.setup(served_match(h1, h2), module="counter", lifetime=300)
    cookie = int(session["cookie"], 16)
    supervisor, pid = node.switch.supervisor_pid, node.switch.agent_pid
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # Its supervisor tells the controller at once, which takes the detour out (counter
    # fails open), and starts it again; the controller gives it the session's chain and
    # detour. (test_heal.py measures the gap in a steady flow.)
    with Receiver(h2) as rx:  # through the switch alone, or the restarted agent by now
        send_udp(h1, h2, 9000, 30)
    assert rx.got(h1, 9000) == 30
    deadline = time.monotonic() + 20
    while node.client.session(session["id"])["state"] != "active" or node.agent()["pid"] == pid:
        assert time.monotonic() < deadline, "the session was not served again"
        time.sleep(0.2)
    assert node.switch.supervisor_pid == supervisor and node.switch.agent_pid != pid
    (_, _, age) = detour(node, cookie)
    assert age < time.monotonic() - killed  # taken out, and added again since the kill
    before = module_stats(node.client, session["id"])["packets"]
    send_udp(h1, h2, 9000, 20)
    assert module_stats(node.client, session["id"])["packets"] == before + 20
    assert node.agent()["sessions"] == [session["id"]]


def detour(node: Node, cookie: int) -> tuple[float, int, float]:
    """Return (when asked, packet count, age in s) of the detour flow, as the switch says."""
    (line,) = ovs.dump_flows(node.switch.name, cookie)
    packets = re.search(r"n_packets=(\d+)", line)
    duration = re.search(r"duration=([\d.]+)s", line)
    assert packets and duration, line
    return time.monotonic(), int(packets.group(1)), float(duration.group(1))


def agent_counted(node: Node, url: str, session_id: int) -> int:
    """Return what the session's counter module counted, asked of the agent itself
    (signed with the node's key, as the controller asks, which may be down)."""
    key = read_secret(node.switch.key_file)
    stats = agent_call(key, node.switch.dpid_int, url, "GET", f"/sessions/{session_id}")
    return stats["modules"][0]["stats"]["packets"]


def test_a_controller_killed_and_restarted_keeps_the_detoured_flow_served(
    node: Node, controller: ControllerProcess
) -> None:
    h1, h2, _ = node.hosts
    lifetime, frames, rate = 300, 3000, 150.0  # 20 s of frames, across the whole episode
    old = node.client.setup(served_match(h1, h2), module="counter", lifetime=lifetime)
    made_at, cookie = time.monotonic(), int(old["cookie"], 16)
    agent_url = next(n for n in node.client.nodes() if n["dpid"] == node.switch.dpid)["agent"][
        "url"
    ]
    agent_pid = node.switch.agent_pid
    sent: list[int] = []
    with Receiver(h2) as rx:
        sender = threading.Thread(
            target=lambda: sent.append(send_udp(h1, h2, 9000, frames, rate=rate))
        )
        sender.start()
        time.sleep(2)
        seen = [detour(node, cookie)]
        os.kill(controller.pid, signal.SIGKILL)
        controller.proc.wait(10)
        # No controller: the detour stays in the switch and the agent keeps counting.
        counted = agent_counted(node, agent_url, old["id"])
        time.sleep(2)
        assert agent_counted(node, agent_url, old["id"]) > counted
        seen.append(detour(node, cookie))
        controller.start()
        wait_ready(node.client, [node.switch.dpid], timeout=30)
        back = node.client.session(old["id"])
        elapsed = time.monotonic() - made_at
        assert (back["id"], back["cookie"], back["tag"]) == (old["id"], old["cookie"], old["tag"])
        assert (back["match"], back["modules"], back["state"]) == (
            old["match"],
            old["modules"],
            "active",
        )
        assert lifetime - elapsed - 2 <= back["expires_in"] <= lifetime - elapsed + 1
        time.sleep(3)  # the switch has reconnected and been reconciled by now
        seen.append(detour(node, cookie))
        sender.join(60)
    # The detour was never deleted nor added again: its counter only grew, and it aged
    # as the clock did (Open vSwitch restarts a flow's age when it is added again).
    packets = [p for _, p, _ in seen]
    assert packets == sorted(packets) and packets[0] < packets[1] < packets[2]
    (first, _, age_first), (last, _, age_last) = seen[0], seen[-1]
    assert age_last - age_first >= last - first - 1
    # Every frame sent across the episode arrived, each through the module.
    assert sent == [frames] and rx.got(h1, 9000) == frames
    assert module_stats(node.client, old["id"])["packets"] == frames
    assert ovs.flow_packets(node.switch.name, cookie) == frames
    assert node.switch.agent_pid == agent_pid and node.agent()["sessions"] == [old["id"]]
    final = node.client.teardown(old["id"])
    assert final["stats"]["modules"][0]["stats"]["packets"] == frames
    assert ovs.dump_flows(node.switch.name, cookie) == [] and node.agent()["sessions"] == []
    new = node.client.setup(served_match(h1, h2), module="counter", lifetime=60)
    assert new["id"] > old["id"]
    send_udp(h1, h2, 9000, 25)
    assert module_stats(node.client, new["id"])["packets"] == 25


def test_the_cli_drives_sessions(node: Node, controller: ControllerProcess) -> None:
    h1, h2, _ = node.hosts

    def cli(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "tools.cli", *args]
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, env=python_env(), timeout=60
        )

    url = ["--url", controller.url]
    made = cli(
        "session",
        *url,
        "setup",
        "--module",
        "counter",
        "--param",
        "log_every=5",
        "--match",
        f"ipv4_src={h1.IP()}",
        "--match",
        "udp_dst=9000",
        "--lifetime",
        "30",
    )
    assert made.returncode == 0, made.stderr
    session = json.loads(made.stdout)
    assert session["match"]["ipv4_src"] == h1.IP() and session["lifetime"] == 30
    send_udp(h1, h2, 9000, 10)
    stats = json.loads(cli("session", *url, "stats", str(session["id"])).stdout)
    assert stats["stats"]["modules"][0]["stats"]["packets"] == 10
    bad = cli("session", *url, "setup", "--module", "nope", "--match", "udp_dst=1")
    assert bad.returncode == 1 and "400" in bad.stderr and "unknown module" in bad.stderr
    assert cli("session", *url, "teardown", str(session["id"])).returncode == 0
    assert json.loads(cli("session", *url, "list").stdout) == []
    (listed,) = json.loads(cli("nodes", *url).stdout)
    assert listed["ready"] and listed["dpid"] == node.switch.dpid
    names = {m["name"] for m in json.loads(cli("modules", *url).stdout)["modules"]}
    assert {"counter", "null"} <= names


def test_placement_on_the_netserv_node_of_a_chain(
    controller: ControllerProcess, unique_prefix: str, tmp_path: Path
) -> None:
    topo = LinearTopo(n=2, k=1, netserv=[2], prefix=unique_prefix)
    with netserv_network(
        topo, controller=controller.of_addr, rest_url=controller.url, rundir=tmp_path
    ) as net:
        client = NetServClient(controller.url)
        wait_connected(net)
        s1, s2 = net.switches
        wait_ready(client, [s2.dpid])
        h1, h2 = net.hosts
        warm_up((h1, h2))
        session = client.setup(served_match(h1, h2), module="counter")  # no node named
        assert session["node"] == s2.dpid
        with Receiver(h2) as rx:
            send_udp(h1, h2, 9000, 40)
        assert rx.got(h1, 9000) == 40
        assert module_stats(client, session["id"])["packets"] == 40
