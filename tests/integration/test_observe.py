"""An observe-only session on real OVS and agents: the switch forwards each frame at
once and copies it to the agent, which sends nothing back; a stopped agent costs the
flow nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from signaling.client import NetServClient
from tests.integration.test_detour_path import settled
from tests.integration.test_heal import longest_gap, wait_state
from tools import ovs
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

FRAMES = 300
RATE = 500.0  # frames per second
AT_ONCE = 0.2  # seconds: the longest a steady stream may go without a frame arriving


@pytest.fixture
def node(unique_prefix: str, tmp_path) -> Iterator[dict[str, Any]]:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        topo = SingleSwitchTopo(k=2, prefix=unique_prefix)
        with netserv_network(topo, ctl.of_addr, rest_url=ctl.url, rundir=tmp_path) as net:
            client = ctl.client()
            wait_connected(net)
            switch = net.switches[0]
            wait_ready(client, [switch.dpid])
            h1, h2 = net.hosts
            warm_up((h1, h2))
            yield {"client": client, "switch": switch, "h1": h1, "h2": h2}


def agent_port(switch: Any) -> dict[str, int]:
    return ovs.port_counters(switch.name, switch.agent_port_name)


def monitored(client: NetServClient, session_id: int, want: int, timeout: float = 5) -> int:
    """Return the monitor's packet count once it reached `want` (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        got = client.stats(session_id)["stats"]["modules"][0]["stats"]["packets"]
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def held(arrivals: list[tuple[float, int]]) -> float:
    """Return the longest a steady stream went without a frame arriving (seconds)."""
    return longest_gap(arrivals, arrivals[0][0], arrivals[-1][0])


def test_an_observe_only_session_copies_the_flow_and_never_holds_it(node):
    client, switch, h1, h2 = node["client"], node["switch"], node["h1"], node["h2"]
    match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
    session = client.setup(match, module="monitor", lifetime=120)
    before = agent_port(switch)
    with Receiver(h2, arrivals=True) as rx:
        assert send_udp(h1, h2, 9000, FRAMES, RATE) == FRAMES
    assert rx.got(h1, 9000) == FRAMES
    assert monitored(client, session["id"], FRAMES) == FRAMES
    after = agent_port(switch)
    assert after["tx_packets"] - before["tx_packets"] == FRAMES  # a copy of each
    assert after["rx_packets"] == before["rx_packets"]  # and nothing back
    path = settled(client, session["id"])
    assert path["copy"] and path["switch_sent"] == path["agent_received"] == FRAMES
    assert path["lost_before_agent"] == 0 and path["agent_returned"] is None
    stats = client.stats(session["id"])["stats"]
    assert (stats["returned"], stats["dropped"], stats["errors"]) == (0, 0, 0)
    monitor = stats["modules"][0]["stats"]
    assert monitor["flows"] == FRAMES  # the sender numbers its frames by source port
    assert all(f["flow"].startswith(f"udp {h1.IP()}:") for f in monitor["top"])
    assert held(rx.arrived(h1, 9000)) < AT_ONCE

    pid = switch.agent_pid
    os.kill(pid, signal.SIGSTOP)  # the flow must not notice
    try:
        with Receiver(h2, arrivals=True) as rx:
            assert send_udp(h1, h2, 9000, FRAMES, RATE) == FRAMES
        # its supervisor saw the hang: copying to it stopped, and nothing was held
        wait_state(client, session["id"], "suspended", timeout=5)
    finally:
        os.kill(pid, signal.SIGCONT)
    arrivals = rx.arrived(h1, 9000)
    assert len(arrivals) == FRAMES and held(arrivals) < AT_ONCE
    assert [n for _, n in arrivals] == sorted(n for _, n in arrivals)
    wait_state(client, session["id"], "active", timeout=10)
    assert switch.agent_pid == pid  # it came back by itself
