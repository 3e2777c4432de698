"""Links, host locations and paths: the pure topology, the probe codec, and the
controller's network state fed by simulated probes and packet-ins."""

from __future__ import annotations

import struct
from collections import deque

import pytest

from controller import tables
from controller.discovery import ETH_TYPE_LLDP, probe_frame, read_probe, sender_ipv4
from controller.errors import InvalidRequest, Unavailable
from controller.messages import FlowDelete, Output, PacketOut
from controller.network import Agent, Network
from controller.topology import LINK_EXPIRY, Hop, Link, SwitchPort, Topology

KEY = b"k" * 32
BROADCAST = bytes.fromhex("ffffffffffff")


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_request(src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    ips = bytes(map(int, src_ip.split("."))), bytes(map(int, dst_ip.split(".")))
    return (
        BROADCAST
        + mac_bytes(src_mac)
        + struct.pack("!HHHBBH", 0x0806, 1, 0x0800, 6, 4, 1)
        + mac_bytes(src_mac)
        + ips[0]
        + bytes(6)
        + ips[1]
    )


def ipv4_frame(src_ip: str, dst_mac: str = "00:00:00:00:00:09", vlan: int | None = None) -> bytes:
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes(4), bytes(4))
    header = header[:12] + bytes(map(int, src_ip.split("."))) + bytes([10, 0, 0, 9])
    return mac_bytes(dst_mac) + bytes(6) + tag + struct.pack("!H", 0x0800) + header + bytes(8)


P = SwitchPort


# --- the probe codec --------------------------------------------------------------
def test_a_probe_names_the_switch_and_port_it_left_by():
    frame = probe_frame(0x2A, 7, KEY, now=100.0)
    assert frame[:6] == bytes.fromhex("0180c200000e")
    assert struct.unpack_from("!H", frame, 12)[0] == ETH_TYPE_LLDP
    assert b"dpid:000000000000002a" in frame  # chassis id as Ryu's discovery writes it
    assert read_probe(frame, KEY, now=101.5, max_age=LINK_EXPIRY) == (0x2A, 7)


def test_a_probe_someone_else_wrote_or_altered_is_refused():
    frame = bytearray(probe_frame(1, 2, KEY, now=100.0))
    assert read_probe(bytes(frame), b"another key" * 3, 100.0, LINK_EXPIRY) is None
    port_at = frame.index(bytes([2, 0, 0, 0, 2]))  # the port id TLV's subtype and number
    frame[port_at + 4] = 3  # claim another port
    assert read_probe(bytes(frame), KEY, 100.0, LINK_EXPIRY) is None


@pytest.mark.parametrize("now", [100.0 + LINK_EXPIRY + 0.01, 98.0])
def test_an_old_or_future_probe_is_refused(now):
    assert read_probe(probe_frame(1, 2, KEY, now=100.0), KEY, now, LINK_EXPIRY) is None


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        bytes(13),
        arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.2"),
        probe_frame(1, 2, KEY, 100.0)[:40],  # cut inside a TLV
        probe_frame(1, 2, KEY, 100.0)[:-2],  # no end TLV
        # a plain LLDP frame with chassis and port but no authenticator
        bytes.fromhex("0180c200000e") + bytes(6) + bytes.fromhex("88cc")
        + struct.pack("!H", 1 << 9 | 22) + b"\x07dpid:0000000000000001"
        + struct.pack("!H", 2 << 9 | 5) + b"\x02\x00\x00\x00\x01"
        + struct.pack("!H", 3 << 9 | 2) + b"\x00\x78" + b"\x00\x00",
    ],
)  # fmt: skip
def test_frames_that_are_not_an_intact_probe_are_refused(frame):
    assert read_probe(frame, KEY, 100.0, LINK_EXPIRY) is None


