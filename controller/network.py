"""What the controller knows of the network: switches, their ports, node agents, MACs,
and the links and host locations of `controller/topology.py`.

Pure state plus the decisions that follow from switch events; every method that
changes what the switch should hold returns the messages for it.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from controller import discovery, pipeline, tables
from controller.errors import Conflict, InvalidRequest
from controller.messages import Message
from controller.requests import format_dpid
from controller.topology import Hop, Link, SwitchPort, Topology

log = logging.getLogger("netserv.topology")
PROBE_KEY_BYTES = 32


@dataclass(frozen=True)
class Agent:
    """A node agent as it registered: its switch, its port there, how to reach it."""

    dpid: int
    switch_port: str
    url: str
    boot_id: str
    last_seen: float
    alive: bool = True
    port_type: str = ""  # how the bridge reads its ports, as the agent reported it

    def to_json(self, now: float) -> dict[str, object]:
        return {
            "url": self.url,
            "switch_port": self.switch_port,
            "port_type": self.port_type,
            "boot_id": self.boot_id,
            "alive": self.alive,
            "last_seen_ago": round(now - self.last_seen, 3),
        }


def refusal(live: Agent, pid: object) -> str:
    """Return why a second agent for `live`'s node is refused and what to do about it."""
    return (
        f"node {format_dpid(live.dpid)} already has a live agent (pid {pid}, control API "
        f"{live.url}, switch port {live.switch_port}); a node has one agent: stop it first "
        f"(kill {pid}) or, if a topology started it, leave the node to the topology"
    )


@dataclass
class Switch:
    dpid: int
    ports: dict[int, str] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    connected: bool = True


