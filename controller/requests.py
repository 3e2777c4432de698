"""Session requests, whichever transport carried them: a REST body or a signaling
`Description` in, a frozen SessionRequest out, or InvalidRequest.

This is the one gate every transport passes through, so a bad request is refused
before any state, agent or switch is touched; the session logic sees only
SessionRequests (`controller/service.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentproto.limits import MAX_CHAIN, MAX_LIFETIME
from agentproto.messages import ModuleSpec as ModuleSpec  # the agents' own, found here too
from controller.errors import InvalidRequest
from controller.match import ETH_IPV4, ETH_IPV6, PROTO_TCP, PROTO_UDP, FlowMatch, parse_match
from controller.modules import ModuleSource, as_source
from nodes.bundle import BundleError, Catalog, check_version
from signaling import dpid
from signaling.dpid import format_dpid as format_dpid  # where the rest of controller/ finds it
from signaling.errors import SignalingUsageError
from signaling.values import Description, FlowFilter, Network, NodeSelection, PortRange

DEFAULT_LIFETIME = 60
OPERATOR = "operator"  # the requester of REST calls: whoever holds the operator's access
SELECTIONS = {
    "first": NodeSelection.first,
    "last": NodeSelection.last,
    "every": NodeSelection.every,
}


@dataclass(frozen=True)
class SessionRequest:
    """A request for a service on a flow, transport-neutral.

    `selection`: which NetServ nodes on the flow's path serve it (first, last, every,
    or named ones); `ends`: the flow's source and destination hosts, on whose path the
    nodes are chosen (None when the request does not tell them).
    """

    match: FlowMatch
    modules: tuple[ModuleSpec, ...]
    lifetime: int
    requester: str = OPERATOR
    selection: NodeSelection = field(default_factory=NodeSelection.first)
    ends: tuple[str, str] | None = None


def parse_dpid(raw: object) -> int:
    """Return a datapath id from an int or up to 16 hex digits; raise InvalidRequest."""
    try:
        return dpid.parse_dpid(raw)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def parse_lifetime(raw: object, default: int | None = DEFAULT_LIFETIME) -> int:
    """Return a lifetime in whole seconds (1..MAX_LIFETIME); raise InvalidRequest."""
    if raw is None and default is not None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidRequest(f"lifetime must be a whole number of seconds, got {raw!r}")
    if not 1 <= raw <= MAX_LIFETIME:
        raise InvalidRequest(f"lifetime must be between 1 and {MAX_LIFETIME} seconds, got {raw}")
    return raw


def resolve_chain(
    items: Iterable[tuple[str, Mapping[str, object]]], modules: Catalog | ModuleSource
) -> tuple[ModuleSpec, ...]:
    """Return the chain of (name, params) items, each the module its name gets
    (`controller/modules.py`) with its full parameter set; raise InvalidRequest."""
    source = as_source(modules)
    specs = tuple(_module({"name": name, "params": params}, source) for name, params in items)
    if not 1 <= len(specs) <= MAX_CHAIN:
        raise InvalidRequest(f"a chain has 1 to {MAX_CHAIN} modules")
    return specs


def _modules(body: Mapping[str, object], modules: Catalog | ModuleSource) -> tuple[ModuleSpec, ...]:
    if "module" in body and "modules" in body:
        raise InvalidRequest("give either 'module' (with 'params') or 'modules', not both")
    if "module" in body:
        one = {"name": body["module"], "params": body.get("params", {})}
        if "version" in body:
            one["version"] = body["version"]
        items: object = [one]
    elif "params" in body or "version" in body:
        raise InvalidRequest(
            "'params' and 'version' go with 'module'; in 'modules' each entry has its own"
        )
    else:
        items = body.get("modules")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("a session needs 'module' (a name) or 'modules' (a non-empty list)")
    if len(items) > MAX_CHAIN:
        raise InvalidRequest(f"a chain has at most {MAX_CHAIN} modules")
    source = as_source(modules)
    return tuple(_module(item, source) for item in items)


def _module(item: object, source: ModuleSource) -> ModuleSpec:
    """Return the ModuleSpec one entry of a chain asks for; raise InvalidRequest."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping) or set(item) - {"name", "params", "version"}:
        raise InvalidRequest("each module is a name or an object {name, params, version}")
    name, params, version = item.get("name"), item.get("params", {}), item.get("version")
    if not isinstance(name, str):
        raise InvalidRequest(f"a module is named by a string, got {name!r}")
    if not isinstance(params, Mapping):
        raise InvalidRequest(f"params of module {name!r} must be a JSON object")
    try:
        if version is not None:
            check_version(version, f"the version of module {name!r}")
        found = source.resolve(name, version)
        resolved = found.manifest.resolve_params(params)
    except BundleError as exc:
        raise InvalidRequest(str(exc)) from None
    manifest = found.manifest
    return ModuleSpec(
        manifest.name, tuple(sorted(resolved.items())), manifest.version, found.sha256
    )