def test_a_frames_sender_address_is_read_from_arp_and_ipv4():
    assert sender_ipv4(arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.2")) == "10.0.0.1"
    assert sender_ipv4(ipv4_frame("10.0.0.7")) == "10.0.0.7"
    assert sender_ipv4(ipv4_frame("10.0.0.8", vlan=5)) == "10.0.0.8"


@pytest.mark.parametrize(
    "frame",
    [
        arp_request("00:00:00:00:00:01", "0.0.0.0", "10.0.0.2"),  # an ARP probe
        ipv4_frame("0.0.0.0"),  # DHCP discover
        ipv4_frame("224.0.0.1"),
        ipv4_frame("255.255.255.255"),
        ipv4_frame("127.0.0.1"),
        arp_request("00:00:00:00:00:01", "10.0.0.1", "10.0.0.2")[:30],
        ipv4_frame("10.0.0.1")[:30],
        bytes(6) * 2 + b"\x86\xdd" + bytes(40),  # IPv6
        probe_frame(1, 1, KEY, 0.0),
        b"short",
    ],
)
def test_frames_that_claim_no_host_address_give_none(frame):
    assert sender_ipv4(frame) is None


# --- links ------------------------------------------------------------------------
def test_links_are_directed_and_expire_when_their_probes_stop():
    topo = Topology()
    assert topo.link_seen(P(1, 2), P(2, 2), now=0.0)
    assert not topo.link_seen(P(1, 2), P(2, 2), now=1.0)  # known: confirmed, not new
    assert topo.link_seen(P(2, 2), P(1, 2), now=2.0)
    assert topo.links() == [Link(P(1, 2), P(2, 2)), Link(P(2, 2), P(1, 2))]
    assert topo.link_ports() == {P(1, 2), P(2, 2)}
    assert topo.expire(now=1.0 + LINK_EXPIRY) == []
    assert topo.expire(now=1.01 + LINK_EXPIRY) == [Link(P(1, 2), P(2, 2))]
    assert topo.links() == [Link(P(2, 2), P(1, 2))]
    topo.link_seen(P(2, 2), P(1, 2), now=LINK_EXPIRY)  # still confirmed: stays
    assert topo.expire(now=2 * LINK_EXPIRY) == []
    assert topo.expire(now=2 * LINK_EXPIRY + 0.01) == [Link(P(2, 2), P(1, 2))]
    assert topo.link_ports() == set()


def test_a_gone_switch_or_port_takes_its_links_along():
    topo = Topology()
    for a, b in ((P(1, 2), P(2, 2)), (P(2, 3), P(3, 2))):
        topo.link_seen(a, b, 0.0)
        topo.link_seen(b, a, 0.0)
    assert topo.port_gone(P(2, 3)) == [Link(P(2, 3), P(3, 2)), Link(P(3, 2), P(2, 3))]
    assert topo.switch_gone(1) == [Link(P(1, 2), P(2, 2)), Link(P(2, 2), P(1, 2))]
    assert topo.links() == []


# --- hosts ------------------------------------------------------------------------
H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"


def test_a_host_is_located_at_the_edge_port_it_sends_from():
    topo = Topology()
    assert topo.host_seen(P(1, 1), H1, "10.0.0.1", now=5.0)
    assert topo.locate("10.0.0.1") == P(1, 1)
    (host,) = topo.hosts()
    assert (host.mac, host.ipv4, host.at, host.seen) == (H1, ("10.0.0.1",), P(1, 1), 5.0)


def test_hosts_are_not_learned_on_link_or_agent_ports():
    topo = Topology()
    topo.link_seen(P(1, 2), P(2, 2), 0.0)
    assert not topo.host_seen(P(2, 2), H1, "10.0.0.1", 1.0)  # came from switch 1
    assert not topo.host_seen(P(1, 2), H1, "10.0.0.1", 1.0)  # the link's other end too
    assert not topo.host_seen(P(1, 4), H1, "10.0.0.1", 1.0, agent_ports={4})
    assert topo.hosts() == []
    with pytest.raises(Unavailable, match=r"host 10\.0\.0\.1 not located yet; it must send a"):
        topo.locate("10.0.0.1")


def test_a_host_seen_through_a_link_before_it_was_known_is_located_at_its_edge():
    topo = Topology()
    topo.host_seen(P(1, 1), H1, "10.0.0.1", 1.0)  # its own switch
    topo.host_seen(P(2, 2), H1, "10.0.0.1", 1.001)  # the next switch, by a link not yet known
    assert topo.locate("10.0.0.1") == P(2, 2)
    topo.link_seen(P(1, 2), P(2, 2), 1.5)
    assert topo.locate("10.0.0.1") == P(1, 1)


def test_a_host_that_moves_is_relearned_and_its_old_place_never_comes_back():
    topo = Topology()
    topo.host_seen(P(1, 1), H1, "10.0.0.1", 1.0)
    topo.host_seen(P(3, 1), H1, None, 100.0)  # moved; its first frame there carries no IPv4
    assert topo.locate("10.0.0.1") == P(3, 1)
    topo.port_gone(P(3, 1))
    with pytest.raises(Unavailable, match="not located yet"):
        topo.locate("10.0.0.1")


def test_an_address_follows_the_mac_that_last_claimed_it():
    topo = Topology()
    topo.host_seen(P(1, 1), H1, "10.0.0.1", 1.0)
    topo.host_seen(P(2, 1), H2, "10.0.0.1", 2.0)
    assert topo.locate("10.0.0.1") == P(2, 1)
    assert [(h.mac, h.ipv4) for h in topo.hosts()] == [(H1, ()), (H2, ("10.0.0.1",))]


# --- paths ------------------------------------------------------------------------
def linear(n: int, now: float = 0.0) -> Topology:
    """Switches 1..n in a chain as LinearTopo(k=1) wires them: hosts on port 1, switch i
    reaches i-1 on port 2 and i+1 on port 3 (switch 1 reaches 2 on port 2)."""
    topo = Topology()
    for i in range(1, n):
        left, right = P(i, 2 if i == 1 else 3), P(i + 1, 2)
        topo.link_seen(left, right, now)
        topo.link_seen(right, left, now)
    for i in range(1, n + 1):
        topo.host_seen(P(i, 1), f"00:00:00:00:00:0{i}", f"10.0.0.{i}", now)
    return topo


def test_the_path_between_hosts_crosses_the_chain_in_order_both_ways():
    topo = linear(3)
    assert topo.host_path("10.0.0.1", "10.0.0.3") == [Hop(1, 1, 2), Hop(2, 2, 3), Hop(3, 2, 1)]
    assert topo.host_path("10.0.0.3", "10.0.0.1") == [Hop(3, 1, 2), Hop(2, 3, 2), Hop(1, 2, 1)]
    assert topo.host_path("10.0.0.2", "10.0.0.2") == [Hop(2, 1, 1)]


def test_among_equally_short_paths_the_lowest_dpids_win_whatever_the_order_learned():
    # a diamond 1 → {3, 2} → 4, and a longer way 1 → 5 → 6 → 4
    edges = [(1, 3, 3, 1), (3, 2, 4, 1), (1, 2, 2, 1), (2, 2, 4, 2), (1, 4, 5, 1), (5, 2, 6, 1)]
    edges += [(6, 2, 4, 3)]
    for order in (edges, edges[::-1]):
        topo = Topology()
        for a, pa, b, pb in order:
            topo.link_seen(P(a, pa), P(b, pb), 0.0)
        assert [h.dpid for h in topo.path(P(1, 9), P(4, 9))] == [1, 2, 4]
    topo.link_seen(P(1, 7), P(2, 5), 0.0)  # a second, parallel link 1 → 2: the lower port wins
    assert topo.path(P(1, 9), P(4, 9))[0] == Hop(1, 9, 2)


def test_no_path_when_the_links_are_not_known():
    topo = linear(3)
    topo.switch_gone(2)
    with pytest.raises(Unavailable, match=r"no known path from host 10\.0\.0\.1"):
        topo.host_path("10.0.0.1", "10.0.0.3")
    with pytest.raises(Unavailable, match=r"host 10\.0\.0\.9 not located yet"):
        topo.host_path("10.0.0.9", "10.0.0.1")


# --- the controller's network, fed by its own probes ----------------------------
class Chain:
    """Three switches wired as `linear(3)`, each with an agent on port 4."""

    WIRES = {P(1, 2): P(2, 2), P(2, 3): P(3, 2)}

    def __init__(self) -> None:
        self.network = Network(probe_key=KEY)
        for dpid in (1, 2, 3):
            self.network.switch_connected(dpid)
            ports = {1: f"s{dpid}-eth1", 2: f"s{dpid}-eth2", 4: f"s{dpid}-ns"}
            if dpid == 2:
                ports[3] = "s2-eth3"
            self.network.ports_changed(dpid, ports, set())
            self.network.register_agent(Agent(dpid, f"s{dpid}-ns", "http://a", "boot", 0.0))
        self.wires = self.WIRES | {b: a for a, b in self.WIRES.items()}

    def deliver_probes(self, now: float) -> list[tuple[int, int]]:
        """Send one round of probes over the wires; return (dpid, port) they went out of."""
        sent = []
        for dpid, msgs in self.network.probes(now).items():
            for msg in msgs:
                assert isinstance(msg, PacketOut) and msg.in_port is None
                (out,) = msg.actions
                sent.append((dpid, out.port))
                peer = self.wires.get(P(dpid, out.port))
                if peer is not None:
                    assert self.network.probe_in(peer.dpid, peer.port, msg.data, now)
        return sorted(sent)

    def host_sends(self, dpid: int, mac: str, ip: str, now: float) -> None:
        """A host's ARP request, flooded along the chain, as each switch sends it up."""
        frame = arp_request(mac, ip, "10.0.0.99")
        hops = [(dpid, 1)] + [(p.dpid, p.port) for p in self._downstream(P(dpid, 1))]
        for at_dpid, in_port in hops:
            for table in (tables.LEARN, tables.FORWARD):
                self.network.packet_in(
                    at_dpid, table, in_port, mac, "ff:ff:ff:ff:ff:ff", frame, now
                )

    def _downstream(self, start: SwitchPort) -> list[SwitchPort]:
        seen, todo, out = {start.dpid}, [start.dpid], []
        while todo:
            dpid = todo.pop()
            for a, b in self.wires.items():
                if a.dpid == dpid and b.dpid not in seen:
                    seen.add(b.dpid)
                    todo.append(b.dpid)
                    out.append(b)
        return out


def test_every_switch_probes_every_port_but_its_agents():
    chain = Chain()
    sent = chain.deliver_probes(now=1.0)
    assert sent == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]
    links = chain.network.topology_json(1.0)["links"]
    assert [(k["src"]["dpid"][-1], k["src"]["port"], k["dst"]["dpid"][-1]) for k in links] == [
        ("1", 2, "2"),
        ("2", 2, "1"),
        ("2", 3, "3"),
        ("3", 2, "2"),
    ]


