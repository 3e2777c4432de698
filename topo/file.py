"""Topology files: a network described in YAML, read into a frozen `Spec`, made a Mininet
`Topo` by `FileTopo`. Pure: reads text, starts nothing (docs/topologies.md has the format).

Every problem is a `TopologyFileError` naming the file, the line and what is wrong; a
file with one is refused whole, so nothing is built from it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mininet.topo import Topo
from mininet.util import macColonHex

from topo.topos import (
    AGENT_IFACE_SUFFIX,
    AGENT_PORT_SUFFIX,
    check_ifname,
    dpid_str,
    switch_intf_name,
)

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DELAY_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s)")
MAX_BW_MBIT = 1000  # Mininet's TCIntf refuses more
_TOP = {"prefix", "module_path", "switches", "hosts", "links", "requesters"}
_SWITCH = {"dpid", "netserv"}
_NODE = {"module_path", "trusted", "grant", "hang_after", "kill_hung_after", "max_frame_age"}
_HOST = {"ip", "mac"}
_LINK = {"ends", "bw", "delay"}


class TopologyFileError(ValueError):
    """A topology file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class NodeSpec:
    """What a NetServ node's agent is started with (beyond what every agent gets)."""

    module_path: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SwitchSpec:
    name: str
    dpid: int
    node: NodeSpec | None  # None: a plain OpenFlow switch


@dataclass(frozen=True)
class HostSpec:
    name: str
    ip: str  # with its prefix length, e.g. 10.0.0.1/8
    mac: str


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    bw: float | None = None  # Mbit/s
    delay: str | None = None  # as tc takes it, e.g. "5ms"
    line: int = 0

    @property
    def shaped(self) -> bool:
        """Return True when the link asks for bandwidth or delay (a traffic-control link)."""
        return self.bw is not None or self.delay is not None


@dataclass(frozen=True)
class Spec:
    """A topology file, checked: names are unique, links join known nodes."""

    path: Path
    switches: tuple[SwitchSpec, ...]
    hosts: tuple[HostSpec, ...]
    links: tuple[LinkSpec, ...]
    module_path: tuple[str, ...] = ()
    requesters: dict = field(default_factory=dict)  # as [requesters.*] in a policy file
    prefix: str = ""

    def netserv(self) -> list[SwitchSpec]:
        """Return the switches that are NetServ nodes, in file order."""
        return [s for s in self.switches if s.node is not None]

    def wires(self) -> list[LinkSpec]:
        """Return the links between two switches."""
        names = {s.name for s in self.switches}
        return [k for k in self.links if k.a in names and k.b in names]

    def all_module_folders(self) -> tuple[str, ...]:
        """Return the file's module folders, then every node's, each once: the
        controller's search path, so it knows every module any node can load."""
        out: list[str] = []
        for folder in self.module_path + tuple(
            f for s in self.netserv() for f in s.node.module_path
        ):
            if folder not in out:
                out.append(folder)
        return tuple(out)


