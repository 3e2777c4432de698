"""A flow's way through the network: the rule each switch matched, the agents and modules.

    trace = Tracer(service, OvsAppctl()).trace(parse_match({...}))

For each switch on the flow's path (the topology's, from its `ipv4_src` host to its
`ipv4_dst` host) Open vSwitch's `ofproto/trace` is asked, one switch at a time in
path order, what a frame of the flow entering by the path's port does: which rule of
each table it matched (priority, cookie, actions) and what the datapath does with it.
When a rule is a session's detour (its cookie says which), the frame goes to the
node's agent; the switch is traced again for the frame coming back from the agent's
port, and the session's chain is shown with each module's verdicts.

The verdicts are those the agent recorded for the session: how many of its frames
reached each module, how many the module ended (its DROP, or its closed failure
policy), how many it failed on, and whether it is quarantined. No probe frame is
sent: one would run the modules (a counter would count it, a rate limiter spend a
token), so a trace would change what it looks at. They are the session's so far, not
the fate of one frame; a module that drops some frames and forwards others shows both.

`ofproto/trace` is a local command (`ovs-appctl`): a switch whose bridge is not on the
controller's host is shown with its expected ports and `"traced": false`.

Pure but for `OvsAppctl`, which runs the command; the service is asked for the path,
the sessions and the chains' counters.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from controller.errors import InvalidRequest, NetServError, PartFailed
from controller.match import FlowMatch
from controller.requests import format_dpid
from controller.tables import session_of_cookie

# Our OXM field names as `ovs-ofctl` flow syntax spells them.
OVS_FIELDS = {
    "eth_src": "dl_src",
    "eth_dst": "dl_dst",
    "eth_type": "dl_type",
    "ip_proto": "nw_proto",
    "ipv4_src": "nw_src",
    "ipv4_dst": "nw_dst",
    "ipv6_src": "ipv6_src",
    "ipv6_dst": "ipv6_dst",
    "tcp_src": "tcp_src",
    "tcp_dst": "tcp_dst",
    "udp_src": "udp_src",
    "udp_dst": "udp_dst",
    "icmpv4_type": "icmp_type",
    "icmpv4_code": "icmp_code",
}
TRACE_TIMEOUT = 5.0
_RULE = re.compile(
    r"^\s*(?P<table>\d+)\. (?:(?P<match>.*?), )?priority (?P<priority>\d+)"
    r"(?:, cookie (?P<cookie>0x[0-9a-f]+))?\s*$"
)
_NO_MATCH = re.compile(r"^\s*(?P<table>\d+)\. No match\.?\s*$")


@dataclass(frozen=True)
class Rule:
    """A rule a traced frame matched: its table, match, priority, cookie, actions."""

    table: int
    match: str
    priority: int | None
    cookie: int | None
    actions: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"table": self.table, "match": self.match}
        out["priority"] = self.priority
        out["cookie"] = None if self.cookie is None else f"{self.cookie:#018x}"
        out["actions"] = list(self.actions)
        session = self.session
        if session is not None:
            out["session"] = session
        return out

    @property
    def session(self) -> int | None:
        """Return the session whose detour this rule is, or None."""
        return None if self.cookie is None else session_of_cookie(self.cookie)


@dataclass(frozen=True)
class Pass:
    """What one `ofproto/trace` of a switch said: the rules in order, the datapath actions."""

    in_port: int
    rules: tuple[Rule, ...]
    datapath_actions: str

    def to_json(self) -> dict[str, object]:
        return {
            "in_port": self.in_port,
            "rules": [r.to_json() for r in self.rules],
            "datapath_actions": self.datapath_actions,
        }

    @property
    def detour(self) -> int | None:
        """Return the session whose detour took the frame, or None."""
        return next((r.session for r in self.rules if r.session is not None), None)


def ovs_flow(match: FlowMatch, in_port: int, macs: tuple[str, str] | None = None) -> str:
    """Return the `ofproto/trace` flow for a frame of `match` entering by `in_port`,
    from and to the MAC addresses `macs` (source, destination) unless the match names
    its own: the switches forward by them.

    Masked fields are given by their value: the frame traced is one of the flow's.
    """
    parts = [f"in_port={in_port}"]
    fields = dict(match.fields)
    if macs is not None:
        parts += [f"dl_src={macs[0]}"] if "eth_src" not in fields else []
        parts += [f"dl_dst={macs[1]}"] if "eth_dst" not in fields else []
    for name, value in match.fields:
        if isinstance(value, tuple):
            value = value[0]
        if name == "eth_type" or name == "ip_proto":
            value = f"{value:#x}" if name == "eth_type" else str(value)
        parts.append(f"{OVS_FIELDS[name]}={value}")
    return ",".join(parts)


def parse_trace(text: str, in_port: int) -> Pass:
    """Return the rules and datapath actions of an `ofproto/trace` answer `text`."""
    rules: list[Rule] = []
    actions: list[str] = []
    current: dict[str, Any] | None = None
    datapath = ""
    for line in text.splitlines():
        if line.startswith("Datapath actions:"):
            datapath = line.partition(":")[2].strip()
            continue
        if line.startswith(("Final flow:", "Megaflow:", "Flow:", "bridge(", "---")):
            continue
        rule, none = _RULE.match(line), _NO_MATCH.match(line)
        if rule or none:
            if current is not None:
                rules.append(Rule(**current, actions=tuple(actions)))
            actions = []
            if rule:
                cookie = rule.group("cookie")
                current = {
                    "table": int(rule.group("table")),
                    "match": rule.group("match") or "",
                    "priority": int(rule.group("priority")),
                    "cookie": int(cookie, 16) if cookie else None,
                }
            else:
                current = {"table": int(none.group("table")), "match": "no match"}  # type: ignore[union-attr]
                current |= {"priority": None, "cookie": None}
        elif current is not None and line.startswith("    ") and line.strip():
            actions.append(line.strip())
    if current is not None:
        rules.append(Rule(**current, actions=tuple(actions)))
    return Pass(in_port, tuple(rules), datapath)


def verdict(module: dict[str, Any]) -> str:
    """Return, in a word, what a module did to a session's frames so far, from the
    counts the agent recorded: forward, drop, some dropped, no frame, or quarantined."""
    if module.get("state") == "quarantined":
        return f"quarantined (failure {module.get('failure', 'open')})"
    frames, dropped = module.get("frames"), module.get("dropped")
    if frames is None or dropped is None:
        return "not counted by this agent"
    if frames == 0:
        return "no frame yet"
    if dropped == 0:
        return "forward"
    return "drop" if dropped == frames else f"dropped {dropped} of {frames}"


def chain_view(stats: dict[str, Any]) -> list[dict[str, object]]:
    """Return each module of a session's stats with its verdicts, in chain order."""
    out = []
    for module in stats.get("stats", {}).get("modules", []):
        out.append(
            {
                "name": module["name"],
                "frames": module.get("frames"),
                "dropped": module.get("dropped"),
                "errors": module.get("errors"),
                "state": module.get("state"),
                "failure": module.get("failure"),
                "verdict": verdict(module),
            }
        )
    return out