def parse_selection(body: Mapping[str, object]) -> NodeSelection:
    """Return the node selection of a REST body: "node" (one datapath id) or "nodes"
    ("first", "last", "every", or a list of datapath ids); first when neither is given."""
    if body.get("node") is not None and body.get("nodes") is not None:
        raise InvalidRequest("give either 'node' (one datapath id) or 'nodes', not both")
    if body.get("node") is not None:
        return NodeSelection.named(parse_dpid(body["node"]))
    raw = body.get("nodes")
    if raw is None:
        return NodeSelection.first()
    if isinstance(raw, str) and raw in SELECTIONS:
        return SELECTIONS[raw]()
    if isinstance(raw, list) and raw:
        try:
            return NodeSelection.named(*(parse_dpid(item) for item in raw))
        except SignalingUsageError as exc:
            raise InvalidRequest(f"'nodes': {exc}") from None
    raise InvalidRequest(
        f"'nodes' is 'first', 'last', 'every' or a non-empty list of datapath ids, not {raw!r}"
    )


def match_ends(match: FlowMatch) -> tuple[str, str] | None:
    """Return the (source, destination) hosts a match names exactly, or None."""
    fields = dict(match.fields)
    for version in ("ipv4", "ipv6"):
        src, dst = fields.get(f"{version}_src"), fields.get(f"{version}_dst")
        if isinstance(src, str) and isinstance(dst, str):
            return src, dst
    return None


def parse_session_request(
    body: object, catalog: Catalog | ModuleSource, requester: str = OPERATOR
) -> SessionRequest:
    """Return the SessionRequest a JSON body of `requester` asks for; raise InvalidRequest
    saying why not, or UntrustedBundle when a module's bundle is one the policy does not
    let in."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    known = {"match", "module", "modules", "params", "version", "lifetime", "node", "nodes"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: {sorted(known)}")
    if "match" not in body:
        raise InvalidRequest("'match' is required: the flow the service applies to")
    match = parse_match(body["match"])
    return SessionRequest(
        match=match,
        modules=_modules(body, catalog),
        lifetime=parse_lifetime(body.get("lifetime")),
        requester=requester,
        selection=parse_selection(body),
        ends=match_ends(match),
    )


def parse_refresh(body: object) -> int | None:
    """Return the lifetime a refresh body asks for (None when it names none)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - {"lifetime"})
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: ['lifetime']")
    if body.get("lifetime") is None:
        return None
    return parse_lifetime(body["lifetime"])