def test_the_path_of_a_flow_names_its_switches_in_order_once_hosts_have_sent():
    chain = Chain()
    chain.deliver_probes(now=1.0)
    chain.host_sends(1, "00:00:00:00:00:01", "10.0.0.1", now=2.0)
    with pytest.raises(Unavailable, match=r"^host 10\.0\.0\.3 not located yet; it must send"):
        chain.network.path_nodes("10.0.0.1", "10.0.0.3")
    chain.host_sends(3, "00:00:00:00:00:03", "10.0.0.3", now=2.0)
    assert chain.network.path_nodes("10.0.0.1", "10.0.0.3") == [1, 2, 3]
    assert chain.network.path_nodes("10.0.0.3", "10.0.0.1") == [3, 2, 1]
    hosts = chain.network.topology_json(3.0)["hosts"]
    assert [(h["ipv4"], h["dpid"][-1], h["port"], h["seen_ago"]) for h in hosts] == [
        (["10.0.0.1"], "1", 1, 1.0),
        (["10.0.0.3"], "3", 1, 1.0),
    ]


def test_the_netserv_nodes_of_a_path_are_its_ready_ones_in_order():
    chain = Chain()
    chain.deliver_probes(now=1.0)
    chain.host_sends(1, "00:00:00:00:00:01", "10.0.0.1", now=2.0)
    chain.host_sends(3, "00:00:00:00:00:03", "10.0.0.3", now=2.0)
    chain.network.silent_agents(now=100.0, dead_after=10.0)
    chain.network.agent_seen(3, 100.0)
    chain.network.agent_seen(1, 100.0)
    path = chain.network.path_nodes("10.0.0.3", "10.0.0.1")
    assert chain.network.netserv_nodes(path) == [3, 1]
    view = chain.network.path_json("10.0.0.3", "10.0.0.1")
    assert [(h["dpid"][-1], h["in_port"], h["out_port"], h["netserv"]) for h in view["path"]] == [
        ("3", 1, 2, True),
        ("2", 3, 2, False),
        ("1", 2, 1, True),
    ]
    assert view["netserv_nodes"] == ["0000000000000003", "0000000000000001"]