class Network:
    """Switches and node agents by datapath id."""

    def __init__(self, probe_key: bytes | None = None) -> None:
        self.switches: dict[int, Switch] = {}
        self.agents: dict[int, Agent] = {}
        self.topology = Topology()
        # Known only to this controller, so only its own probes are believed.
        self.probe_key = probe_key or secrets.token_bytes(PROBE_KEY_BYTES)
        self.probes_refused = 0
        # The tree's ports and the blocked ones when MACs were last learned afresh.
        self._tree_learned: tuple[frozenset[SwitchPort], frozenset[SwitchPort]] = (
            frozenset(),
            frozenset(),
        )

    # --- queries -------------------------------------------------------------------
    def agent_port(self, dpid: int) -> int | None:
        """Return the switch port number of node `dpid`'s agent, if known."""
        agent, switch = self.agents.get(dpid), self.switches.get(dpid)
        if agent is None or switch is None:
            return None
        return next((no for no, name in switch.ports.items() if name == agent.switch_port), None)

    def agent_ports(self, dpid: int) -> set[int]:
        """Return the agent port numbers on switch `dpid` (empty when none is known)."""
        port = self.agent_port(dpid)
        return set() if port is None else {port}

    def ready(self, dpid: int) -> bool:
        """Return True when node `dpid` can host a session now."""
        switch, agent = self.switches.get(dpid), self.agents.get(dpid)
        return bool(switch and switch.connected and agent and agent.alive and self.agent_port(dpid))

    def nodes_json(self, now: float) -> list[dict[str, object]]:
        """Return every known switch and agent as JSON-ready dicts."""
        out = []
        for dpid in sorted(set(self.switches) | set(self.agents)):
            switch, agent = self.switches.get(dpid), self.agents.get(dpid)
            out.append(
                {
                    "dpid": format_dpid(dpid),
                    "connected": bool(switch and switch.connected),
                    "ports": {str(k): v for k, v in sorted(switch.ports.items())} if switch else {},
                    "agent": agent.to_json(now) if agent else None,
                    "agent_port": self.agent_port(dpid),
                    "ready": self.ready(dpid),
                }
            )
        return out

    # --- switch events -------------------------------------------------------------
    def switch_connected(self, dpid: int) -> None:
        """Record a (re)connected switch; what it holds is reconciled by the service."""
        old = self.switches.get(dpid)
        self.switches[dpid] = Switch(dpid, ports=dict(old.ports) if old else {})

    def switch_disconnected(self, dpid: int) -> None:
        """Mark a switch as gone, and its links; its flows stay in it until it comes back."""
        if dpid in self.switches:
            self.switches[dpid].connected = False
        _log_links("gone", self.topology.switch_gone(dpid))

    def ports_changed(self, dpid: int, added: dict[int, str], removed: set[int]) -> list[Message]:
        """Record port changes; return the agent-return flow if the agent port appeared."""
        switch = self.switches.setdefault(dpid, Switch(dpid))
        before = self.agent_port(dpid)
        for no in removed:
            switch.ports.pop(no, None)
            switch.macs = {mac: p for mac, p in switch.macs.items() if p != no}
            _log_links("gone", self.topology.port_gone(SwitchPort(dpid, no)))
        switch.ports.update(added)
        after = self.agent_port(dpid)
        return pipeline.agent_return(after) if after and after != before else []

    def packet_in(
        self,
        dpid: int,
        table: int,
        in_port: int,
        eth_src: str,
        eth_dst: str,
        data: bytes,
        now: float,
    ) -> list[Message]:
        """Handle a frame the switch sent up from `table`; return flows or its packet-out.

        From the learn table it is a copy (the switch forwards the frame itself); from
        the forward table the controller must deliver it. Either way it tells where
        its sender is, when it entered at an edge port (`controller/topology.py`).
        """
        switch = self.switches.get(dpid)
        if switch is None:
            return []
        agents, blocked = self.agent_ports(dpid), self.topology.blocked(dpid)
        if in_port in blocked:  # a link off the spanning tree: a loop, or old news
            return []
        if not pipeline.is_multicast(eth_src):
            at = SwitchPort(dpid, in_port)
            self.topology.host_seen(at, eth_src, discovery.sender_ipv4(data), now, agents)
        if table == tables.LEARN:
            return pipeline.learn(switch.macs, in_port, eth_src, agents)
        out = pipeline.forward_missed(
            switch.macs, in_port, eth_dst, switch.ports, agents | blocked, data
        )
        return [out] if out.actions else []

    def relearn(self) -> dict[int, list[Message]]:
        """When the spanning tree lost a port or a port became blocked since the last
        time, forget every learned MAC and return, for each connected switch, the
        deletes of its learned flows; else return nothing.

        A MAC learned before such a change may point along a link the tree no longer
        uses; learned afresh, every host is reached along the tree again (and `path`
        tells the way frames take). A tree that only grows (links found in a network
        without loops, as after a controller's restart) leaves what was learned alone.
        """
        tree = self.topology.tree_ports()
        blocked = self.topology.link_ports() - tree
        old_tree, old_blocked = self._tree_learned
        self._tree_learned = (tree, blocked)
        if old_tree <= tree and blocked <= old_blocked:
            return {}
        out = {}
        for dpid, switch in sorted(self.switches.items()):
            switch.macs.clear()
            if switch.connected:
                out[dpid] = pipeline.forget_learned()
        return out

    # --- topology ------------------------------------------------------------------
    def probes(self, now: float) -> dict[int, list[Message]]:
        """Return, for every connected switch, a link probe out of each port but the agent's."""
        out = {}
        for dpid, switch in sorted(self.switches.items()):
            if switch.connected:
                agents = self.agent_ports(dpid)
                out[dpid] = [
                    pipeline.probe_out(port, discovery.probe_frame(dpid, port, self.probe_key, now))
                    for port in sorted(switch.ports)
                    if port not in agents
                ]
        return out

    def expire_links(self, now: float) -> list[Link]:
        """Drop the links whose probes stopped arriving; return them."""
        gone = self.topology.expire(now)
        _log_links("expired", gone)
        return gone

    def probe_in(self, dpid: int, in_port: int, data: bytes, now: float) -> bool:
        """Take a link probe switch `dpid` received on `in_port`; return True when believed.

        Refused (and counted) unless it is this controller's own, intact and recent;
        ignored when it came in by an agent's port or back in by the port it left by
        (an agent returns what no session asked for).
        """
        sender = discovery.read_probe(data, self.probe_key, now, self.topology.link_expiry)
        if sender is None:
            self.probes_refused += 1
            return False
        src, dst = SwitchPort(*sender), SwitchPort(dpid, in_port)
        if src == dst or dpid not in self.switches or in_port in self.agent_ports(dpid):
            return False
        if self.topology.link_seen(src, dst, now):
            _log_links("found", [Link(src, dst)])
        return True

    def path(self, src_ip: str, dst_ip: str) -> list[Hop]:
        """Return the hops (switch, in port, out port) of a flow from `src_ip` to `dst_ip`.

        Raise InvalidRequest for an address that is not IPv4, Unavailable naming the
        host that is not located yet or when no known links join the two.
        """
        return self.topology.host_path(_ipv4(src_ip), _ipv4(dst_ip))

    def path_nodes(self, src_ip: str, dst_ip: str) -> list[int]:
        """Return the dpids of the switches a flow from `src_ip` to `dst_ip` crosses, in order.

        Raise as `path` does.
        """
        return [hop.dpid for hop in self.path(src_ip, dst_ip)]

    def netserv_nodes(self, dpids: Iterable[int]) -> list[int]:
        """Return the ready NetServ nodes among `dpids`, in their order."""
        return [dpid for dpid in dpids if self.ready(dpid)]

    def topology_json(self, now: float) -> dict[str, object]:
        """Return switches, links and located hosts as JSON-ready dicts."""
        return {
            "switches": [
                {
                    "dpid": format_dpid(dpid),
                    "connected": switch.connected,
                    "ready": self.ready(dpid),
                }
                for dpid, switch in sorted(self.switches.items())
            ],
            "links": [
                {"src": _port_json(link.src), "dst": _port_json(link.dst)}
                for link in self.topology.links()
            ],
            "hosts": [
                {
                    "mac": host.mac,
                    "ipv4": list(host.ipv4),
                    **_port_json(host.at),
                    "seen_ago": round(now - host.seen, 3),
                }
                for host in self.topology.hosts()
            ],
            "probes_refused": self.probes_refused,
        }

    def path_json(self, src_ip: str, dst_ip: str) -> dict[str, object]:
        """Return the path of a flow from `src_ip` to `dst_ip` and its NetServ nodes, JSON-ready."""
        src, dst = _ipv4(src_ip), _ipv4(dst_ip)
        hops = self.path(src, dst)
        return {
            "src": src,
            "dst": dst,
            "path": [
                {
                    "dpid": format_dpid(hop.dpid),
                    "in_port": hop.in_port,
                    "out_port": hop.out_port,
                    "netserv": self.ready(hop.dpid),
                }
                for hop in hops
            ],
            "netserv_nodes": [format_dpid(d) for d in self.netserv_nodes(h.dpid for h in hops)],
        }

    # --- agent events --------------------------------------------------------------
    def rival_of(self, agent: Agent) -> Agent | None:
        """Return the node's registered agent when `agent` is another one and it seems alive.

        Seeming alive is only "heard from lately": it may have died a moment ago and
        `agent` be its restart, which only asking the rival can tell.
        """
        old = self.agents.get(agent.dpid)
        if old is None or not old.alive or old.boot_id == agent.boot_id:
            return None
        return old

    def register_agent(self, agent: Agent) -> tuple[bool, list[Message]]:
        """Record an agent's registration or heartbeat.

        Return (restarted, messages): restarted is True when the agent is new or came
        back with another boot id, i.e. it holds none of the sessions placed on it.
        One declared down that comes back with its boot id is not restarted.
        Raise Conflict when a live agent's heartbeat names another port or URL: the
        detours point at its port, which a stray registration must not move.
        """
        old = self.agents.get(agent.dpid)
        if old is not None and old.alive and old.boot_id == agent.boot_id:
            if (old.switch_port, old.url) != (agent.switch_port, agent.url):
                raise Conflict(
                    f"the agent of node {format_dpid(agent.dpid)} registered with switch port "
                    f"{old.switch_port} and control API {old.url}; while it lives it keeps them "
                    f"(asked for {agent.switch_port}, {agent.url})"
                )
        self.agents[agent.dpid] = agent
        # One that was declared down with the same boot id (it hung, or was silent) still
        # holds its chains: it is back, not restarted.
        restarted = old is None or old.boot_id != agent.boot_id
        moved = old is None or old.switch_port != agent.switch_port
        port = self.agent_port(agent.dpid)
        return restarted, (pipeline.agent_return(port) if port and moved else [])

    def agent_seen(self, dpid: int, now: float) -> None:
        if dpid in self.agents:
            self.agents[dpid] = replace(self.agents[dpid], last_seen=now, alive=True)

    def agent_down(self, dpid: int, boot_id: str) -> bool:
        """Mark node `dpid`'s agent down when it is the one of `boot_id`; return True
        when it was up until now (a notice about an agent since replaced changes nothing)."""
        agent = self.agents.get(dpid)
        if agent is None or agent.boot_id != boot_id or not agent.alive:
            return False
        self.agents[dpid] = replace(agent, alive=False)
        return True

    def silent_agents(self, now: float, dead_after: float) -> list[int]:
        """Mark agents not heard from for `dead_after` seconds as dead; return their dpids."""
        dead = []
        for dpid, agent in self.agents.items():
            if agent.alive and now - agent.last_seen > dead_after:
                self.agents[dpid] = replace(agent, alive=False)
                dead.append(dpid)
        return dead


def _ipv4(raw: str) -> str:
    """Return `raw` as an IPv4 address in dotted decimal; raise InvalidRequest otherwise."""
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        raise InvalidRequest(f"{raw!r} is not an IPv4 address") from None


def _port_json(at: SwitchPort) -> dict[str, object]:
    return {"dpid": format_dpid(at.dpid), "port": at.port}


def _log_links(what: str, links: list[Link]) -> None:
    for link in links:
        log.info("link %s: %s -> %s", what, link.src, link.dst)
