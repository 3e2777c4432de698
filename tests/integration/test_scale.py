"""More sessions on one node than one VLAN id can name, on real parts.

A detour's tag is carried in its 802.1Q header's VLAN id and priority bits
(`agentproto/tags.py`), so a node holds more than the 4,094 sessions a VLAN id
alone could tell apart. Here a node holds 4,095 of them, and the next one, whose tag
needs the priority bits, detours its flow, which its module counts and its receiver
gets whole; its teardown leaves none of its flows behind.
"""

from __future__ import annotations

import re
from pathlib import Path

from agentproto.tags import tag_tci
from controller import tables
from tools import ovs
from tools.bench_control import Sessions, filler_match
from tools.scenario import Receiver, send_udp, warm_up
from topo.controller import ControllerProcess, wait_ready
from topo.net import netserv_network, wait_connected
from topo.topos import SingleSwitchTopo

FILLERS = 4095  # one more than a VLAN id alone names


def session_cookies(bridge: str) -> list[int]:
    """Return the cookie of every session flow the switch holds."""
    cookies = [int(m.group(1), 16) for m in map(re.compile(r"cookie=(0x[0-9a-f]+)").search,
                                                ovs.dump_flows(bridge)) if m]  # fmt: skip
    return [c for c in cookies if tables.session_of_cookie(c) is not None]


def test_a_node_holds_more_sessions_than_vlan_ids_and_serves_one_tagged_beyond_them(
    unique_prefix: str, tmp_path: Path
) -> None:
    with ControllerProcess(tmp_path / "controller.log") as ctl:
        topo = SingleSwitchTopo(prefix=unique_prefix, k=2)
        with netserv_network(
            topo, controller=ctl.of_addr, rest_url=ctl.url, rundir=tmp_path
        ) as net:
            switch, (h1, h2) = net.switches[0], net.hosts
            client = ctl.client(timeout=30)
            wait_connected(net)
            wait_ready(client, [switch.dpid])
            warm_up((h1, h2))
            fillers, _, _ = Sessions(lambda: ctl.client(timeout=30)).setup(
                [filler_match(i) for i in range(FILLERS)], clients=8
            )
            match = {"ipv4_src": h1.IP(), "ipv4_dst": h2.IP(), "udp_dst": 9000}
            session = client.setup(match, module="counter", lifetime=120)
            assert session["tag"] > 4095 and tag_tci(session["tag"])[0] > 0  # priority bits used
            assert len(session_cookies(switch.name)) == FILLERS + 1
            assert {s["tag"] for s in client.sessions()} == set(range(1, FILLERS + 2))

            with Receiver(h2) as rx:
                sent = send_udp(h1, h2, 9000, 40, rate=400)
            stats = client.stats(session["id"])
            assert stats["stats"]["tag"] == session["tag"]  # the agent read the whole tag
            assert stats["stats"]["modules"][0]["stats"]["packets"] == sent == 40
            assert rx.got(h1, 9000) == 40  # back from the agent, untagged, to the receiver

            cookie = int(session["cookie"], 16)
            client.teardown(session["id"])
            assert ovs.dump_flows(switch.name, cookie) == []
            assert sorted(session_cookies(switch.name)) == sorted(
                tables.session_cookie(i) for i in fillers
            )