def test_links_expire_without_probes_and_come_back_with_them():
    chain = Chain()
    chain.deliver_probes(now=1.0)
    assert chain.network.expire_links(now=1.0 + LINK_EXPIRY) == []
    assert len(chain.network.expire_links(now=1.01 + LINK_EXPIRY)) == 4
    chain.deliver_probes(now=20.0)
    assert len(chain.network.topology.links()) == 4


def test_a_disconnected_switch_takes_its_links_and_sends_no_probes():
    chain = Chain()
    chain.deliver_probes(now=1.0)
    chain.network.switch_disconnected(3)
    assert 3 not in chain.network.probes(2.0)
    assert {(k.src.dpid, k.dst.dpid) for k in chain.network.topology.links()} == {(1, 2), (2, 1)}


def test_forged_reflected_and_agent_probes_make_no_link():
    chain = Chain()
    forged = probe_frame(1, 2, b"not the controller's key!" * 2, now=1.0)
    assert not chain.network.probe_in(2, 2, forged, 1.0)
    assert chain.network.probes_refused == 1
    own = probe_frame(2, 1, KEY, now=1.0)
    assert not chain.network.probe_in(2, 1, own, 1.0)  # came back in by the port it left
    assert not chain.network.probe_in(1, 4, probe_frame(2, 2, KEY, 1.0), 1.0)  # an agent port
    assert chain.network.topology.links() == []
    assert chain.network.topology_json(1.0)["probes_refused"] == 1


