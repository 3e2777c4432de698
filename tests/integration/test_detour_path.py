"""A detoured frame's way on real parts: jumbo frames, and every frame accounted for."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodes.sockdiag import packet_socket_rcvbufs
from signaling.client import NetServClient
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.ports import PORT_RCVBUF
from topo.topos import MtuIntf, SingleSwitchTopo

JUMBO = 9000
PING_JUMBO = JUMBO - 28  # IPv4 and ICMP headers


def mtu(ifname: str) -> int:
    return int(Path("/sys/class/net", ifname, "mtu").read_text())


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    # A stopped agent sends no heartbeat: give it time before it is declared dead.
    with ControllerProcess(tmp_path / "controller.log", agent_dead_after=30) as ctl:
        yield ctl


def network(controller: ControllerProcess, prefix: str, tmp_path: Path, **topo: Any) -> Any:
    # An agent stopped for a moment (below) must fill its queue and then read it: no
    # supervisor taking its detours out, no frame dropped for the time it waited.
    return netserv_network(
        SingleSwitchTopo(prefix=prefix, **topo),
        controller=controller.of_addr,
        rest_url=controller.url,
        rundir=tmp_path,
        agent_args=["--hang-after", "60", "--max-frame-age", "60"],
    )


def ready(net: Any, controller: ControllerProcess) -> NetServClient:
    client = NetServClient(controller.url)
    wait_connected(net)
    wait_ready(client, [net.switches[0].dpid])
    return client


def ping_jumbo(src: Any, dst: Any, count: int = 3) -> str:
    return src.cmd(f"ping -c {count} -i 0.2 -W 2 -M do -s {PING_JUMBO} {dst.IP()}")


def test_a_jumbo_frame_crosses_a_detour_intact_and_is_counted(
    controller: ControllerProcess, unique_prefix: str, tmp_path: Path
) -> None:
    with network(controller, unique_prefix, tmp_path, k=2, mtu=JUMBO) as net:
        client = ready(net, controller)
        switch, (h1, h2) = net.switches[0], net.hosts
        warm_up((h1, h2))
        assert mtu(switch.agent_iface) == mtu(switch.agent_port_name) == JUMBO
        assert " 0% packet loss" in ping_jumbo(h1, h2)  # plain OVS carries it
        # OVS credits a flow's recent frames to the rule it matches when its counters
        # are next brought up to date: let the plain ping's go to the plain rule.
        time.sleep(1.5)
        match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "ip_proto": 1}
        session = client.setup(match, modules=[{"name": "null"}, {"name": "counter"}])
        out = ping_jumbo(h1, h2)
        # ping compares the echoed payload: a cut or changed frame shows as loss or "wrong data"
        assert " 0% packet loss" in out and "wrong data" not in out, out
        stats = client.stats(session["id"])
        assert stats["stats"]["modules"][1]["stats"] == {
            "packets": 3,
            "bytes": 3 * (JUMBO + 14),
            "active_seconds": stats["stats"]["modules"][1]["stats"]["active_seconds"],
        }
        path = settled(client, session["id"])
        assert path["switch_sent"] == path["agent_received"] == path["agent_returned"] == 3
        assert path["lost_before_agent"] == 0 and path["node_losses"]["agent_too_big"] == 0


def test_the_agent_link_follows_a_larger_port_added_later(
    controller: ControllerProcess, unique_prefix: str, tmp_path: Path
) -> None:
    with network(controller, unique_prefix, tmp_path, k=1) as net:
        switch, (h1,) = net.switches[0], net.hosts
        assert mtu(switch.agent_iface) == 1500
        link = net.addLink(
            h1,
            switch,
            port2=5,
            intfName1=f"{h1.name}-eth1",
            intfName2=f"{switch.name}-eth5",
            intf=MtuIntf,
            mtu=JUMBO,
        )
        switch.attach(link.intf2)
        assert mtu(switch.agent_iface) == mtu(switch.agent_port_name) == JUMBO


def test_the_switch_reads_the_agent_port_with_a_large_buffer_and_restores_the_default(
    controller: ControllerProcess, unique_prefix: str, tmp_path: Path
) -> None:
    rmem_default = Path("/proc/sys/net/core/rmem_default").read_text()
    with network(controller, unique_prefix, tmp_path, k=1) as net:
        switch = net.switches[0]
        if switch.datapath != "user":
            pytest.skip("the kernel datapath reads its ports without a packet socket")
        (rcvbuf,) = packet_socket_rcvbufs(switch.agent_port_name)  # the switch's socket
        assert rcvbuf >= PORT_RCVBUF
        assert Path("/proc/sys/net/core/rmem_default").read_text() == rmem_default


def test_frames_lost_before_the_agent_are_counted_under_their_cause(
    controller: ControllerProcess, unique_prefix: str, tmp_path: Path
) -> None:
    n = 6000  # 1400-byte frames: more than the agent's receive queue holds
    with network(controller, unique_prefix, tmp_path, k=2) as net:
        client = ready(net, controller)
        switch, (h1, h2) = net.switches[0], net.hosts
        warm_up((h1, h2))
        match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
        session = client.setup(match, module="null", lifetime=120)
        before = client.stats(session["id"])["path"]["node_losses"]
        with Receiver(h2) as rx:
            os.kill(switch.agent_pid, signal.SIGSTOP)  # the agent reads nothing for a moment
            try:
                send_udp(h1, h2, 9000, n, rate=0, size=1400)
            finally:
                os.kill(switch.agent_pid, signal.SIGCONT)
            path = settled(client, session["id"])
        after = path["node_losses"]
        grew = {k: after[k] - before[k] for k in before if after[k] is not None}
        assert 0 < path["switch_sent"] <= n
        assert path["lost_before_agent"] > 0
        assert path["switch_sent"] == path["agent_received"] + path["lost_before_agent"]
        assert grew["agent_queue_dropped"] > 0
        assert path["lost_before_agent"] == grew["agent_queue_dropped"] + grew["switch_tx_dropped"]
        assert path["agent_returned"] == path["agent_received"]  # null drops nothing
        assert rx.got(h1, 9000) == path["agent_returned"] - grew["switch_queue_dropped"]


def settled(client: NetServClient, session_id: int, timeout: float = 30.0) -> dict[str, Any]:
    """Return the session's frame path once its counters stayed put for 1.5 s.

    Open vSwitch brings its flow counters up to date in the background about
    every half second, so one unchanged read is not enough.
    """
    deadline, reads = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        reads = [*reads[-2:], client.stats(session_id)["path"]]
        if len(reads) == 3 and reads[0] == reads[1] == reads[2]:
            return reads[-1]
        time.sleep(0.5)
    raise TimeoutError(f"session {session_id}'s counters still move: {reads[-1]}")