def load(path: str | Path, prefix: str | None = None) -> Spec:
    """Return the Spec in the YAML file `path`; `prefix` (letters, digits, '_') replaces
    the file's own in front of every name. Raise TopologyFileError saying where and why."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyFileError(f"{path}: cannot read it: {exc}") from None
    return parse(text, path, prefix)


def parse(text: str, path: Path, prefix: str | None = None) -> Spec:
    """Return the Spec in `text` (read from `path`, which relative folders are taken
    against); see `load`."""
    return _Reader(text, path).spec(prefix)


class _Reader:
    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.loader = yaml.SafeLoader(text)

    def fail(self, node: yaml.Node | None, problem: str) -> TopologyFileError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return TopologyFileError(f"{self.path}{line}: {problem}")

    def value(self, node: yaml.Node) -> object:
        return self.loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, what: str, keys: set[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines)")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{what}: a key must be a name, not {key!r}")
            if key in out:
                raise self.fail(key_node, f"{what}: {key!r} is given twice")
            if keys and key not in keys:
                raise self.fail(
                    key_node, f"{what}: unknown key {key!r} (known: {', '.join(sorted(keys))})"
                )
            out[key] = value_node
        return out

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, f"{what} must be a non-empty string, not {value!r}")
        return value

    def number(self, node: yaml.Node, what: str, low: float, high: float) -> float:
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(node, f"{what} must be a number, not {value!r}")
        if not low <= value <= high:
            raise self.fail(node, f"{what} must be {low:g} to {high:g}, not {value:g}")
        return float(value)

    def strings(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return tuple(self.string(item, f"an entry of {what}") for item in node.value)

    def folders(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        out = []
        for item, folder in zip(node.value, self.strings(node, what), strict=True):
            full = (self.path.parent / folder).resolve()
            if not full.is_dir():
                raise self.fail(item, f"{what}: {full} is not a folder")
            out.append(str(full))
        return tuple(out)

    def spec(self, prefix: str | None) -> Spec:
        try:
            root = self.loader.get_single_node()
            if root is None:
                raise self.fail(None, "the file is empty")
            top = self.mapping(root, "the file", _TOP)
            if prefix is None:
                prefix = self.string(top["prefix"], "prefix") if "prefix" in top else ""
            if not re.fullmatch(r"[A-Za-z0-9_]*", prefix):
                raise self.fail(top.get("prefix"), f"prefix {prefix!r}: letters, digits, _ only")
            module_path = (
                self.folders(top["module_path"], "module_path") if "module_path" in top else ()
            )
            for needed in ("switches", "links"):
                if needed not in top:
                    raise self.fail(root, f"the file has no {needed!r}")
            switches = self.switches(top["switches"], prefix)
            hosts = self.hosts(top.get("hosts"), prefix, switches)
            links = self.links(top["links"], prefix, switches, hosts)
            requesters = self.requesters(top["requesters"]) if "requesters" in top else {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TopologyFileError(f"{self.path}{where}: not valid YAML: {problem}") from None
        finally:
            self.loader.dispose()
        return Spec(self.path, switches, hosts, links, module_path, requesters, prefix)

    def name(self, node: yaml.Node, prefix: str, what: str) -> str:
        name = self.value(node)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise self.fail(node, f"{what} name {name!r}: a letter, then letters, digits, _")
        try:
            return check_ifname(prefix + name)
        except ValueError as exc:
            raise self.fail(node, str(exc)) from None

    def switches(self, node: yaml.Node, prefix: str) -> tuple[SwitchSpec, ...]:
        self.mapping(node, "switches", set())  # a mapping, each name once
        if not node.value:
            raise self.fail(node, "switches: at least one is needed")
        out: list[SwitchSpec] = []
        dpids: dict[int, str] = {}
        for index, (key_node, body) in enumerate(node.value, start=1):
            name = self.name(key_node, prefix, "switch")
            key = name.removeprefix(prefix)
            opts = {} if _null(body) else self.mapping(body, f"switch {key}", _SWITCH)
            dpid = index
            if "dpid" in opts:
                dpid = int(self.number(opts["dpid"], f"switch {key}: dpid", 1, 2**48 - 1))
            if dpid in dpids:
                raise self.fail(key_node, f"switch {key}: dpid {dpid} is {dpids[dpid]}'s too")
            dpids[dpid] = key
            node_spec = self.node(opts["netserv"], key) if "netserv" in opts else None
            if node_spec is not None:
                for suffix in (AGENT_PORT_SUFFIX, AGENT_IFACE_SUFFIX):
                    try:
                        check_ifname(name + suffix)
                    except ValueError as exc:
                        raise self.fail(key_node, str(exc)) from None
            out.append(SwitchSpec(name, dpid, node_spec))
        return tuple(out)

    def node(self, body: yaml.Node, switch: str) -> NodeSpec | None:
        value = self.value(body) if isinstance(body, yaml.ScalarNode) else None
        if isinstance(body, yaml.ScalarNode):
            if not isinstance(value, bool):
                raise self.fail(body, f"switch {switch}: netserv is true, false or a mapping")
            return NodeSpec() if value else None
        opts = self.mapping(body, f"switch {switch}: netserv", _NODE)
        folders = self.folders(opts["module_path"], "module_path") if "module_path" in opts else ()
        args: list[str] = []
        for key in ("trusted", "grant"):
            if key in opts:
                for item in self.strings(opts[key], f"switch {switch}: {key}"):
                    args += [f"--{key}", item]
        for key in ("hang_after", "kill_hung_after", "max_frame_age"):
            if key in opts:
                seconds = self.number(opts[key], f"switch {switch}: {key}", 0.01, 3600)
                args += [f"--{key.replace('_', '-')}", f"{seconds:g}"]
        return NodeSpec(folders, tuple(args))

    def hosts(
        self, node: yaml.Node | None, prefix: str, switches: tuple[SwitchSpec, ...]
    ) -> tuple[HostSpec, ...]:
        if node is None or _null(node):
            return ()
        self.mapping(node, "hosts", set())  # a mapping, each name once
        taken = {s.name for s in switches}
        out: list[HostSpec] = []
        seen_ips: dict[str, str] = {}
        for index, (key_node, body) in enumerate(node.value, start=1):
            name = self.name(key_node, prefix, "host")
            key = name.removeprefix(prefix)
            if name in taken:
                raise self.fail(key_node, f"host {key}: a switch has that name")
            try:
                check_ifname(f"{name}-eth0")
            except ValueError as exc:
                raise self.fail(key_node, str(exc)) from None
            opts = self.mapping(body, f"host {key}", _HOST) if not _null(body) else {}
            if "ip" not in opts:
                raise self.fail(key_node, f"host {key}: no ip (e.g. ip: 10.0.0.{index}/8)")
            raw = self.string(opts["ip"], f"host {key}: ip")
            try:
                iface = ipaddress.IPv4Interface(raw)
            except ValueError:
                raise self.fail(
                    opts["ip"], f"host {key}: {raw!r} is not an IPv4 address/prefix"
                ) from None
            if "/" not in raw:
                raise self.fail(opts["ip"], f"host {key}: give the prefix length, e.g. {raw}/8")
            address = str(iface.ip)
            if address in seen_ips:
                raise self.fail(opts["ip"], f"host {key}: {address} is {seen_ips[address]}'s too")
            seen_ips[address] = key
            mac = macColonHex(index)
            if "mac" in opts:
                mac = self.string(opts["mac"], f"host {key}: mac").lower()
                if not MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1:
                    raise self.fail(opts["mac"], f"host {key}: {mac!r} is not a unicast MAC")
            out.append(HostSpec(name, str(iface), mac))
        return tuple(out)

    def links(
        self,
        node: yaml.Node,
        prefix: str,
        switches: tuple[SwitchSpec, ...],
        hosts: tuple[HostSpec, ...],
    ) -> tuple[LinkSpec, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "links must be a list, e.g. - [h1, s1]")
        switch_names = {s.name for s in switches}
        host_names = {h.name for h in hosts}
        linked_hosts: dict[str, int] = {}
        ports: dict[str, int] = {}
        out: list[LinkSpec] = []
        for item in node.value:
            line = item.start_mark.line + 1
            opts: dict[str, yaml.Node] = {}
            ends_node = item
            if isinstance(item, yaml.MappingNode):
                opts = self.mapping(item, "a link", _LINK)
                if "ends" not in opts:
                    raise self.fail(item, "a link needs its ends: ends: [a, b]")
                ends_node = opts["ends"]
            ends = self.strings(ends_node, "a link's ends")
            if len(ends) != 2:
                raise self.fail(ends_node, f"a link has two ends, not {len(ends)}")
            a, b = (prefix + end for end in ends)
            for end, raw in zip((a, b), ends, strict=True):
                if end not in switch_names and end not in host_names:
                    raise self.fail(ends_node, f"a link's end {raw!r} is no switch or host")
            if a == b:
                raise self.fail(ends_node, f"a link joins {ends[0]!r} to itself")
            if a in host_names and b in host_names:
                raise self.fail(ends_node, "a link joins two hosts: put a switch between")
            for end, raw in zip((a, b), ends, strict=True):
                if end in host_names:
                    if end in linked_hosts:
                        raise self.fail(
                            ends_node,
                            f"host {raw!r} is linked already (line {linked_hosts[end]}): a "
                            "host has one interface",
                        )
                    linked_hosts[end] = line
                else:
                    ports[end] = ports.get(end, 0) + 1
                    try:
                        check_ifname(switch_intf_name(end, ports[end]))
                    except ValueError as exc:
                        raise self.fail(ends_node, str(exc)) from None
            bw = (
                self.number(opts["bw"], "a link's bw (Mbit/s)", 0.001, MAX_BW_MBIT)
                if "bw" in opts
                else None
            )
            delay = None
            if "delay" in opts:
                delay = self.string(opts["delay"], "a link's delay")
                if not DELAY_RE.fullmatch(delay):
                    raise self.fail(opts["delay"], f"a link's delay {delay!r}: e.g. 5ms, 200us, 1s")
            out.append(LinkSpec(a, b, bw, delay, line))
        unlinked = sorted(host_names - set(linked_hosts))
        if unlinked:
            raise self.fail(node, f"hosts with no link: {', '.join(unlinked)}")
        return tuple(out)

    def requesters(self, node: yaml.Node) -> dict:
        entries = self.mapping(node, "requesters", set())
        out = {}
        for key, body in entries.items():
            value = self.value(body)
            if not isinstance(value, dict):
                raise self.fail(body, f"requester {key}: its rights must be a mapping")
            out[key] = _absolute_files(value, self.path.parent)
        return out


def _null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _absolute_files(value: object, base: Path) -> object:
    """Return `value` with every "file:PATH" made absolute against `base`: the policy is
    written elsewhere, but the file's paths mean what they say beside it."""
    if isinstance(value, str) and value.startswith("file:"):
        return "file:" + str((base / value.removeprefix("file:")).resolve())
    if isinstance(value, dict):
        return {k: _absolute_files(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute_files(v, base) for v in value]
    return value


class FileTopo(Topo):
    """The Mininet topology of a `Spec`: its hosts, switches (NetServ nodes marked, with
    their module path and agent options) and links (shaped ones with bw and delay)."""

    def build(self, spec: Spec) -> None:
        for s in spec.switches:
            params: dict[str, object] = {"dpid": dpid_str(s.dpid), "netserv": s.node is not None}
            if s.node is not None and s.node.module_path:
                params["module_path"] = list(spec.module_path + s.node.module_path)
            if s.node is not None and s.node.agent_args:
                params["agent_args"] = list(s.node.agent_args)
            self.addSwitch(s.name, **params)
        for h in spec.hosts:
            self.addHost(h.name, ip=h.ip, mac=h.mac)
        ports: dict[str, int] = {}
        for k in spec.links:
            opts: dict[str, object] = {}
            names = []
            for end in (k.a, k.b):
                if end in self.hosts():
                    opts["port1" if not names else "port2"] = 0
                    names.append(f"{end}-eth0")
                else:
                    ports[end] = ports.get(end, 0) + 1
                    opts["port1" if not names else "port2"] = ports[end]
                    names.append(switch_intf_name(end, ports[end]))
            if k.bw is not None:
                opts["bw"] = k.bw
            if k.delay is not None:
                opts["delay"] = k.delay
            self.addLink(k.a, k.b, intfName1=names[0], intfName2=names[1], **opts)


def policy_toml(requesters: dict) -> str:
    """Return the policy file (TOML, docs/policy.md) that gives these requesters their
    rights: each as a [requesters."ID"] table of the values it was given."""
    lines = []
    for rid, rights in requesters.items():
        lines.append(f"[requesters.{_toml(str(rid))}]")
        for key, value in rights.items():
            lines.append(f"{_toml_key(key)} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_key(key: object) -> str:
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else _toml(text)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TopologyFileError(f"a requester's value {value!r} has no TOML form")


def shaping_problems(spec: Spec, kinds: set[str]) -> list[str]:
    """Return, for each shaped link that asks for what this machine cannot do, why: `kinds`
    are the tc qdiscs that work here (`htb` carries bandwidth, `netem` delay)."""
    problems = []
    for k in spec.links:
        if k.bw is not None and "htb" not in kinds:
            problems.append(
                f"{spec.path}:{k.line}: link {k.a}-{k.b} asks for bw {k.bw:g} Mbit/s, but this "
                "machine's kernel has no htb queueing discipline (sch_htb)"
            )
        if k.delay is not None and "netem" not in kinds:
            problems.append(
                f"{spec.path}:{k.line}: link {k.a}-{k.b} asks for delay {k.delay}, but this "
                "machine's kernel has no netem queueing discipline (sch_netem): remove the "
                "delay or run on a kernel with it"
            )
    return problems