def test_frames_from_agents_and_through_links_locate_no_host():
    chain = Chain()
    chain.deliver_probes(now=1.0)
    frame = arp_request(H1, "10.0.0.1", "10.0.0.2")
    chain.network.packet_in(1, tables.LEARN, 4, H1, "ff:ff:ff:ff:ff:ff", frame, 2.0)
    chain.network.packet_in(2, tables.FORWARD, 2, H1, "ff:ff:ff:ff:ff:ff", frame, 2.0)
    assert chain.network.topology_json(2.0)["hosts"] == []
    # the switches still learn the MAC behind the link, or frames to it would be flooded
    assert chain.network.switches[2].macs == {}
    chain.network.packet_in(2, tables.LEARN, 2, H1, "ff:ff:ff:ff:ff:ff", frame, 2.0)
    assert chain.network.switches[2].macs == {H1: 2}


@pytest.mark.parametrize("bad", ["10.0.0", "10.0.0.01", "::1", "h1", ""])
def test_a_path_between_things_that_are_not_ipv4_addresses_is_refused(bad):
    chain = Chain()
    with pytest.raises(InvalidRequest, match="is not an IPv4 address"):
        chain.network.path_nodes(bad, "10.0.0.1")


def test_probes_leave_by_the_port_they_name():
    chain = Chain()
    for dpid, msgs in chain.network.probes(0.0).items():
        for msg in msgs:
            (out,) = msg.actions
            assert isinstance(out, Output)
            assert read_probe(msg.data, KEY, 0.0, LINK_EXPIRY) == (dpid, out.port)


# --- loops: the spanning tree ----------------------------------------------------
class Ring:
    """Four switches in a ring 1-2-3-4-1 (ports 2 and 3 face the neighbours, a host on
    port 1 of each, an agent on port 4): two ways between any two switches."""

    WIRES = {P(1, 2): P(2, 3), P(2, 2): P(3, 3), P(3, 2): P(4, 3), P(4, 2): P(1, 3)}

    def __init__(self) -> None:
        self.network = Network(probe_key=KEY)
        for dpid in (1, 2, 3, 4):
            self.network.switch_connected(dpid)
            ports = {1: f"s{dpid}-eth1", 2: f"s{dpid}-eth2", 3: f"s{dpid}-eth3", 4: f"s{dpid}-ns"}
            self.network.ports_changed(dpid, ports, set())
            self.network.register_agent(Agent(dpid, f"s{dpid}-ns", "http://a", "boot", 0.0))
        self.wires = self.WIRES | {b: a for a, b in self.WIRES.items()}

    def deliver_probes(self, now: float) -> None:
        for dpid, msgs in self.network.probes(now).items():
            for msg in msgs:
                peer = self.wires.get(P(dpid, msg.actions[0].port))
                if peer is not None:
                    self.network.probe_in(peer.dpid, peer.port, msg.data, now)

    def flood(self, dpid: int, mac: str, ip: str, now: float) -> list[tuple[int, int]]:
        """Send a host's broadcast from switch `dpid` port 1 and follow every copy the
        controller floods; return (dpid, in_port) of each packet-in, in order. Fails if
        the copies do not die out (a loop)."""
        frame = arp_request(mac, ip, "10.0.0.99")
        todo, seen = deque([(dpid, 1)]), []
        while todo:
            at, in_port = todo.popleft()
            seen.append((at, in_port))
            assert len(seen) < 50, f"the broadcast loops: {seen}"
            for table in (tables.LEARN, tables.FORWARD):
                for msg in self.network.packet_in(at, table, in_port, mac, BCAST, frame, now):
                    if isinstance(msg, PacketOut):
                        for out in msg.actions:
                            peer = self.wires.get(P(at, out.port))
                            if peer is not None:
                                todo.append((peer.dpid, peer.port))
        return seen


