"""A detoured frame's way on real parts: jumbo frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signaling.client import NetServClient
from tools.procs import ControllerProcess
from tools.scenario import wait_ready, warm_up
from topo.net import netserv_network, wait_connected
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
    return netserv_network(
        SingleSwitchTopo(prefix=prefix, **topo),
        controller=controller.of_addr,
        rest_url=controller.url,
        rundir=tmp_path,
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