def trace_ends(match: FlowMatch) -> tuple[str, str]:
    """Return the (source, destination) hosts of a traced match; raise InvalidRequest
    unless it names both as single IPv4 addresses."""
    fields = dict(match.fields)
    ends = fields.get("ipv4_src"), fields.get("ipv4_dst")
    if not all(isinstance(e, str) for e in ends):
        raise InvalidRequest(
            "a trace needs the flow's ipv4_src and ipv4_dst, each one host's address "
            "(no mask): its path runs between them"
        )
    return ends  # type: ignore[return-value]


class Switches(Protocol):
    def bridge_of(self, port_names: Iterable[str]) -> str | None:
        """Return the local bridge holding one of these ports, or None."""

    def trace(self, bridge: str, flow: str) -> str:
        """Return `ofproto/trace`'s answer for `flow` on `bridge`; raise NetServError."""


class Tracer:
    """Traces flows through the network the service knows, with `switches` to ask OVS."""

    def __init__(self, service: Any, switches: Switches) -> None:
        self.service, self.switches = service, switches

    def trace(self, match: FlowMatch) -> dict[str, object]:
        """Return the way of a frame of `match` from its source host to its destination:
        each switch with its passes, the detour's session and modules (see the module's
        docstring). Raise InvalidRequest or Unavailable (a host not located, no path)."""
        src, dst = trace_ends(match)
        network = self.service.network
        hops = network.path(src, dst)
        found = {ip: host.mac for host in network.topology.hosts() for ip in host.ipv4}
        macs = (found[src], found[dst]) if src in found and dst in found else None
        out = []
        for hop in hops:
            switch = network.switches.get(hop.dpid)
            ports = list(switch.ports.values()) if switch else []
            entry: dict[str, object] = {
                "dpid": format_dpid(hop.dpid),
                "in_port": hop.in_port,
                "out_port": hop.out_port,
                "netserv": network.ready(hop.dpid),
            }
            bridge = self.switches.bridge_of(ports)
            if bridge is None:
                out.append(entry | {"traced": False})
                continue
            entry |= {"bridge": bridge, "traced": True}
            out.append(entry | self._switch(bridge, hop.dpid, hop.in_port, match, macs))
        return {"match": match.as_dict(), "src": src, "dst": dst, "hops": out}

    def _switch(
        self,
        bridge: str,
        dpid: int,
        in_port: int,
        match: FlowMatch,
        macs: tuple[str, str] | None,
    ) -> dict[str, Any]:
        """Return a switch's passes: the frame as it enters, and as it comes back from
        the node's agent when a session's detour took it there (the frame as it went,
        though a module may have rewritten it); and the detour."""
        first = parse_trace(self.switches.trace(bridge, ovs_flow(match, in_port, macs)), in_port)
        passes = [first]
        session = first.detour
        out: dict[str, Any] = {"passes": passes, "detour": None}
        agent_port = self.service.network.agent_port(dpid)
        if session is not None and agent_port is not None:
            back = self.switches.trace(bridge, ovs_flow(match, agent_port, macs))
            passes.append(parse_trace(back, agent_port))
            out["detour"] = self._detour(session)
        out["passes"] = [p.to_json() for p in passes]
        return out

    def _detour(self, session_id: int) -> dict[str, object]:
        """Return the session a detour serves, its agent and modules with their verdicts."""
        view: dict[str, object] = {"session": session_id}
        try:
            stats = self.service.stats(session_id)
        except NetServError as exc:  # the agent is down, the session just ended
            return view | {"modules": [], "unavailable": str(exc)}
        agent = self.service.network.agents.get(self.service.sessions.get(session_id).node)
        view |= {"state": stats.get("state"), "match": stats.get("match")}
        view["agent"] = agent.url if agent else None
        view["modules"] = chain_view(stats)
        return view


class OvsAppctl:
    """Asks the local Open vSwitch: which bridge holds a port, and `ofproto/trace`."""

    def bridge_of(self, port_names: Iterable[str]) -> str | None:
        """Return the bridge that holds the first of `port_names` this OVS knows, or None.

        By a port's name, not the datapath id: several bridges of one host may share
        a datapath id (one per test network), port names never.
        """
        for name in port_names:
            done = _run(["ovs-vsctl", "--timeout=3", "port-to-br", name])
            if done is not None and done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        return None

    def trace(self, bridge: str, flow: str) -> str:
        """Return `ofproto/trace`'s answer; raise NetServError when it fails."""
        done = _run(["ovs-appctl", "--timeout=5", "ofproto/trace", bridge, flow])
        if done is None or done.returncode != 0:
            why = "no answer" if done is None else done.stderr.strip().splitlines()[0]
            raise TraceFailed(f"ofproto/trace on {bridge} failed: {why}")
        return done.stdout


class TraceFailed(PartFailed):
    """Open vSwitch could not trace the flow."""

    code = "trace_failed"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=TRACE_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