BCAST = "ff:ff:ff:ff:ff:ff"


def test_the_spanning_tree_of_a_ring_leaves_one_link_out_whatever_the_order_found():
    edges = [(1, 2, 2, 3), (2, 2, 3, 3), (3, 2, 4, 3), (4, 2, 1, 3)]
    for order in (edges, edges[::-1]):
        topo = Topology()
        for a, pa, b, pb in order:
            topo.link_seen(P(a, pa), P(b, pb), 0.0)
        # from switch 1: 2 and 4 first, then 3 by way of 2 (the lower dpid)
        assert topo.tree() == {1: [(2, 2, 3), (4, 3, 2)], 2: [(1, 3, 2), (3, 2, 3)],
                               3: [(2, 3, 2)], 4: [(1, 2, 3)]}  # fmt: skip
        assert topo.blocked(3) == {2} and topo.blocked(4) == {3}
        assert topo.blocked(1) == set() and topo.blocked(2) == set()


def test_a_broadcast_in_a_ring_dies_out_and_reaches_every_host_once():
    ring = Ring()
    ring.deliver_probes(now=1.0)
    seen = ring.flood(3, "00:00:00:00:00:03", "10.0.0.3", now=2.0)
    assert sorted(seen) == [(1, 2), (2, 2), (3, 1), (4, 2)]  # along the tree, once each


def test_the_path_between_hosts_is_the_one_frames_take_not_the_shortest():
    ring = Ring()
    ring.deliver_probes(now=1.0)
    ring.flood(3, "00:00:00:00:00:03", "10.0.0.3", now=2.0)
    ring.flood(4, "00:00:00:00:00:04", "10.0.0.4", now=2.0)
    # 3 and 4 are neighbours, but the wire between them is off the tree
    assert ring.network.path_nodes("10.0.0.3", "10.0.0.4") == [3, 2, 1, 4]
    assert ring.network.path_nodes("10.0.0.4", "10.0.0.3") == [4, 1, 2, 3]
    # and the switches learned the hosts along that way, not across the cut wire
    assert ring.network.switches[3].macs == {"00:00:00:00:00:03": 1, "00:00:00:00:00:04": 3}
    assert ring.network.switches[4].macs == {"00:00:00:00:00:03": 2, "00:00:00:00:00:04": 1}


def test_a_tree_that_only_grows_keeps_what_was_learned():
    chain = Chain()
    chain.host_sends(1, "00:00:00:00:00:01", "10.0.0.1", now=0.5)
    chain.deliver_probes(now=1.0)  # as after a restart: the links are found again
    assert chain.network.relearn() == {}
    assert chain.network.switches[1].macs == {"00:00:00:00:00:01": 1}


def test_a_changed_tree_makes_every_switch_learn_again():
    ring = Ring()
    assert ring.network.relearn() == {}  # no link yet, no tree: as it was
    ring.deliver_probes(now=1.0)
    flushed = ring.network.relearn()  # s3-s4 blocked: what crossed it may be learned there
    assert sorted(flushed) == [1, 2, 3, 4]
    assert flushed[1][0] == FlowDelete(tables.cookie(tables.KIND_LEARNED), tables.COOKIE_ALL)
    ring.flood(3, "00:00:00:00:00:03", "10.0.0.3", now=2.0)
    assert ring.network.relearn() == {}  # same tree: what was learned stays
    assert ring.network.switches[4].macs == {"00:00:00:00:00:03": 2}
    ring.network.ports_changed(2, {}, {2})  # the wire 2-3 is gone: 3 is reached by way of 4
    assert sorted(ring.network.relearn()) == [1, 2, 3, 4]
    assert ring.network.switches[4].macs == {}
    assert ring.network.topology.blocked(4) == set()