def parse_upgrade(body: object) -> tuple[str | None, str | None]:
    """Return the module an upgrade body names and the version it asks for (None for
    either when it names none: the chain's only module, the newest version)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - {"module", "version"})
    if unknown:
        raise InvalidRequest(f"unknown key(s) {unknown}; known: ['module', 'version']")
    module, version = body.get("module"), body.get("version")
    if module is not None and not isinstance(module, str):
        raise InvalidRequest(f"a module is named by a string, got {module!r}")
    if version is not None:
        try:
            check_version(version, "the version to upgrade to")
        except BundleError as exc:
            raise InvalidRequest(str(exc)) from None
    return module, version


def resolve_module(
    name: str, params: Mapping[str, object], version: str | None, modules: Catalog | ModuleSource
) -> ModuleSpec:
    """Return the module `name` at `version` (None: the one a request for the name gets)
    with `params` resolved against its manifest; raise InvalidRequest."""
    item: dict[str, object] = {"name": name, "params": params}
    if version is not None:
        item["version"] = version
    return _module(item, as_source(modules))


# --- signaling ---------------------------------------------------------------------
_PORT_FIELDS = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}
_ANY_PORT = PortRange(0, 0xFFFF)


def _port(flow: FlowFilter, side: str, ports: PortRange | None) -> tuple[str, int] | None:
    """Return the OXM field and value matching `ports` exactly, None for any port."""
    if ports is None or ports == _ANY_PORT:
        return None
    proto = _PORT_FIELDS.get(flow.protocol or 0)
    if proto is None:
        raise InvalidRequest(f"ports of IP protocol {flow.protocol} cannot be matched here")
    if ports.low != ports.high:
        raise InvalidRequest(
            f"{side} ports {ports.low}-{ports.high}: OpenFlow matches one port (or any), "
            "not a range"
        )
    return f"{proto}_{side}", ports.low


def flow_match(flow: FlowFilter) -> FlowMatch:
    """Return the OpenFlow match of a signaling flow filter; raise InvalidRequest for
    what OpenFlow cannot match exactly (port ranges, ports of other protocols)."""
    version = "ipv4" if flow.family == 4 else "ipv6"
    fields: dict[str, object] = {"eth_type": ETH_IPV4 if flow.family == 4 else ETH_IPV6}
    for side, net in (("src", flow.src), ("dst", flow.dst)):
        if net is not None and net.prefixlen:
            fields[f"{version}_{side}"] = str(net)
    if flow.protocol is not None:
        fields["ip_proto"] = flow.protocol
    for side, ports in (("src", flow.src_ports), ("dst", flow.dst_ports)):
        found = _port(flow, side, ports)
        if found is not None:
            fields[found[0]] = found[1]
    return parse_match(fields)


def _host(net: Network | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return net.network_address if net is not None and net.num_addresses == 1 else None


def flow_ends(flow: FlowFilter, sender: tuple[str, str] | None) -> tuple[str, str] | None:
    """Return the (source, destination) hosts of the flow's path, or None.

    An end the filter gives as one host is that host. An end it leaves open (a prefix,
    a wildcard) is taken from `sender`, the (source, destination) of the signaling
    datagram, which went between the requester and the flow's far endpoint: the
    address of the two that lies in the open end and is not the other end.
    """
    src, dst = _host(flow.src), _host(flow.dst)
    if sender is not None:
        sent_from, sent_to = (ipaddress.ip_address(a) for a in sender)
        if src is None:
            found = (a for a in (sent_from, sent_to) if _within(a, flow, flow.src) and a != dst)
            src = next(found, None)
        if dst is None:
            found = (a for a in (sent_to, sent_from) if _within(a, flow, flow.dst) and a != src)
            dst = next(found, None)
    if src is None or dst is None:
        return None
    return str(src), str(dst)


def _within(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, flow: FlowFilter, net: Network | None
) -> bool:
    return addr.version == flow.family and (net is None or addr in net)


def request_from_description(
    description: Description,
    catalog: Catalog | ModuleSource,
    sender: tuple[str, str] | None = None,
) -> SessionRequest:
    """Return the SessionRequest a signaling description asks for (`sender`: the
    signaling datagram's source and destination addresses); raise InvalidRequest."""
    return SessionRequest(
        match=flow_match(description.flow),
        modules=resolve_chain(((m.name, dict(m.params)) for m in description.chain), catalog),
        lifetime=parse_lifetime(description.lifetime),
        requester=description.requester,
        selection=description.nodes,
        ends=flow_ends(description.flow, sender),
    )
