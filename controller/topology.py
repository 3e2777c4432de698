"""The network's shape as the controller learns it: links, where hosts are, and paths.

Pure: no Ryu and no clock of its own; every change takes `now` (seconds).

Links are directed: a probe sent out of (switch a, port p) that arrives at (switch b,
port q) says a frame leaving a:p reaches b:q. A link whose probes stop arriving for
`link_expiry` seconds is gone.

Hosts are learned from the frames they send, and only on edge ports: not the end of a
known link (there the frame came from another switch) and not a node agent's port (an
agent sends other hosts' frames back). After a start, a host's first frames can reach
a switch through a link before that link's first probe does: when a link is found,
what was seen on its two ends is forgotten, so a host's location is its latest
sighting on an edge port. A sighting elsewhere that is older than `link_expiry` when
the host is seen again is dropped (the host moved), so a stale place never comes back.

Loops are cut by a spanning tree of the known links: a breadth-first tree grown from
the lowest datapath id of each connected part, neighbours taken in order of datapath id
then ports, so the same links always give the same tree. Frames are flooded only along
it (and out of edge ports), and nothing is learned from or flooded out of a link end
that is off it, so a frame's way between two hosts is the tree's one path, which `path`
returns.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from controller.errors import Unavailable

PROBE_INTERVAL = 2.0  # seconds between two probes out of every switch port
LINK_EXPIRY = 3 * PROBE_INTERVAL + 1.0  # three probes missed: the link is gone


@dataclass(frozen=True, order=True)
class SwitchPort:
    """A port of a switch: where a link ends or a host is attached."""

    dpid: int
    port: int

    def __str__(self) -> str:
        return f"{self.dpid:016x} port {self.port}"


@dataclass(frozen=True, order=True)
class Link:
    """Frames sent out of `src` arrive at `dst`."""

    src: SwitchPort
    dst: SwitchPort


@dataclass(frozen=True)
class Hop:
    """A switch on a path, with the port the flow enters by and the one it leaves by."""

    dpid: int
    in_port: int
    out_port: int


@dataclass(frozen=True)
class Host:
    """A host as last seen: its MAC, the IPv4 addresses it claimed, where and when."""

    mac: str
    ipv4: tuple[str, ...]
    at: SwitchPort
    seen: float


class Topology:
    """Links between switches, host locations, and shortest paths between hosts."""

    def __init__(self, link_expiry: float = LINK_EXPIRY) -> None:
        self.link_expiry = link_expiry
        self._links: dict[Link, float] = {}  # → when a probe last confirmed it
        self._ends: frozenset[SwitchPort] | None = None  # link_ports(), until the links change
        self._tree: dict[int, list[tuple[int, int, int]]] | None = None  # tree(), likewise
        self._seen: dict[str, dict[SwitchPort, float]] = {}  # MAC → edge port → when
        self._mac_of: dict[str, str] = {}  # IPv4 address → the MAC that last claimed it

    # --- links ---------------------------------------------------------------------
    def link_seen(self, src: SwitchPort, dst: SwitchPort, now: float) -> bool:
        """Record that a probe sent out of `src` arrived at `dst`; return True when new.

        A new link's ends stop being edge ports: hosts seen there are forgotten.
        """
        link = Link(src, dst)
        new = link not in self._links
        self._links[link] = now
        if new:
            self._ends = self._tree = None
            self._forget_hosts_at({src, dst})
        return new

    def expire(self, now: float) -> list[Link]:
        """Drop the links no probe confirmed for `link_expiry` seconds; return them."""
        return self._drop(
            [link for link, seen in self._links.items() if now - seen > self.link_expiry]
        )

    def _drop(self, links: list[Link]) -> list[Link]:
        for link in links:
            del self._links[link]
        self._ends = self._tree = None
        return sorted(links)

    def links(self) -> list[Link]:
        """Return the known links, sorted."""
        return sorted(self._links)

    def link_ports(self) -> frozenset[SwitchPort]:
        """Return every port that is an end of a known link."""
        if self._ends is None:
            self._ends = frozenset(end for link in self._links for end in (link.src, link.dst))
        return self._ends

    def switch_gone(self, dpid: int) -> list[Link]:
        """Drop the links to and from switch `dpid`; return them. Its hosts stay known."""
        return self._drop([k for k in self._links if dpid in (k.src.dpid, k.dst.dpid)])

    def port_gone(self, at: SwitchPort) -> list[Link]:
        """Forget port `at`: the links that end there (returned) and the hosts seen there."""
        gone = self._drop([link for link in self._links if at in (link.src, link.dst)])
        self._forget_hosts_at({at})
        return gone

    # --- hosts ---------------------------------------------------------------------
    def host_seen(
        self,
        at: SwitchPort,
        mac: str,
        ipv4: str | None,
        now: float,
        agent_ports: Collection[int] = (),
    ) -> bool:
        """Record a frame from `mac` (claiming `ipv4`, if any) that entered at `at`.

        Return False, recording nothing, when `at` is a link's end or one of the
        switch's `agent_ports`: the frame's sender is not attached there.
        """
        if at.port in agent_ports or at in self.link_ports():
            return False
        sightings = self._seen.setdefault(mac, {})
        for other, when in list(sightings.items()):
            if other != at and now - when > self.link_expiry:
                del sightings[other]
        sightings[at] = now
        if ipv4 is not None:
            self._mac_of[ipv4] = mac
        return True

    def _forget_hosts_at(self, ports: set[SwitchPort]) -> None:
        for mac in list(self._seen):
            sightings = self._seen[mac]
            for at in ports & sightings.keys():
                del sightings[at]
            if not sightings:
                del self._seen[mac]

    def location(self, mac: str) -> tuple[SwitchPort, float] | None:
        """Return where and when `mac` was last seen on an edge port, or None."""
        sightings = self._seen.get(mac)
        if not sightings:
            return None
        at = max(sightings, key=lambda p: (sightings[p], p))
        return at, sightings[at]

    def locate(self, ipv4: str) -> SwitchPort:
        """Return the edge port of the host that owns `ipv4`.

        Raise Unavailable when no frame from it has been seen on an edge port.
        """
        mac = self._mac_of.get(ipv4)
        found = self.location(mac) if mac is not None else None
        if found is None:
            raise Unavailable(f"host {ipv4} not located yet; it must send a frame first")
        return found[0]

    def hosts(self) -> list[Host]:
        """Return every located host, by MAC, with the addresses it claimed."""
        addresses: dict[str, list[str]] = {}
        for ip, mac in self._mac_of.items():
            addresses.setdefault(mac, []).append(ip)
        out = []
        for mac in sorted(self._seen):
            found = self.location(mac)
            if found is not None:
                ips = tuple(sorted(addresses.get(mac, []), key=ipaddress.IPv4Address))
                out.append(Host(mac, ips, found[0], found[1]))
        return out

    # --- paths ---------------------------------------------------------------------
    def tree(self) -> dict[int, list[tuple[int, int, int]]]:
        """Return the spanning tree of the known links: for each switch on a link, its
        tree neighbours as (neighbour dpid, own port, neighbour's port), sorted.

        A link seen in one direction only counts as a wire both ways; of parallel links
        between two switches the one with the lowest ports (of the lower dpid first) is
        taken.
        """
        if self._tree is None:
            self._tree = spanning_tree(self._links)
        return self._tree

    def tree_ports(self) -> frozenset[SwitchPort]:
        """Return every link end that is on the spanning tree."""
        return frozenset(
            SwitchPort(dpid, port) for dpid, near in self.tree().items() for _n, port, _f in near
        )

    def blocked(self, dpid: int) -> set[int]:
        """Return the ports of switch `dpid` that are link ends off the spanning tree:
        nothing is flooded out of them, and what comes in by them is not learned."""
        on_tree = self.tree_ports()
        return {p.port for p in self.link_ports() if p.dpid == dpid and p not in on_tree}

    def path(self, src: SwitchPort, dst: SwitchPort) -> list[Hop] | None:
        """Return the switches a frame entering at `src` crosses to leave at `dst`.

        The path is the one along the spanning tree (`tree`), which is the way frames
        take: flooding and learning follow the tree. None when no known links join them.
        """
        if src.dpid == dst.dpid:
            return [Hop(src.dpid, src.port, dst.port)]
        tree = self.tree()
        came_by: dict[int, tuple[int, int, int] | None] = {src.dpid: None}
        queue = deque([src.dpid])
        while queue and dst.dpid not in came_by:
            dpid = queue.popleft()
            for near, port, far_port in tree.get(dpid, []):
                if near not in came_by:
                    came_by[near] = (dpid, port, far_port)
                    queue.append(near)
        if dst.dpid not in came_by:
            return None
        hops, out_port, dpid = [], dst.port, dst.dpid
        while (step := came_by[dpid]) is not None:
            hops.append(Hop(dpid, step[2], out_port))
            dpid, out_port = step[0], step[1]
        hops.append(Hop(src.dpid, src.port, out_port))
        return hops[::-1]

    def host_path(self, src_ip: str, dst_ip: str) -> list[Hop]:
        """Return the hops of a flow from host `src_ip` to host `dst_ip`, in order.

        Raise Unavailable naming the host that is not located, or when no known
        links join the two hosts' switches.
        """
        src, dst = self.locate(src_ip), self.locate(dst_ip)
        hops = self.path(src, dst)
        if hops is None:
            raise Unavailable(
                f"no known path from host {src_ip} (switch {src}) to host {dst_ip} "
                f"(switch {dst}): the links between their switches are not discovered"
            )
        return hops


def spanning_tree(links: Collection[Link]) -> dict[int, list[tuple[int, int, int]]]:
    """Return a spanning tree of `links`, as `Topology.tree` describes it.

    Breadth first from the lowest datapath id of each connected part; a switch's
    neighbours are taken by (dpid, own port, their port), so the tree depends only on
    the links, not on the order they were found in.
    """
    chosen: dict[tuple[int, int], tuple[int, int]] = {}  # (lo, hi) dpids → (lo's, hi's) ports
    for link in links:
        lo, hi = sorted((link.src, link.dst))
        if lo.dpid == hi.dpid:
            continue  # a switch wired to itself: never on the tree
        best = chosen.get((lo.dpid, hi.dpid))
        if best is None or (lo.port, hi.port) < best:
            chosen[(lo.dpid, hi.dpid)] = (lo.port, hi.port)
    wires: dict[int, dict[int, tuple[int, int]]] = {}  # dpid → neighbour → (own, far) ports
    for (lo, hi), (lo_port, hi_port) in chosen.items():
        wires.setdefault(lo, {})[hi] = (lo_port, hi_port)
        wires.setdefault(hi, {})[lo] = (hi_port, lo_port)
    tree: dict[int, list[tuple[int, int, int]]] = {}
    for root in sorted(wires):
        if root in tree:
            continue
        tree[root] = []
        queue = deque([root])
        while queue:
            dpid = queue.popleft()
            for near, (port, far_port) in sorted(wires[dpid].items()):
                if near not in tree:
                    tree[near] = [(dpid, far_port, port)]
                    tree[dpid].append((near, port, far_port))
                    queue.append(near)
    return {dpid: sorted(near) for dpid, near in tree.items()}
